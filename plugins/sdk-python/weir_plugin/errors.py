"""Plugin errors: the exception type says who is to blame, which decides whether the host
dead-letters the record as bad input or counts it against the plugin version."""


class BadRecord(Exception):
    """The input record is malformed: say which field and why. Maps to WIT `bad-record`."""


class PluginFailure(Exception):
    """The plugin failed on a record it should have handled. Maps to WIT `plugin-failure`;
    any other exception escaping `transform` is reported the same way, with its type and
    message."""
