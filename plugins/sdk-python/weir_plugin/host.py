"""Logging and metric counters through the host: the only way a plugin reports what it does
(it has no files, sockets or environment)."""

_LEVELS = ("trace", "debug", "info", "warn", "error")
_U64_END = 1 << 64


def host_text(message):
    """`message` as text the host can take: a lone surrogate (which UTF-8 cannot hold) is written
    as its escape, `\\ud800`, where the bindings would trap on it."""
    message = str(message)
    try:
        message.encode()
    except UnicodeEncodeError:
        message = message.encode("utf-8", "backslashreplace").decode()
    return message


def log(level, message):
    """Writes a line to the host's log, tagged with this plugin's name and version. `level` is
    one of "trace", "debug", "info", "warn", "error"."""
    if level not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, got {level!r}")
    from wit_world.imports import host

    host.log(host.Level[level.upper()], host_text(message))


def counter(name, delta=1):
    """Adds `delta` (a non-negative integer below 2**64) to this plugin's counter `name`; a
    ValueError otherwise."""
    if isinstance(delta, bool) or not isinstance(delta, int) or not 0 <= delta < _U64_END:
        raise ValueError(
            f"counter `{host_text(name)}`: delta must be an int from 0 to 2**64-1, got {delta!r}"
        )
    from wit_world.imports import host

    host.counter_add(host_text(name), delta)
