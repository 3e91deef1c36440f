"""The batch loop and the export glue between componentize-py's generated `WitWorld` protocol
and a `Plugin`: one instance per component instance, one result per input record, and every
exception caught per record so one bad record never fails its batch."""

from .config import Config
from .errors import BadRecord, PluginFailure
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


def _failure_message(error):
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


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
            converted.append(
                wit_record(
                    out.key,
                    out.value,
                    [wit_header(name, value) for name, value in out.headers],
                    out.timestamp,
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
                raise Err(str(error) or type(error).__name__) from None
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
                    results.append(Err(wit_error(bad_record, str(error))))
                except PluginFailure as error:
                    results.append(Err(wit_error(plugin_failure, str(error))))
                except Exception as error:  # noqa: BLE001 - isolation is the point
                    results.append(Err(wit_error(plugin_failure, _failure_message(error))))
            return results

    return WitWorld
