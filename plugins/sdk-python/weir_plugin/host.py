"""Logging and metric counters through the host: the only way a plugin reports what it does
(it has no files, sockets or environment)."""

_LEVELS = ("trace", "debug", "info", "warn", "error")


def log(level, message):
    """Writes a line to the host's log, tagged with this plugin's name and version. `level` is
    one of "trace", "debug", "info", "warn", "error"."""
    if level not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, got {level!r}")
    from wit_world.imports import host

    host.log(host.Level[level.upper()], str(message))


def counter(name, delta=1):
    """Adds `delta` (a non-negative integer) to this plugin's counter `name`."""
    from wit_world.imports import host

    host.counter_add(str(name), int(delta))
