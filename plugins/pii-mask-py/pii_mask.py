"""`pii-mask` in Python: masks personal fields before records leave the pipeline, by hashing
(equal inputs stay joinable) or redacting them; the same config as plugins/pii-mask and, read as
JSON, the same output (the Rust plugin copies what it does not mask byte for byte; this one writes
the document again, keys in their order, numbers as serde_json prints them).

Config: `fields` (dotted paths, a list or comma-separated text), `mode` ("hash" or "redact"),
`salt` (hash mode), `replacement` (redact mode, default "***")."""

import hashlib

from weir_plugin import BadRecord, ConfigError, Plugin, export, pointer, slot
from weir_plugin.record import dumps


class PiiMask(Plugin):
    def init(self, config):
        config.deny_unknown(["fields", "mode", "salt", "replacement"])
        self.fields = [pointer(f) for f in config.list("fields")]
        if not self.fields:
            raise ConfigError(
                'config key `fields` is required: the fields to mask, e.g. "email,phone"'
            )
        self.mode = config.str("mode", "hash")
        if self.mode not in ("hash", "redact"):
            raise ConfigError(f'config key `mode` must be "hash" or "redact", got "{self.mode}"')
        self.salt = config.str("salt", "")
        self.replacement = config.str("replacement", "***")

    def mask(self, value):
        if self.mode == "redact":
            return self.replacement
        # A string's text, else its JSON as the Rust plugin writes it: keys sorted, UTF-8.
        text = value.encode() if isinstance(value, str) else dumps(value, sort_keys=True)
        return hashlib.sha256(self.salt.encode() + text).hexdigest()

    def transform(self, record):
        document = record.json()
        if not isinstance(document, dict):
            raise BadRecord("value must be a JSON object")
        for field in self.fields:
            found = slot(document, field)
            if found is not None and found[0][found[1]] is not None:
                parent, member = found
                parent[member] = self.mask(parent[member])
        # Keys in the record's order, as the Rust plugin keeps them.
        return [record.with_json(document)]


WitWorld = export(PiiMask)
