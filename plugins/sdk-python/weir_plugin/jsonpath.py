"""JSON helpers for the common plugin shape: read fields by pointer, with a bad-record error
naming the missing field, so a mapping is a few lines (the same as the Rust SDK's `json`)."""

import json

from .errors import BadRecord

_MISSING = object()


def field_name(pointer_text):
    """`/name/first` as `name.first`, the way users write field paths."""
    return pointer_text.lstrip("/").replace("/", ".")


def pointer(path):
    """A user's dotted field path (`name.first`) as a JSON pointer (`/name/first`)."""
    return path if path.startswith("/") else "/" + path.replace(".", "/")


def _lookup(value, pointer_text):
    if pointer_text == "":
        return value
    for token in pointer_text[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            value = value.get(token, _MISSING)
        elif isinstance(value, list) and token.isdigit():
            index = int(token)
            value = value[index] if index < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def at(value, pointer_text):
    """The value at a JSON pointer; a bad record naming the field when absent or null."""
    found = _lookup(value, pointer_text)
    if found is _MISSING or found is None:
        raise BadRecord(f"missing required field `{field_name(pointer_text)}`")
    return found


def str_at(value, pointer_text):
    """The string at a JSON pointer; a bad record when absent or not a string."""
    found = at(value, pointer_text)
    if not isinstance(found, str):
        raise BadRecord(f"field `{field_name(pointer_text)}` must be a string")
    return found


def text_at(value, pointer_text):
    """The value at a JSON pointer as text: strings as they are, numbers and booleans printed as
    JSON prints them. For fields an API sends sometimes as a number, sometimes as a string."""
    found = at(value, pointer_text)
    if isinstance(found, str):
        return found
    if isinstance(found, (bool, int, float)):
        return json.dumps(found)
    raise BadRecord(f"field `{field_name(pointer_text)}` must be a string or a number")
