"""The record type plugins see: plain Python data, so plugin logic is testable without a host.

JSON is read and written as the Rust SDK (serde_json) reads and writes it, so a Python plugin
judges a record as a Rust one does and writes the same bytes: UTF-8 only, no NaN or Infinity,
no lone surrogates, integers beyond 64 bits read as floats, floats printed shortest with
serde_json's layout (`1e+20`, `2.5e-8`, `0.00001`)."""

import json
import math
import re
from itertools import accumulate

from .errors import BadRecord, PluginFailure

# The integers serde_json keeps as integers (i64 and u64); others are read as floats.
_INT_MIN = -(1 << 63)
_INT_END = 1 << 64


def _parse_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _parse_int(text):
    # serde_json reads `-0` and an integer beyond 64 bits as a float.
    if len(text) <= 20 and text != "-0":
        value = int(text)
        if _INT_MIN <= value < _INT_END:
            return value
    return _parse_float(text)


def _parse_constant(name):
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(
    parse_float=_parse_float, parse_int=_parse_int, parse_constant=_parse_constant
)
# serde_json's nesting limit: a document with 128 arrays or objects one inside the next is refused.
_MAX_DEPTH = 127
# A `\uD800`-`\uDFFF` escape: only a text holding one can hold a lone surrogate once parsed.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _check_unicode(document):
    """Fails on a string (or key) holding a lone surrogate, which is not Unicode text: walked
    without recursion, so any document the parser accepted is walked."""
    pending = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, str):
            try:
                node.encode()
            except UnicodeEncodeError as error:
                bad = node[error.start].encode("utf-8", "backslashreplace").decode()
                raise ValueError(f"lone surrogate {bad} in a string") from None
        elif isinstance(node, dict):
            pending.extend(node)
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
# What each bracket does to the depth, by byte.
_DEPTH_STEPS = [0] * 256
_DEPTH_STEPS[ord("[")] = _DEPTH_STEPS[ord("{")] = 1
_DEPTH_STEPS[ord("]")] = _DEPTH_STEPS[ord("}")] = -1


def _check_depth(text):
    """Fails on arrays or objects nested deeper than serde_json reads them. Checked on the text,
    before parsing: the parser recurses, and as Wasm its stack may run out (a trap) before
    Python's recursion limit. The brackets outside strings, summed in C (no Python loop)."""
    brackets = _NOT_BRACKETS.sub("", _STRING.sub("", text)).encode()
    if max(accumulate(map(_DEPTH_STEPS.__getitem__, brackets)), default=0) > _MAX_DEPTH:
        raise ValueError(f"recursion limit exceeded: nested deeper than {_MAX_DEPTH}")


def loads(data):
    """Parses JSON bytes (or text) as the Rust SDK does; raises ValueError (RecursionError for a
    document nested too deeply) when serde_json would refuse them."""
    text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    if text.count("[") + text.count("{") > _MAX_DEPTH:
        _check_depth(text)
    document = _DECODER.decode(text)
    if _SURROGATE_ESCAPE.search(text):
        _check_unicode(document)
    return document


# A float Python writes with an exponent (`1e-05`), which serde_json may write otherwise.
_EXPONENT = re.compile(r"\de[-+]\d")
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|(-?\d+(?:\.\d+)?)e([-+]\d+)')


def _float_layout(sign, digits, point):
    """The shortest digits of a float (`digits`, no leading or trailing zeros, value
    0.digits × 10^point) laid out as serde_json writes them."""
    length = len(digits)
    if length <= point <= 16:
        text = digits + "0" * (point - length) + ".0"
    elif 0 < point <= 16:
        text = digits[:point] + "." + digits[point:]
    elif -5 < point <= 0:
        text = "0." + "0" * -point + digits
    elif length == 1:
        text = f"{digits}e{point - 1:+}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{point - 1:+}"
    return sign + text


def _exponent_token(match):
    mantissa, exponent = match.group(1), match.group(2)
    if mantissa is None:
        return match.group(0)  # a string
    sign = "-" if mantissa.startswith("-") else ""
    whole, _, fraction = mantissa.lstrip("-").partition(".")
    significant = (whole + fraction).lstrip("0")
    point = int(exponent) + len(whole) - (len(whole) + len(fraction) - len(significant))
    digits = significant.rstrip("0")
    return _float_layout(sign, digits, point) if digits else sign + "0.0"


def number_text(value):
    """An int or float as serde_json prints it: `42`, `1.5`, `1e+20`, `2.5e-8`. ValueError for
    NaN and infinities, which JSON cannot hold."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {type(value).__name__}")
    if isinstance(value, int):
        return int.__repr__(value)
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a JSON number")
    text = float.__repr__(value)
    return _TOKENS.sub(_exponent_token, text) if "e" in text else text


def dumps(obj, sort_keys=False):
    """`obj` as compact UTF-8 JSON bytes, as serde_json writes it (with `sort_keys`, as it writes
    a `serde_json::Value`, whose objects are ordered by key). ValueError for NaN and infinities
    and for strings that are not Unicode text; TypeError for what JSON cannot hold."""
    text = json.dumps(
        obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=sort_keys
    )
    if _EXPONENT.search(text):
        text = _TOKENS.sub(_exponent_token, text)
    return text.encode()


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
        #: Event time in milliseconds since the Unix epoch (an int), or None.
        self.timestamp = timestamp

    def json(self):
        """Parses the value as JSON; malformed JSON is a bad record, and so is what the Rust SDK
        refuses: text that is not UTF-8 (or begins with a byte-order mark), NaN, Infinity, a
        number beyond a float's range, a lone surrogate, nesting too deep to parse."""
        try:
            return loads(self.value)
        except RecursionError:
            raise BadRecord("value is not valid JSON: nested too deeply") from None
        except ValueError as error:
            raise BadRecord(f"value is not valid JSON: {error}") from None

    def with_json(self, obj, sort_keys=False):
        """This record (key, headers, timestamp kept) with its value replaced by `obj` as JSON,
        written as serde_json writes it; `sort_keys` orders objects by key, as the Rust SDK
        writes a parsed document."""
        try:
            value = dumps(obj, sort_keys=sort_keys)
        except (TypeError, ValueError, RecursionError) as error:
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
