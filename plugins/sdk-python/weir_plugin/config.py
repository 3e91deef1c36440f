"""Typed access to the JSON config object the host passes to `init`, with errors that name the
key (the same helpers as the Rust SDK's `Config`)."""

import json

from .record import loads

class ConfigError(Exception):
    """The config is unusable: name the key and what is expected. The host then refuses to run
    this plugin version."""


class Config(dict):
    """A plugin's config: the `config` table of its entry in the pipeline file. A plain dict
    with helpers."""

    @classmethod
    def parse(cls, text):
        """Parses the host's config text; it must be a JSON object."""
        if not text.strip():
            return cls()
        try:
            value = loads(text)
        except (ValueError, RecursionError) as error:
            raise ConfigError(f"config is not valid JSON: {error}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"config must be an object, got {json.dumps(value)}")
        return cls(value)

    def str(self, key, default=None):
        """The string at `key`, or `default` when absent; an error when not a string."""
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError(f"config key `{key}` must be a string, got {json.dumps(value)}")
        return value

    def required_str(self, key):
        """The string at `key`; an error naming the key when absent."""
        value = self.str(key)
        if value is None:
            raise ConfigError(f"config key `{key}` is required")
        return value

    def list(self, key):
        """A list of strings at `key`, given as an array or as comma-separated text."""
        value = self.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for item in value:
                if not isinstance(item, str):
                    raise ConfigError(
                        f"config key `{key}` must list strings, got {json.dumps(item)}"
                    )
            return list(value)
        raise ConfigError(
            f"config key `{key}` must be a list of strings, got {json.dumps(value)}"
        )

    def deny_unknown(self, known):
        """Fails naming the first key not in `known`, so a typo never goes unnoticed."""
        for key in self:
            if key not in known:
                raise ConfigError(
                    f"unknown config key `{key}`; expected one of: {', '.join(known)}"
                )
