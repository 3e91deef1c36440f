"""Test plugin: `raise` raises an unexpected exception, `loop` never returns, anything else is
echoed; for the tests of error isolation and deadlines in Python plugins."""

from weir_plugin import Plugin, export


class Fault(Plugin):
    def transform(self, record):
        if record.value == b"raise":
            raise ValueError("boom: the plugin did not expect this")
        if record.value == b"loop":
            while True:
                pass
        return [record]


WitWorld = export(Fault)
