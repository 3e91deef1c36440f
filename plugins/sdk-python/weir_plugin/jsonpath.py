"""JSON helpers for the common plugin shape: read fields by pointer, with a bad-record error
naming the missing field, so a mapping is a few lines (the same as the Rust SDK's `json`)."""

from .errors import BadRecord
from .record import number_text

_MISSING = object()


def field_name(pointer_text):
    """`/name/first` as `name.first`, the way users write field paths."""
    return pointer_text.lstrip("/").replace("/", ".")


def pointer(path):
    """A user's dotted field path (`name.first`) as a JSON pointer (`/name/first`)."""
    return path if path.startswith("/") else "/" + path.replace(".", "/")


def _tokens(pointer_text):
    # The unescaped tokens of a JSON pointer; None when the text is not one (it must be empty or
    # begin with `/`).
    if pointer_text == "":
        return []
    if not pointer_text.startswith("/"):
        return None
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer_text[1:].split("/")]


def _step(value, token):
    # The member `token` names: a key of an object, or an index of an array as serde_json reads
    # one (ASCII digits without a leading zero: `0`, `12`, not `01`, `+1` or `١`).
    if isinstance(value, dict):
        return token
    if isinstance(value, list) and token.isascii() and token.isdigit():
        if (token == "0" or token[0] != "0") and int(token) < len(value):
            return int(token)
    return _MISSING


def slot(value, pointer_text):
    """Where the value at a JSON pointer lives, for replacing it: `(container, key)` with the
    object or array holding it and its key or index, or None when there is no such value (the
    same lookup as `at` and the Rust SDK's `pointer_mut`)."""
    path = _tokens(pointer_text)
    if not path:
        return None
    for token in path[:-1]:
        member = _step(value, token)
        if member is _MISSING:
            return None
        value = value.get(member, _MISSING) if isinstance(value, dict) else value[member]
    member = _step(value, path[-1])
    if member is _MISSING or (isinstance(value, dict) and member not in value):
        return None
    return value, member


def _lookup(value, pointer_text):
    path = _tokens(pointer_text)
    if path is None:
        return _MISSING
    for token in path:
        member = _step(value, token)
        if member is _MISSING:
            return _MISSING
        value = value.get(member, _MISSING) if isinstance(value, dict) else value[member]
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
    if isinstance(found, bool):
        return "true" if found else "false"
    if isinstance(found, (int, float)):
        return number_text(found)
    raise BadRecord(f"field `{field_name(pointer_text)}` must be a string or a number")
