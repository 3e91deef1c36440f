//! Reading several fields of a record in one pass over its bytes, without building a document:
//! a sink that needs a dozen columns gets them borrowed from the record, skipping every other
//! field, instead of parsing the whole value into a `serde_json::Value` tree per record.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use serde_json::value::RawValue;
use weir_plugin::json::NUMBER_AS_WRITTEN;

use super::{FieldPath, index};

/// A field's value as read from a record: text borrows the record's bytes unless it holds
/// escapes, and an object or an array is only named unless its path reads its items.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf<'a> {
    /// JSON `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as `serde_json` reads it (an integer when it is one, else a float).
    Number(Number),
    /// A number exactly as the record writes it (`12.50`, thirty digits, `1e400`), for a path
    /// read with [`Reading::numbers_as_written`]: a float would keep fifteen digits.
    Numeral(&'a str),
    /// A string.
    Text(Cow<'a, str>),
    /// An object.
    Object,
    /// An array.
    Array,
    /// An array's items, for a path read with its items ([`Reading::items`]), each read whole
    /// (an item that is an array or an object is itself `Items` or `Entries`).
    Items(Vec<Leaf<'a>>),
    /// An object's entries in the record's order, likewise.
    Entries(Vec<(Cow<'a, str>, Leaf<'a>)>),
}

impl<'a> Leaf<'a> {
    /// The field as text: strings as they are, numbers and booleans printed; `None` for null,
    /// objects and arrays.
    pub fn into_text(self) -> Option<Cow<'a, str>> {
        match self {
            Leaf::Text(text) => Some(text),
            Leaf::Number(number) => Some(Cow::Owned(number.to_string())),
            Leaf::Numeral(text) => Some(Cow::Borrowed(text)),
            Leaf::Bool(flag) => Some(Cow::Borrowed(if flag { "true" } else { "false" })),
            Leaf::Null | Leaf::Object | Leaf::Array | Leaf::Items(_) | Leaf::Entries(_) => None,
        }
    }
}

/// Scalars as JSON (text quoted and escaped), so an error message shows what the record held;
/// objects and arrays by kind.
impl fmt::Display for Leaf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leaf::Null => f.write_str("null"),
            Leaf::Bool(flag) => write!(f, "{flag}"),
            Leaf::Number(number) => write!(f, "{number}"),
            Leaf::Numeral(text) => f.write_str(text),
            Leaf::Text(text) => write!(f, "{}", serde_json::Value::from(text.as_ref())),
            Leaf::Object | Leaf::Entries(_) => f.write_str("an object"),
            Leaf::Array | Leaf::Items(_) => f.write_str("an array"),
        }
    }
}

/// How a path's value is read, beyond a scalar's value or a container's kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// An array's items ([`Leaf::Items`]) or an object's entries ([`Leaf::Entries`]) rather
    /// than only their kind; a path below such a path finds nothing.
    pub items: bool,
    /// A number (or a number among the items) as its text ([`Leaf::Numeral`]), for a column
    /// that keeps every digit: a decimal, an integer of any size, text.
    pub numbers_as_written: bool,
}

/// The fields a sink reads, as a tree of their keys, read together from a record's bytes.
/// What it finds is what [`FieldPath::find`] finds in the parsed document: a key given twice
/// counts the last time, and an array index is written without sign or leading zeros.
#[derive(Debug, Clone)]
pub struct FieldSet {
    root: Node,
    /// How many paths were given: the length of what [`FieldSet::read`] returns.
    paths: usize,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// The key leading here from the parent (empty at the root).
    key: String,
    /// The key as an array index, when it is one.
    index: Option<usize>,
    /// The positions of the paths that end here.
    ends: Vec<usize>,
    /// The positions of the paths that go deeper: cleared when this field is read again.
    below: Vec<usize>,
    /// How the paths ending here read their value: one path's wish for items or for numbers
    /// as written holds for all of them.
    reading: Reading,
    children: Vec<Node>,
}

impl FieldSet {
    /// The set of `paths`; [`FieldSet::read`] returns their values in this order.
    pub fn new<'p>(paths: impl IntoIterator<Item = &'p FieldPath>) -> Self {
        Self::reading(paths.into_iter().map(|path| (path, Reading::default())))
    }

    /// [`FieldSet::new`] reading every number as the record writes it ([`Leaf::Numeral`]): for
    /// fields used as text (message keys, idempotency keys, topic names), where printing a
    /// float would change a number's text and could make two numbers one key.
    pub fn as_written<'p>(paths: impl IntoIterator<Item = &'p FieldPath>) -> Self {
        Self::reading(paths.into_iter().map(|path| {
            let reading = Reading {
                items: false,
                numbers_as_written: true,
            };
            (path, reading)
        }))
    }

    /// [`FieldSet::new`] where each path says how its value is read ([`Reading`]).
    pub fn reading<'p>(paths: impl IntoIterator<Item = (&'p FieldPath, Reading)>) -> Self {
        let mut root = Node::default();
        let mut count = 0;
        for (position, (path, reading)) in paths.into_iter().enumerate() {
            count += 1;
            let mut node = &mut root;
            for key in &path.keys {
                node.below.push(position);
                let child = match node.children.iter().position(|c| c.key == *key) {
                    Some(child) => child,
                    None => {
                        node.children.push(Node {
                            key: key.clone(),
                            index: index(key),
                            ..Node::default()
                        });
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[child];
            }
            node.ends.push(position);
            node.reading.items |= reading.items;
            node.reading.numbers_as_written |= reading.numbers_as_written;
        }
        FieldSet { root, paths: count }
    }

    /// Each path's value in the JSON `bytes` (`None` where the record has no such field), or
    /// why the bytes are not one JSON value.
    pub fn read<'a>(&self, bytes: &'a [u8]) -> Result<Vec<Option<Leaf<'a>>>, serde_json::Error> {
        let mut found = Vec::new();
        self.read_into(bytes, &mut found)?;
        Ok(found)
    }

    /// [`FieldSet::read`] into `found`, which is cleared first, so that a sink reading a batch
    /// reuses one vector instead of allocating one per record.
    pub fn read_into<'a>(
        &self,
        bytes: &'a [u8],
        found: &mut Vec<Option<Leaf<'a>>>,
    ) -> Result<(), serde_json::Error> {
        // The plugin SDK's reader first: it scans strings a word at a time and skips unwanted
        // values in one loop, where serde_json visits each (a fifth of a Cassandra sink's CPU;
        // docs/performance.md). It refuses whatever serde_json would refuse, and more shapes
        // besides, so a refusal is read again below from nothing, for the value or the error.
        found.clear();
        found.resize(self.paths, None);
        let visit = Visit {
            node: &self.root,
            found,
        };
        if weir_plugin::json::read_seed(bytes, visit).is_some() {
            return Ok(());
        }
        found.clear();
        found.resize(self.paths, None);
        self.fill_with_serde_json(bytes, found)
    }

    /// [`FieldSet::read`] by serde_json alone, to compare the two readers.
    #[cfg(test)]
    fn read_with_serde_json<'a>(
        &self,
        bytes: &'a [u8],
    ) -> Result<Vec<Option<Leaf<'a>>>, serde_json::Error> {
        let mut found = vec![None; self.paths];
        self.fill_with_serde_json(bytes, &mut found)?;
        Ok(found)
    }

    /// [`FieldSet::read_into`] by serde_json alone: for what the SDK's reader refuses.
    fn fill_with_serde_json<'a>(
        &self,
        bytes: &'a [u8],
        found: &mut [Option<Leaf<'a>>],
    ) -> Result<(), serde_json::Error> {
        // Checked once as a whole, the document is read as text, and serde_json checks none of
        // its strings again (per string, that check was a tenth of a Cassandra sink's CPU).
        // Bytes that are not UTF-8 are read as bytes, so the error is serde_json's own, naming
        // where.
        match std::str::from_utf8(bytes) {
            Ok(text) => self.read_document(serde_json::Deserializer::from_str(text), found),
            Err(_) => self.read_document(serde_json::Deserializer::from_slice(bytes), found),
        }
    }

    fn read_document<'a, R: serde_json::de::Read<'a>>(
        &self,
        mut document: serde_json::Deserializer<R>,
        found: &mut [Option<Leaf<'a>>],
    ) -> Result<(), serde_json::Error> {
        Visit {
            node: &self.root,
            found,
        }
        .deserialize(&mut document)?;
        document.end()
    }
}

/// Reads one value at `node`: records it for the paths ending there and descends into the
/// children's keys, skipping the rest.
struct Visit<'n, 'f, 'a> {
    node: &'n Node,
    found: &'f mut [Option<Leaf<'a>>],
}

impl<'a> Visit<'_, '_, 'a> {
    /// The reader of this node's value whole, items and entries, for a path that reads them.
    fn item(&self) -> Item {
        Item {
            numbers_as_written: self.node.reading.numbers_as_written,
        }
    }

    fn found(&mut self, leaf: Leaf<'a>) {
        for &position in &self.node.below {
            self.found[position] = None;
        }
        // Moved into the last path ending here; copied only for the others (rarely any).
        if let Some((&last, others)) = self.node.ends.split_last() {
            for &position in others {
                self.found[position] = Some(leaf.clone());
            }
            self.found[last] = Some(leaf);
        }
    }

    fn number<E: de::Error>(&mut self, number: Option<Number>) -> Result<(), E> {
        let number = number.ok_or_else(|| E::custom("number out of range"))?;
        self.found(Leaf::Number(number));
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Visit<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.node.reading.numbers_as_written {
            deserializer.deserialize_newtype_struct(NUMBER_AS_WRITTEN, AsWritten(self))
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> TakesNumeral<'de> for Visit<'_, '_, 'de> {
    fn numeral(mut self, text: &'de str) {
        self.found(Leaf::Numeral(text));
    }
}

impl<'de> Visitor<'de> for Visit<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.found(Leaf::Null);
        Ok(())
    }

    fn visit_bool<E: de::Error>(mut self, flag: bool) -> Result<(), E> {
        self.found(Leaf::Bool(flag));
        Ok(())
    }

    fn visit_i64<E: de::Error>(mut self, n: i64) -> Result<(), E> {
        self.number(Some(Number::from(n)))
    }

    fn visit_u64<E: de::Error>(mut self, n: u64) -> Result<(), E> {
        self.number(Some(Number::from(n)))
    }

    fn visit_f64<E: de::Error>(mut self, n: f64) -> Result<(), E> {
        self.number(Number::from_f64(n))
    }

    fn visit_borrowed_str<E: de::Error>(mut self, text: &'de str) -> Result<(), E> {
        self.found(Leaf::Text(Cow::Borrowed(text)));
        Ok(())
    }

    fn visit_str<E: de::Error>(mut self, text: &str) -> Result<(), E> {
        self.found(Leaf::Text(Cow::Owned(text.to_owned())));
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        if self.node.reading.items {
            let entries = self.item().visit_map(map)?;
            self.found(entries);
            return Ok(());
        }
        self.found(Leaf::Object);
        while let Some(child) = map.next_key_seed(Child(&self.node.children))? {
            match child {
                Some(node) => map.next_value_seed(Visit {
                    node,
                    found: &mut *self.found,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut items: A) -> Result<(), A::Error> {
        if self.node.reading.items {
            let read = self.item().visit_seq(items)?;
            self.found(read);
            return Ok(());
        }
        self.found(Leaf::Array);
        for position in 0.. {
            let child = self
                .node
                .children
                .iter()
                .find(|child| child.index == Some(position));
            let more = match child {
                Some(node) => items
                    .next_element_seed(Visit {
                        node,
                        found: &mut *self.found,
                    })?
                    .is_some(),
                None => items.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                break;
            }
        }
        Ok(())
    }
}

/// Reads an item of an array or a value of an object whose items a path reads, whole: a
/// scalar, or an array's items and an object's entries in turn (a collection of collections, a
/// list of user types). The readers bound the nesting (128 levels).
#[derive(Clone, Copy)]
struct Item {
    /// A number as its text ([`Reading::numbers_as_written`]).
    numbers_as_written: bool,
}

impl<'de> DeserializeSeed<'de> for Item {
    type Value = Leaf<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Leaf<'de>, D::Error> {
        if self.numbers_as_written {
            deserializer.deserialize_newtype_struct(NUMBER_AS_WRITTEN, AsWritten(self))
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> TakesNumeral<'de> for Item {
    fn numeral(self, text: &'de str) -> Leaf<'de> {
        Leaf::Numeral(text)
    }
}

/// A seed that takes a number as the text the record writes it.
trait TakesNumeral<'de>: Visitor<'de> {
    /// The value for a number written `text`.
    fn numeral(self, text: &'de str) -> Self::Value;
}

/// Reads a value for `S` with its numbers as written ([`NUMBER_AS_WRITTEN`]): the SDK's reader
/// hands a number's text to `visit_borrowed_bytes` and visits anything else as usual;
/// serde_json, which does not know the name, visits the newtype, whose text is then read as a
/// `RawValue`, and read again by `S` unless it is a number.
struct AsWritten<S>(S);

impl<'de, S: TakesNumeral<'de>> Visitor<'de> for AsWritten<S> {
    type Value = S::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_borrowed_bytes<E: de::Error>(self, text: &'de [u8]) -> Result<Self::Value, E> {
        let text = std::str::from_utf8(text).map_err(E::custom)?;
        Ok(self.0.numeral(text))
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        let text = <&'de RawValue>::deserialize(deserializer)?.get();
        if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
            return Ok(self.0.numeral(text));
        }
        // Visited directly: read again as a seed, it would ask for its numbers as written.
        let mut value = serde_json::Deserializer::from_str(text);
        de::Deserializer::deserialize_any(&mut value, self.0).map_err(de::Error::custom)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit()
    }

    fn visit_bool<E: de::Error>(self, flag: bool) -> Result<Self::Value, E> {
        self.0.visit_bool(flag)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        self.0.visit_i64(n)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        self.0.visit_u64(n)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        self.0.visit_f64(n)
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        self.0.visit_borrowed_str(text)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        self.0.visit_str(text)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, items: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(items)
    }
}

impl<'de> Visitor<'de> for Item {
    type Value = Leaf<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Null)
    }

    fn visit_bool<E: de::Error>(self, flag: bool) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Bool(flag))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Number(Number::from(n)))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Number(Number::from(n)))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Leaf<'de>, E> {
        Number::from_f64(n)
            .map(Leaf::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Text(Cow::Owned(text.to_owned())))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Leaf<'de>, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            entries.push((key, map.next_value_seed(self)?));
        }
        Ok(Leaf::Entries(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Leaf<'de>, A::Error> {
        let mut read = Vec::new();
        while let Some(item) = items.next_element_seed(self)? {
            read.push(item);
        }
        Ok(Leaf::Items(read))
    }
}

/// Reads an object's key, borrowed from the record unless it holds escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }
}

/// Reads an object's key as the child it leads to, if any, without keeping the key.
struct Child<'n>(&'n [Node]);

impl<'de, 'n> DeserializeSeed<'de> for Child<'n> {
    type Value = Option<&'n Node>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, 'n> Visitor<'de> for Child<'n> {
    type Value = Option<&'n Node>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|child| child.key == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// What the set reads, as JSON values, beside what a pointer finds in the parsed document
    /// (objects and arrays by kind).
    fn both(document: &str, paths: &[&str]) -> (Vec<Option<Value>>, Vec<Option<Value>>) {
        let paths: Vec<FieldPath> = paths.iter().map(|p| FieldPath::parse(p)).collect();
        let read = FieldSet::new(&paths)
            .read(document.as_bytes())
            .unwrap()
            .into_iter()
            .map(|leaf| leaf.map(|leaf| as_value(&leaf)))
            .collect();
        let parsed: Value = serde_json::from_str(document).unwrap();
        let found = paths
            .iter()
            .map(|path| path.find(&parsed).map(kind_only))
            .collect();
        (read, found)
    }

    fn as_value(leaf: &Leaf) -> Value {
        match leaf {
            Leaf::Null => Value::Null,
            Leaf::Bool(flag) => Value::Bool(*flag),
            Leaf::Number(number) => Value::Number(number.clone()),
            Leaf::Numeral(text) => Value::from(format!("<number {text}>")),
            Leaf::Text(text) => Value::from(text.as_ref()),
            Leaf::Object => Value::from("<object>"),
            Leaf::Array => Value::from("<array>"),
            Leaf::Items(items) => Value::Array(items.iter().map(as_value).collect()),
            Leaf::Entries(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(key, leaf)| (key.to_string(), as_value(leaf)))
                    .collect(),
            ),
        }
    }

    fn kind_only(value: &Value) -> Value {
        match value {
            Value::Object(_) => Value::from("<object>"),
            Value::Array(_) => Value::from("<array>"),
            scalar => scalar.clone(),
        }
    }

    #[test]
    fn reads_what_a_pointer_finds_in_the_parsed_document() {
        let document = r#"{
            "a": {"b/c": 1, "d~e": 2.5, "": "empty", "list": [10, 20, {"x": "y"}], "t": true},
            "0": "zero", "esc\"aped": "q\"uote\u00e9", "n": null, "big": 18446744073709551615,
            "neg": -7, "skip": {"deep": [1, [2, {"k": "v"}]]}
        }"#;
        let paths = [
            "/a",
            "/a/b~1c",
            "/a/d~0e",
            "/a/",
            "/a/list",
            "/a/list/0",
            "/a/list/2/x",
            "/a/list/01",
            "/a/list/+1",
            "/a/list/3",
            "/a/list/-",
            "/a/t",
            "/0",
            "/esc\"aped",
            "/n",
            "/big",
            "/neg",
            "/a/b~1c/z",
            "/missing/deeper",
            "a.list.1",
            "",
        ];
        let (read, found) = both(document, &paths);
        assert_eq!(read, found);
        assert!(
            read.iter().filter(|v| v.is_some()).count() >= 12,
            "{read:?}"
        );
    }

    #[test]
    fn the_fast_reader_finds_what_serde_json_finds() {
        let paths: Vec<FieldPath> = ["id", "a.b", "a.list.1", "n", "x", "deep.k", "e"]
            .iter()
            .map(|p| FieldPath::parse(p))
            .collect();
        let set = FieldSet::new(&paths);
        let documents = [
            r#"{"id": "u1", "a": {"b": 2.5e3, "list": [0, -0.0, 3]}, "n": null, "x": true}"#,
            r#"  {"id":"Zo\u00eb \"q\" \\ \/","a":{"b":-12,"list":[{},[],"s"]},"x":false}  "#,
            r#"{"id": 18446744073709551615, "a": {"b": -9223372036854775808}, "n": 1e300}"#,
            r#"{"id": "a", "id": "b", "deep": {"k": [1, {"k": 2}]}, "deep": {"k": "v"}}"#,
            r#"{"skip": [[[[{"k": "\ud83d\ude00"}]]]], "e": "", "a": [1, 2], "id": 0.1}"#,
            "{\"id\": \"caf\u{e9} \u{1f600}\", \"x\": \"\\t\\n\"}",
            r#"[{"id": 1}]"#,
            r#""text""#,
            "12",
        ];
        for document in documents {
            assert!(
                weir_plugin::json::read_seed(
                    document.as_bytes(),
                    std::marker::PhantomData::<IgnoredAny>
                )
                .is_some(),
                "the SDK's reader takes {document}"
            );
            let fast = set.read(document.as_bytes()).unwrap();
            let slow = set.read_with_serde_json(document.as_bytes()).unwrap();
            assert_eq!(fast, slow, "{document}");
        }
        // Deep nesting (past the SDK reader's 128 levels, so it falls back) reads as serde_json
        // reads it, where the path leads and where the value is skipped.
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for depth in [100, 200] {
            for document in [
                format!(r#"{{"id": {}}}"#, deep(depth)),
                format!(r#"{{"id": 1, "x": {}}}"#, deep(depth)),
            ] {
                let fast = set.read(document.as_bytes()).map_err(|e| e.to_string());
                let slow = set
                    .read_with_serde_json(document.as_bytes())
                    .map_err(|e| e.to_string());
                assert_eq!(fast, slow, "{document}");
            }
        }
        // A path that leads 150 levels down: serde_json's recursion limit refuses it, and the
        // set with it.
        let down = FieldSet::new(&[FieldPath::parse(&vec!["0"; 150].join("."))]);
        let document = deep(200);
        assert!(down.read_with_serde_json(document.as_bytes()).is_err());
        assert_eq!(
            down.read(document.as_bytes()).map_err(|e| e.to_string()),
            down.read_with_serde_json(document.as_bytes())
                .map_err(|e| e.to_string())
        );
        // Text without escapes is borrowed on the fast path too.
        let found = set.read(br#"{"id": "plain"}"#).unwrap();
        assert!(matches!(found[0], Some(Leaf::Text(Cow::Borrowed("plain")))));
    }

    #[test]
    fn a_path_read_with_items_gets_an_arrays_items_and_an_objects_entries_from_either_reader() {
        let paths = [
            FieldPath::parse("tags"),
            FieldPath::parse("scores"),
            FieldPath::parse("tags.0"),
            FieldPath::parse("name"),
            FieldPath::parse("plain"),
        ];
        let set = FieldSet::reading(paths.iter().zip([true, true, false, true, false].map(
            |items| Reading {
                items,
                numbers_as_written: false,
            },
        )));
        let document = r#"{"tags": ["a", "b\u0063", 1, true, null, {"x": [1]}, [2, [3]]],
            "scores": {"k1": 1.5, "k\u0032": "v", "k1": 2}, "name": "scalar", "plain": [1]}"#;
        let fast = set.read(document.as_bytes()).unwrap();
        let slow = set.read_with_serde_json(document.as_bytes()).unwrap();
        assert_eq!(fast, slow);
        let text = |t: &'static str| Leaf::Text(Cow::Borrowed(t));
        assert_eq!(
            fast[0],
            Some(Leaf::Items(vec![
                text("a"),
                Leaf::Text("bc".into()),
                Leaf::Number(1.into()),
                Leaf::Bool(true),
                Leaf::Null,
                Leaf::Entries(vec![(
                    "x".into(),
                    Leaf::Items(vec![Leaf::Number(1.into())])
                )]),
                Leaf::Items(vec![
                    Leaf::Number(2.into()),
                    Leaf::Items(vec![Leaf::Number(3.into())])
                ]),
            ])),
            "items read whole, nested ones too"
        );
        assert!(
            matches!(&fast[0], Some(Leaf::Items(items)) if matches!(items[0], Leaf::Text(Cow::Borrowed("a"))))
        );
        assert_eq!(
            fast[1],
            Some(Leaf::Entries(vec![
                ("k1".into(), Leaf::Number(Number::from_f64(1.5).unwrap())),
                ("k2".into(), text("v")),
                ("k1".into(), Leaf::Number(2.into())),
            ])),
            "every entry in the record's order, a key given twice twice"
        );
        assert_eq!(fast[2], None, "below a path read with items");
        assert_eq!(fast[3], Some(text("scalar")), "a scalar is a scalar");
        assert_eq!(
            fast[4],
            Some(Leaf::Array),
            "only the paths that ask get items"
        );
        assert_eq!(fast[0].as_ref().unwrap().to_string(), "an array");
        // Empty containers, and an item that is not JSON refuses the record.
        let found = set.read(br#"{"tags": [], "scores": {}}"#).unwrap();
        assert_eq!(found[0], Some(Leaf::Items(Vec::new())));
        assert_eq!(found[1], Some(Leaf::Entries(Vec::new())));
        assert!(set.read(br#"{"tags": [1, tru]}"#).is_err());
    }

    #[test]
    fn a_path_read_with_numbers_as_written_gets_their_text_from_either_reader() {
        let as_written = |items| Reading {
            items,
            numbers_as_written: true,
        };
        let paths = [
            FieldPath::parse("price"),
            FieldPath::parse("big"),
            FieldPath::parse("name"),
            FieldPath::parse("list"),
            FieldPath::parse("by"),
            FieldPath::parse("nested"),
            FieldPath::parse("nested.n"),
            FieldPath::parse("plain"),
        ];
        let readings = [
            as_written(false),
            as_written(false),
            as_written(false),
            as_written(true),
            as_written(true),
            as_written(false),
            as_written(false),
            Reading::default(),
        ];
        let set = FieldSet::reading(paths.iter().zip(readings));
        let document = r#"{"price": 12.50, "big": -123456789012345678901234567890e-3,
            "name": "12.50", "list": [1e400, "x", null, 0.10], "by": {"k": 2.50, "j": [1]},
            "nested": {"n": 1.0}, "plain": 12.50}"#;
        let fast = set.read(document.as_bytes()).unwrap();
        let slow = set.read_with_serde_json(document.as_bytes()).unwrap();
        assert_eq!(fast, slow);
        assert_eq!(
            fast,
            [
                Some(Leaf::Numeral("12.50")),
                Some(Leaf::Numeral("-123456789012345678901234567890e-3")),
                Some(Leaf::Text("12.50".into())),
                Some(Leaf::Items(vec![
                    Leaf::Numeral("1e400"),
                    Leaf::Text("x".into()),
                    Leaf::Null,
                    Leaf::Numeral("0.10"),
                ])),
                Some(Leaf::Entries(vec![
                    ("k".into(), Leaf::Numeral("2.50")),
                    ("j".into(), Leaf::Items(vec![Leaf::Numeral("1")])),
                ])),
                Some(Leaf::Object),
                Some(Leaf::Numeral("1.0")),
                Some(Leaf::Number(Number::from_f64(12.5).unwrap())),
            ]
        );
        assert!(matches!(fast[2], Some(Leaf::Text(Cow::Borrowed(_)))));
        assert_eq!(fast[0].as_ref().unwrap().to_string(), "12.50");
        assert_eq!(
            fast[0].clone().unwrap().into_text().as_deref(),
            Some("12.50")
        );
        // Nothing that is not JSON, from either reader; a document the SDK's reader refuses
        // (nested past its depth) reads the same through serde_json.
        for bad in [r#"{"price": 01}"#, r#"{"price": 1.}"#, r#"{"price": -}"#] {
            assert!(set.read(bad.as_bytes()).is_err(), "{bad}");
        }
        let deep = format!(
            r#"{{"x": {}{}, "price": 0.50}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(
            set.read(deep.as_bytes()).unwrap()[0],
            Some(Leaf::Numeral("0.50"))
        );
    }

    #[test]
    fn a_key_given_twice_counts_the_last_time_as_in_a_parsed_document() {
        let paths = ["/a/b", "/a", "/c"];
        for document in [
            r#"{"a": {"b": 1}, "a": "text", "c": 1, "c": 2}"#,
            r#"{"a": "text", "a": {"b": 1}}"#,
            r#"{"a": {"b": 1}, "a": {"z": 2}}"#,
        ] {
            let (read, found) = both(document, &paths);
            assert_eq!(read, found, "{document}");
        }
    }

    #[test]
    fn two_paths_to_one_field_both_get_it_and_text_borrows_the_record() {
        let paths = [FieldPath::parse("id"), FieldPath::parse("/id")];
        let bytes = br#"{"id": "u1", "other": "\u0041"}"#;
        let read = FieldSet::new(&paths).read(bytes).unwrap();
        assert_eq!(read[0], Some(Leaf::Text("u1".into())));
        assert_eq!(read[0], read[1]);
        assert!(matches!(read[0], Some(Leaf::Text(Cow::Borrowed(_)))));
    }

    #[test]
    fn a_value_that_is_not_json_is_refused_even_where_no_path_goes() {
        let set = FieldSet::new(&[FieldPath::parse("id")]);
        for bad in [
            &br#"{"id": "a", "rest": [1, 2"#[..],
            br#"{"id": "a"} trailing"#,
            br#"{"id": "a", "x": tru}"#,
            b"",
        ] {
            assert!(set.read(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            set.read(b"[1]").unwrap(),
            vec![None],
            "not an object: no field"
        );
        assert_eq!(set.read(b"\"id\"").unwrap(), vec![None]);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_where_serde_json_refuses_them() {
        let set = FieldSet::new(&[FieldPath::parse("id")]);
        let bad = b"{\"id\": \"a\xff\"}";
        let ours = set.read(bad).unwrap_err().to_string();
        let theirs = serde_json::from_slice::<Value>(bad)
            .unwrap_err()
            .to_string();
        assert_eq!(ours, theirs);
        // As before: serde_json does not check the text of a field it skips.
        let skipped = set.read(b"{\"x\": \"\xc3\", \"id\": 1}").unwrap();
        assert!(matches!(&skipped[0], Some(Leaf::Number(n)) if n.as_u64() == Some(1)));
        // Text beyond ASCII and escapes read as before, borrowed where nothing was escaped.
        let found = set.read("{\"id\": \"Zoë\"}".as_bytes()).unwrap();
        assert!(
            matches!(&found[0], Some(Leaf::Text(Cow::Borrowed("Zoë")))),
            "{found:?}"
        );
        let found = set.read(br#"{"id": "a\u00e9\"b"}"#).unwrap();
        assert!(
            matches!(&found[0], Some(Leaf::Text(text)) if text == "aé\"b"),
            "{found:?}"
        );
    }

    #[test]
    fn leaves_print_as_json_and_read_as_text() {
        let text = Leaf::Text("say \"hi\"".into());
        assert_eq!(text.to_string(), r#""say \"hi\"""#);
        assert_eq!(text.into_text().as_deref(), Some("say \"hi\""));
        assert_eq!(
            Leaf::Number(Number::from(12)).into_text().as_deref(),
            Some("12")
        );
        assert_eq!(Leaf::Bool(true).into_text().as_deref(), Some("true"));
        assert_eq!(Leaf::Object.to_string(), "an object");
        for none in [Leaf::Null, Leaf::Object, Leaf::Array] {
            assert_eq!(none.into_text(), None);
        }
    }
}
