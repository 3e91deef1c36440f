"""The record type plugins see: plain Python data, so plugin logic is testable without a host."""

import json

from .errors import BadRecord, PluginFailure


class Record:
    """One record of the stream."""

    __slots__ = ("key", "value", "headers", "timestamp")

    def __init__(self, value=b"", key=None, headers=None, timestamp=None):
        if isinstance(value, str):
            value = value.encode()
        #: The record's key (bytes), or None.
        self.key = key
        #: The payload (bytes), usually one UTF-8 JSON document.
        self.value = value
        #: Headers in order as (name, bytes) pairs; a name may repeat.
        self.headers = list(headers or [])
        #: Event time in milliseconds since the Unix epoch, or None.
        self.timestamp = timestamp

    def json(self):
        """Parses the value as JSON; malformed JSON is a bad record."""
        try:
            return json.loads(self.value)
        except ValueError as error:
            raise BadRecord(f"value is not valid JSON: {error}") from None

    def with_json(self, obj):
        """This record (key, headers, timestamp kept) with its value replaced by `obj` as JSON."""
        try:
            value = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as error:
            raise PluginFailure(f"cannot serialise JSON: {error}") from None
        return Record(value, self.key, self.headers, self.timestamp)

    def header(self, name):
        """The first header named `name` (bytes), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def __eq__(self, other):
        return isinstance(other, Record) and all(
            getattr(self, slot) == getattr(other, slot) for slot in self.__slots__
        )

    def __repr__(self):
        return (
            f"Record(value={self.value!r}, key={self.key!r}, headers={self.headers!r}, "
            f"timestamp={self.timestamp!r})"
        )
