"""`pii-mask` in Python: masks personal fields before records leave the pipeline, by hashing
(equal inputs stay joinable) or redacting them; the same config and output as plugins/pii-mask.

Config: `fields` (dotted paths, a list or comma-separated text), `mode` ("hash" or "redact"),
`salt` (hash mode), `replacement` (redact mode, default "***")."""

import hashlib
import json

from weir_plugin import BadRecord, ConfigError, Plugin, export, pointer


def _parent_and_leaf(document, pointer_text):
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer_text[1:].split("/")]
    node = document
    for token in tokens[:-1]:
        node = node.get(token) if isinstance(node, dict) else None
    return (node, tokens[-1]) if isinstance(node, dict) else (None, None)


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
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        return hashlib.sha256((self.salt + text).encode()).hexdigest()

    def transform(self, record):
        document = record.json()
        if not isinstance(document, dict):
            raise BadRecord("value must be a JSON object")
        for field in self.fields:
            parent, leaf = _parent_and_leaf(document, field)
            if parent is not None and parent.get(leaf) is not None:
                parent[leaf] = self.mask(parent[leaf])
        return [record.with_json(document)]


WitWorld = export(PiiMask)
