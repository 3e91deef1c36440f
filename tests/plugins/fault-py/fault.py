"""Test plugin: `raise` raises an unexpected exception, `loop` never returns, `str-key`,
`float-timestamp`, `text-header` and `negative-counter` give outputs (or a counter) of a type the
contract cannot hold, anything else is echoed; for the tests of error isolation and deadlines in
Python plugins."""

from weir_plugin import Plugin, Record, counter, export


class Fault(Plugin):
    def transform(self, record):
        if record.value == b"raise":
            raise ValueError("boom: the plugin did not expect this")
        if record.value == b"loop":
            while True:
                pass
        if record.value == b"str-key":
            return [Record(b"x", key="k")]
        if record.value == b"float-timestamp":
            return [Record(b"x", timestamp=1.5)]
        if record.value == b"text-header":
            return [Record(b"x", headers=[("h", "text")])]
        if record.value == b"negative-counter":
            counter("fault", -1)
        return [record]


WitWorld = export(Fault)
