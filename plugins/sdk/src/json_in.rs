//! The fast path of [`crate::Record::parse`]: a JSON reader built for the shape plugins read
//! (an object whose few wanted fields are borrowed and the rest skipped). Strings are scanned
//! eight bytes at a time, skipped values are walked by one loop instead of a visitor per value,
//! and an error carries nothing, so that it costs nothing to return.
//!
//! It never decides alone that a document is bad: whenever it refuses (malformed JSON, a value
//! `T` rejects, or a shape it leaves to serde_json such as bytes, 128-bit integers or
//! `RawValue`), the caller runs serde_json on the same text, which gives the value or the error
//! wording. So the one rule here is: accept nothing serde_json refuses, and hand the visitor
//! what serde_json would hand it. Numbers other than plain integers are read by serde_json
//! itself, from the number's own text.
//!
//! The scanning loops are kept out of line (`#[inline(never)]`): inlined into every derived
//! visitor they made one 119 KB function per document type, which Cranelift compiles with most
//! values spilled to the stack; out of line, `user-profile` as Wasm used about 6% less CPU. The
//! steps around them ([`Reader::string`], [`Reader::skip_string`], the next key) are inlined:
//! their usual case is settled before any loop, and as calls they were most of a record's
//! calls into guest functions, each with its prologue, stack check and deadline check
//! (docs/performance.md, "Twenty-third session").
//!
//! As Wasm, every loop costs a deadline check each time it is entered as well as at each turn,
//! and every call one more. So the usual case of each step (no whitespace before a token, a
//! string that is ASCII without escapes, a skipped value that is a string or a number) is
//! settled before any loop, with the loops in separate functions for the rest; and the small
//! steps run for every key are inlined. That took the deadline checks' cost in `weir bench
//! plugin` from about 20% to about 10% (docs/performance.md).

use std::fmt::{self, Display};

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

use crate::swar::find_string_stop;

#[cfg(test)]
mod tests;

/// Reads `bytes` into `T`; `None` when this reader refuses the document (malformed JSON, text
/// that is not UTF-8, a shape it leaves to serde_json, or a value `T` rejects): the caller then
/// runs serde_json, which gives the result or the error wording. UTF-8 is checked as strings
/// are scanned, only where a byte is not ASCII (outside strings every byte must be ASCII JSON),
/// so an accepted document was UTF-8 throughout.
pub(crate) fn from_slice<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Option<T> {
    let mut reader = Reader {
        bytes,
        at: 0,
        depth: 0,
        scratch: String::new(),
    };
    match T::deserialize(&mut reader) {
        Ok(value) if reader.peek().is_none() => Some(value),
        _ => None,
    }
}

/// Reads `bytes` through `seed` (a visitor that keeps state, such as a host's reader of several
/// fields at once); `None` when this reader refuses the document, as [`from_slice`]. A seed that
/// records what it sees must start again from nothing when the caller falls back to serde_json.
/// It builds its own reader rather than share a helper with [`from_slice`]: routing that
/// through one (a closure, or `PhantomData` as the seed) changed every plugin's compiled code,
/// whose speed is measured, for eight lines saved.
pub(crate) fn from_slice_seed<'de, S: DeserializeSeed<'de>>(
    bytes: &'de [u8],
    seed: S,
) -> Option<S::Value> {
    let mut reader = Reader {
        bytes,
        at: 0,
        depth: 0,
        scratch: String::new(),
    };
    match seed.deserialize(&mut reader) {
        Ok(value) if reader.peek().is_none() => Some(value),
        _ => None,
    }
}

/// The reader refused: why is serde_json's to say.
#[derive(Debug)]
pub(crate) struct Refused;

impl Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("refused by the fast JSON reader")
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    fn custom<T: Display>(_message: T) -> Self {
        Refused
    }
}

type Result<T> = std::result::Result<T, Refused>;

/// Containers nested deeper than this are left to serde_json (which refuses at 128 levels), so
/// the reader's own recursion stays bounded.
const MAX_DEPTH: u32 = 120;

/// The struct name serde_json gives `RawValue`, whose text this reader does not capture.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// A document being read.
struct Reader<'de> {
    bytes: &'de [u8],
    /// The next byte to read.
    at: usize,
    /// Containers open around the value being read.
    depth: u32,
    /// Where a string with escapes is decoded.
    scratch: String,
}

/// A string read from the document: borrowed when it held no escape.
enum Text<'de, 's> {
    Borrowed(&'de str),
    Decoded(&'s str),
}

/// The deserializer method a number was asked for, so that serde_json reads it the same way.
#[derive(Clone, Copy)]
enum NumberHint {
    Any,
    F32,
    I128,
    U128,
}

impl<'de> Reader<'de> {
    /// The next byte that is not JSON whitespace, not consumed.
    ///
    /// The usual case, no whitespace, is settled before any loop: as Wasm a loop costs a
    /// deadline check each time it is entered, and a record's every token starts here.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        if byte > b' ' {
            return Some(byte);
        }
        self.peek_past_whitespace()
    }

    /// [`Reader::peek`] from a byte that may be whitespace.
    #[inline(never)]
    fn peek_past_whitespace(&mut self) -> Option<u8> {
        loop {
            let byte = *self.bytes.get(self.at)?;
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(byte);
            }
            self.at += 1;
        }
    }

    /// Consumes `byte` if it is next after whitespace.
    #[inline]
    fn eat(&mut self, byte: u8) -> Result<()> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// The text from `from` up to the first `"`, `\` or control byte (or the end), and that
    /// byte's index, checking on the way that the text is UTF-8: each run of bytes that are not
    /// ASCII goes to `core::str::from_utf8`, so the rules stay core's. A run ends at an ASCII
    /// byte, which no character spans, so checking runs one by one checks the whole.
    ///
    /// Text that is all ASCII, the usual case, is settled before any loop (see
    /// [`Reader::peek`]).
    #[inline]
    fn plain_text(&self, from: usize) -> Result<(&'de str, usize)> {
        let bytes: &'de [u8] = self.bytes;
        let stop = find_string_stop(bytes, from);
        if bytes.get(stop).is_none_or(u8::is_ascii) {
            // SAFETY: `from..stop` holds only ASCII bytes.
            let text = unsafe { std::str::from_utf8_unchecked(&bytes[from..stop]) };
            return Ok((text, stop));
        }
        self.plain_text_with_others(from)
    }

    /// [`Reader::plain_text`] for text with bytes that are not ASCII.
    #[inline(never)]
    fn plain_text_with_others(&self, from: usize) -> Result<(&'de str, usize)> {
        let bytes: &'de [u8] = self.bytes;
        let mut at = from;
        loop {
            let stop = find_string_stop(bytes, at);
            match bytes.get(stop) {
                Some(byte) if !byte.is_ascii() => {
                    let run_end = bytes[stop..]
                        .iter()
                        .position(u8::is_ascii)
                        .map_or(bytes.len(), |offset| stop + offset);
                    std::str::from_utf8(&bytes[stop..run_end]).map_err(|_| Refused)?;
                    at = run_end;
                }
                _ => {
                    // SAFETY: `from..stop` holds ASCII bytes and runs of other bytes that core
                    // accepted as UTF-8, each run bounded by ASCII bytes or the text's end.
                    let text = unsafe { std::str::from_utf8_unchecked(&bytes[from..stop]) };
                    return Ok((text, stop));
                }
            }
        }
    }

    /// Consumes `word` (`true`, `false`, `null`) at the current byte.
    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// Reads a string whose opening quote is the current byte. Inlined: it is the step run most
    /// often (about fifty times a `user-profile` record), and its usual case is a few
    /// instructions once the scan's first block settles it.
    #[inline]
    fn string(&mut self) -> Result<Text<'de, '_>> {
        let (text, end) = self.plain_text(self.at + 1)?;
        match self.bytes.get(end) {
            Some(b'"') => {
                self.at = end + 1;
                Ok(Text::Borrowed(text))
            }
            Some(b'\\') => {
                self.scratch.clear();
                self.scratch.push_str(text);
                self.at = end;
                self.decode_rest()?;
                Ok(Text::Decoded(&self.scratch))
            }
            _ => Err(Refused),
        }
    }

    /// Decodes the rest of a string from its first escape (the current byte) into `scratch`.
    #[inline(never)]
    fn decode_rest(&mut self) -> Result<()> {
        loop {
            let character = self.escape()?;
            self.scratch.push(character);
            let (text, end) = self.plain_text(self.at)?;
            self.scratch.push_str(text);
            self.at = end;
            match self.bytes.get(end) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {}
                _ => return Err(Refused),
            }
        }
    }

    /// The character of the escape whose backslash is the current byte.
    fn escape(&mut self) -> Result<char> {
        let escape = *self.bytes.get(self.at + 1).ok_or(Refused)?;
        self.at += 2;
        Ok(match escape {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => self.unicode_escape()?,
            _ => return Err(Refused),
        })
    }

    /// The character of a `\u` escape whose four hex digits start at the current byte; a
    /// surrogate must be a high one followed by a `\u` low one.
    fn unicode_escape(&mut self) -> Result<char> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.bytes[self.at..].starts_with(b"\\u") {
                    return Err(Refused);
                }
                self.at += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(Refused);
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(Refused),
            _ => first,
        };
        char::from_u32(code).ok_or(Refused)
    }

    /// Four hex digits at the current byte.
    fn hex4(&mut self) -> Result<u32> {
        let digits = self.bytes.get(self.at..self.at + 4).ok_or(Refused)?;
        let mut value = 0;
        for &digit in digits {
            let nibble = char::from(digit).to_digit(16).ok_or(Refused)?;
            value = value * 16 + nibble;
        }
        self.at += 4;
        Ok(value)
    }

    /// Skips a string whose opening quote is the current byte, checking its escapes as
    /// [`Reader::string`] would decode them. Inlined, as [`Reader::string`] is.
    #[inline]
    fn skip_string(&mut self) -> Result<()> {
        // Without escapes, the usual case, no loop is entered here (see [`Reader::peek`]).
        let (_, at) = self.plain_text(self.at + 1)?;
        if self.bytes.get(at) == Some(&b'"') {
            self.at = at + 1;
            return Ok(());
        }
        self.at = at;
        self.skip_escaped_rest()
    }

    /// Skips the rest of a string from a byte that is not its closing quote: an escape, or
    /// anything else, which is refused.
    #[inline(never)]
    fn skip_escaped_rest(&mut self) -> Result<()> {
        loop {
            match self.bytes.get(self.at) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.escape()?;
                    (_, self.at) = self.plain_text(self.at)?;
                }
                _ => return Err(Refused),
            }
        }
    }

    /// Skips a number starting at the current byte, checking JSON's number grammar:
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn skip_number(&mut self) -> Result<()> {
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match self.bytes.get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(Refused),
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            self.one_or_more_digits()?;
        }
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.bytes.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.one_or_more_digits()?;
        }
        Ok(())
    }

    fn skip_digits(&mut self) {
        while matches!(self.bytes.get(self.at), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }

    fn one_or_more_digits(&mut self) -> Result<()> {
        let start = self.at;
        self.skip_digits();
        if self.at == start {
            Err(Refused)
        } else {
            Ok(())
        }
    }

    /// Skips one value of any kind, checking its syntax. A string or a number, most skipped
    /// values, is skipped before any loop (see [`Reader::peek`]). Inlined: it only chooses.
    #[inline]
    fn skip_value(&mut self) -> Result<()> {
        match self.peek().ok_or(Refused)? {
            b'"' => self.skip_string(),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => self.skip_container_or_literal(),
        }
    }

    /// [`Reader::skip_value`] for a container or a literal (or anything else, refused), in one
    /// loop: containers are tracked in a bit stack (a set bit is an object), so nothing
    /// recurses.
    #[inline(never)]
    fn skip_container_or_literal(&mut self) -> Result<()> {
        let mut objects: u128 = 0;
        let mut open: u32 = 0;
        loop {
            // A value is expected here.
            match self.peek().ok_or(Refused)? {
                b'"' => self.skip_string()?,
                b'-' | b'0'..=b'9' => self.skip_number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                bracket @ (b'[' | b'{') => {
                    self.at += 1;
                    let object = bracket == b'{';
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                    } else {
                        if open == 128 {
                            return Err(Refused);
                        }
                        objects = (objects << 1) | u128::from(object);
                        open += 1;
                        if object {
                            self.skip_key()?;
                        }
                        continue;
                    }
                }
                _ => return Err(Refused),
            }
            // A value has ended: close containers until one takes a comma.
            loop {
                if open == 0 {
                    return Ok(());
                }
                let in_object = objects & 1 == 1;
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if in_object {
                            self.skip_key()?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {}
                    Some(b']') if !in_object => {}
                    _ => return Err(Refused),
                }
                self.at += 1;
                objects >>= 1;
                open -= 1;
            }
        }
    }

    /// Skips an object's key and its colon.
    fn skip_key(&mut self) -> Result<()> {
        if self.peek() != Some(b'"') {
            return Err(Refused);
        }
        self.skip_string()?;
        self.eat(b':')
    }

    /// The text of the number starting at the current byte (every byte a number can hold).
    fn number_text(&mut self) -> &'de str {
        let start = self.at;
        while matches!(
            self.bytes.get(self.at),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.at += 1;
        }
        // SAFETY: only the ASCII bytes matched above were taken.
        unsafe { std::str::from_utf8_unchecked(&self.bytes[start..self.at]) }
    }

    /// Reads a number starting at the current byte, visiting what serde_json would: plain
    /// integers here, anything else by serde_json from the number's own text.
    #[inline(never)]
    fn number<V: Visitor<'de>>(&mut self, hint: NumberHint, visitor: V) -> Result<V::Value> {
        let text = self.number_text();
        if let NumberHint::Any = hint {
            match text.as_bytes() {
                [b'-', digits @ ..] if digits.len() <= 18 => {
                    if let Some(magnitude @ 1..) = plain_integer(digits) {
                        return visitor.visit_i64(-(magnitude as i64));
                    }
                }
                digits => {
                    if let Some(value) = plain_integer(digits) {
                        return visitor.visit_u64(value);
                    }
                }
            }
        }
        let mut json = serde_json::Deserializer::from_str(text);
        let value = match hint {
            NumberHint::Any => json.deserialize_any(visitor),
            NumberHint::F32 => json.deserialize_f32(visitor),
            NumberHint::I128 => json.deserialize_i128(visitor),
            NumberHint::U128 => json.deserialize_u128(visitor),
        };
        let value = value.map_err(|_| Refused)?;
        json.end().map_err(|_| Refused)?;
        Ok(value)
    }

    /// A number's text, checked against JSON's grammar, by `visit_borrowed_bytes`; any other
    /// value as [`Deserializer::deserialize_any`] visits it (see
    /// [`crate::json::NUMBER_AS_WRITTEN`]).
    fn number_as_written<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        match self.peek().ok_or(Refused)? {
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                self.skip_number()?;
                visitor.visit_borrowed_bytes(&self.bytes[start..self.at])
            }
            _ => self.deserialize_any(visitor),
        }
    }

    /// Runs `read` one container deeper, refusing past [`MAX_DEPTH`].
    fn nested<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            return Err(Refused);
        }
        self.depth += 1;
        let value = read(self);
        self.depth -= 1;
        value
    }

    /// Visits the array whose `[` is the current byte.
    fn array<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        self.at += 1;
        let value = self.nested(|reader| visitor.visit_seq(Items::new(reader)))?;
        self.eat(b']')?;
        Ok(value)
    }

    /// Visits the object whose `{` is the current byte.
    fn object<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        self.at += 1;
        let value = self.nested(|reader| visitor.visit_map(Items::new(reader)))?;
        self.eat(b'}')?;
        Ok(value)
    }

    /// Visits the string whose opening quote is the current byte.
    fn visit_string<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        match self.string()? {
            Text::Borrowed(text) => visitor.visit_borrowed_str(text),
            Text::Decoded(text) => visitor.visit_str(text),
        }
    }
}

/// `digits` as a `u64` when it is 1 to 19 ASCII digits without a leading zero (so it fits).
fn plain_integer(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    let mut value = 0u64;
    for &digit in digits {
        let digit = digit.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + u64::from(digit);
    }
    Some(value)
}

/// The deserializer methods that take a number and visit it as serde_json does.
macro_rules! numbers {
    ($($method:ident => $hint:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            match self.peek() {
                Some(b'-' | b'0'..=b'9') => self.number(NumberHint::$hint, visitor),
                _ => Err(Refused),
            }
        })*
    };
}

impl<'de> Deserializer<'de> for &mut Reader<'de> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek().ok_or(Refused)? {
            b'"' => self.visit_string(visitor),
            b'{' => self.object(visitor),
            b'[' => self.array(visitor),
            b'-' | b'0'..=b'9' => self.number(NumberHint::Any, visitor),
            b't' => {
                self.literal(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                visitor.visit_bool(false)
            }
            b'n' => {
                self.literal(b"null")?;
                visitor.visit_unit()
            }
            _ => Err(Refused),
        }
    }

    numbers! {
        deserialize_i8 => Any, deserialize_i16 => Any, deserialize_i32 => Any,
        deserialize_i64 => Any, deserialize_u8 => Any, deserialize_u16 => Any,
        deserialize_u32 => Any, deserialize_u64 => Any, deserialize_f64 => Any,
        deserialize_f32 => F32, deserialize_i128 => I128, deserialize_u128 => U128,
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek() {
            Some(b't' | b'f') => self.deserialize_any(visitor),
            _ => Err(Refused),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek() {
            Some(b'"') => self.visit_string(visitor),
            _ => Err(Refused),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    /// serde_json reads a string's raw bytes here; left to it.
    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Refused)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Refused)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek() {
            Some(b'n') => {
                self.literal(b"null")?;
                visitor.visit_unit()
            }
            _ => Err(Refused),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == RAW_VALUE_TOKEN {
            return Err(Refused);
        }
        if name == crate::json::NUMBER_AS_WRITTEN {
            return self.number_as_written(visitor);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek() {
            Some(b'[') => self.array(visitor),
            _ => Err(Refused),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek() {
            Some(b'{') => self.object(visitor),
            _ => Err(Refused),
        }
    }

    /// A struct is read from an object or, as serde_json allows, an array of its fields.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.peek() {
            Some(b'{') => self.object(visitor),
            Some(b'[') => self.array(visitor),
            _ => Err(Refused),
        }
    }

    /// `"Variant"` or `{"Variant": value}`, as serde_json reads an externally tagged enum.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.peek() {
            Some(b'"') => visitor.visit_enum(UnitVariant(self)),
            Some(b'{') => {
                self.at += 1;
                let value = self.nested(|reader| visitor.visit_enum(TaggedVariant(reader)))?;
                self.eat(b'}')?;
                Ok(value)
            }
            _ => Err(Refused),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip_value()?;
        visitor.visit_unit()
    }
}

/// The items of an array or the entries of an object, for a visitor.
struct Items<'r, 'de> {
    reader: &'r mut Reader<'de>,
    first: bool,
}

impl<'r, 'de> Items<'r, 'de> {
    fn new(reader: &'r mut Reader<'de>) -> Self {
        Items {
            reader,
            first: true,
        }
    }

    /// Moves to the next item, or finds `close` (not consumed) and says there is none: items
    /// are separated by commas, and a comma must not come before `close`.
    ///
    /// Inlined: it runs for every key and item, and as Wasm a call costs a deadline check.
    #[inline]
    fn advance(&mut self, close: u8) -> Result<bool> {
        let next = self.reader.peek().ok_or(Refused)?;
        if next == close {
            return Ok(false);
        }
        if !self.first {
            if next != b',' {
                return Err(Refused);
            }
            self.reader.at += 1;
            if self.reader.peek() == Some(close) {
                return Err(Refused);
            }
        }
        self.first = false;
        Ok(true)
    }
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.advance(b']')? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
}

impl<'de> de::MapAccess<'de> for Items<'_, 'de> {
    type Error = Refused;

    /// Inlined into each derived visitor: it runs for every key and only chooses.
    #[inline(always)]
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !self.advance(b'}')? {
            return Ok(None);
        }
        if self.reader.peek() != Some(b'"') {
            return Err(Refused);
        }
        seed.deserialize(Key(&mut *self.reader)).map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        self.reader.eat(b':')?;
        seed.deserialize(&mut *self.reader)
    }
}

/// An object's key, whose opening quote is the current byte: read as a string, as serde_json's
/// own key reader does for every method but the ones that parse the key's text as something
/// else (numbers, booleans, bytes), which are left to serde_json.
struct Key<'r, 'de>(&'r mut Reader<'de>);

/// The key methods that read the key's text as something else (a number, a boolean, bytes).
macro_rules! refused {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
            Err(Refused)
        })*
    };
}

impl<'de> Deserializer<'de> for Key<'_, 'de> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.0.visit_string(visitor)
    }

    /// Keys cannot be null.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == RAW_VALUE_TOKEN {
            return Err(Refused);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        char str string unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }

    refused! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_bytes deserialize_byte_buf
    }
}

/// The enum variant of `"Variant"`: a unit variant, or nothing serde_json accepts.
struct UnitVariant<'r, 'de>(&'r mut Reader<'de>);

impl<'r, 'de> de::EnumAccess<'de> for UnitVariant<'r, 'de> {
    type Error = Refused;
    type Variant = Self;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self)> {
        let variant = seed.deserialize(&mut *self.0)?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant<'_, 'de> {
    type Error = Refused;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value> {
        Err(Refused)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value> {
        Err(Refused)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value> {
        Err(Refused)
    }
}

/// The enum variant of `{"Variant": value}`, the `{` consumed.
struct TaggedVariant<'r, 'de>(&'r mut Reader<'de>);

impl<'r, 'de> de::EnumAccess<'de> for TaggedVariant<'r, 'de> {
    type Error = Refused;
    type Variant = Self;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self)> {
        let variant = seed.deserialize(&mut *self.0)?;
        self.0.eat(b':')?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for TaggedVariant<'_, 'de> {
    type Error = Refused;

    fn unit_variant(self) -> Result<()> {
        de::Deserialize::deserialize(self.0)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self.0)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.0.deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.0.deserialize_struct("", fields, visitor)
    }
}
