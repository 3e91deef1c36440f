"""The batch loop and the export glue between componentize-py's generated `WitWorld` protocol
and a `Plugin`: one instance per component instance, one result per input record, and every
exception caught per record so one bad record never fails its batch."""

from .config import Config
from .errors import BadRecord, PluginFailure
from .host import host_text as text
from .record import Record


class Plugin:
    """A record transformer. One object is built per plugin instance; `init` receives the
    pipeline's config, then `transform` is called for every record that instance sees."""

    def init(self, config):
        """Checks and keeps the config (a `Config`, a dict). Raise `ConfigError` naming the key
        when it is unusable. By default any config key is refused."""
        config.deny_unknown([])

    def transform(self, record):
        """Transforms one record into a list of zero, one or many records. Raise `BadRecord` for
        malformed input; any other exception fails this record alone as a plugin failure."""
        raise NotImplementedError("a Plugin must define transform(self, record)")


_instance = None

_S64_MIN = -(1 << 63)
_S64_END = 1 << 63


def _failure_message(error):
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _bytes(value, what):
    # The bytes the WIT `list<u8>` takes: bytes, or a bytearray or memoryview copied to bytes.
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, got {type(value).__name__}")


def _name(value, what):
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} `{text(value)}` holds a lone surrogate") from None
    return value


def _checked(out):
    """The parts of an output `Record` as the WIT `record` holds them: checked here, inside the
    per-record isolation, so that a wrong type fails its record alone instead of trapping the
    instance when the bindings lower it. The same types as the Rust SDK's `Record`: `key` bytes
    or None (encode a str), `value` bytes (a str is encoded as UTF-8, as the constructor does),
    headers (str, bytes) pairs, `timestamp` an int in the signed 64-bit range, or None."""
    if isinstance(out.key, str):
        raise TypeError("Record.key must be bytes or None, got str: encode it (key.encode())")
    key = None if out.key is None else _bytes(out.key, "Record.key")
    value = out.value.encode() if isinstance(out.value, str) else _bytes(out.value, "Record.value")
    headers = []
    for header in out.headers:
        if not isinstance(header, (tuple, list)) or len(header) != 2:
            raise TypeError(f"a header must be a (name, bytes) pair, got {header!r:.80}")
        name = _name(header[0], "a header name")
        headers.append((name, _bytes(header[1], f"header `{name}`'s value")))
    timestamp = out.timestamp
    if timestamp is not None:
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise TypeError(
                "Record.timestamp must be an int (milliseconds) or None, "
                f"got {type(timestamp).__name__}"
            )
        if not _S64_MIN <= timestamp < _S64_END:
            raise ValueError(f"Record.timestamp {timestamp} is beyond the signed 64-bit range")
    return key, value, headers, timestamp


def export(plugin_class):
    """The `WitWorld` class componentize-py exports for `plugin_class`; assign it to `WitWorld`
    at the top level of the plugin's module."""
    from componentize_py_types import Err, Ok
    from wit_world.imports import types

    bad_record = types.ErrorKind.BAD_RECORD
    plugin_failure = types.ErrorKind.PLUGIN_FAILURE
    wit_record = types.Record
    wit_header = types.Header
    wit_error = types.Error

    def outputs(produced):
        if not isinstance(produced, (list, tuple)):
            raise TypeError(
                f"transform must return a list of Records, got {type(produced).__name__}"
            )
        converted = []
        for out in produced:
            if not isinstance(out, Record):
                raise TypeError(f"transform must return Records, got {type(out).__name__}")
            key, value, headers, timestamp = _checked(out)
            converted.append(
                wit_record(
                    key,
                    value,
                    [wit_header(name, header_value) for name, header_value in headers],
                    timestamp,
                )
            )
        return converted

    class WitWorld:
        def init(self, config):
            global _instance
            try:
                plugin = plugin_class()
                plugin.init(Config.parse(config))
            except Exception as error:  # noqa: BLE001 - every failure rejects the config
                raise Err(text(str(error) or type(error).__name__)) from None
            _instance = plugin

        def transform(self, batch):
            plugin = _instance
            if plugin is None:
                error = Err(wit_error(plugin_failure, "transform called before init"))
                return [error for _ in batch]
            results = []
            for record in batch:
                try:
                    produced = plugin.transform(
                        Record(
                            record.value,
                            record.key,
                            [(h.key, h.value) for h in record.headers],
                            record.timestamp,
                        )
                    )
                    results.append(Ok(outputs(produced)))
                except BadRecord as error:
                    results.append(Err(wit_error(bad_record, text(error))))
                except PluginFailure as error:
                    results.append(Err(wit_error(plugin_failure, text(error))))
                except Exception as error:  # noqa: BLE001 - isolation is the point
                    results.append(Err(wit_error(plugin_failure, text(_failure_message(error)))))
            return results

    return WitWorld
