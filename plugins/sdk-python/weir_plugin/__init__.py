"""The guest SDK for Weir plugins written in Python.

It owns the glue to the bindings that componentize-py generates from wit/ at build time, the
batch loop and the per-record error isolation, so that a plugin is one small file: a subclass of
`Plugin` and one `WitWorld = export(MyPlugin)` line (componentize-py looks for `WitWorld`).

    from weir_plugin import Plugin, export, str_at

    class Upper(Plugin):
        def transform(self, record):
            doc = record.json()
            doc["name"] = str_at(doc, "/name").upper()
            return [record.with_json(doc)]

    WitWorld = export(Upper)
"""

from .config import Config, ConfigError
from .errors import BadRecord, PluginFailure
from .jsonpath import at, field_name, pointer, slot, str_at, text_at
from .plugin import Plugin, export
from .record import Record
from .host import counter, log

__all__ = [
    "BadRecord",
    "Config",
    "ConfigError",
    "Plugin",
    "PluginFailure",
    "Record",
    "at",
    "counter",
    "export",
    "field_name",
    "log",
    "pointer",
    "slot",
    "str_at",
    "text_at",
]
