//! The reader agrees with serde_json: whatever it reads, serde_json reads to the same value;
//! whatever serde_json refuses, it refuses; and it reads ordinary documents itself, so that the
//! fast path is taken. (`Box<RawValue>` is not tested: the workspace's serde_json lacks the
//! `raw_value` feature.)

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{Debug, Write};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::from_slice;
use crate::json::{Field, List, Nested};
use crate::test_random::Random;

/// A typed document borrowing its strings.
#[derive(Debug, PartialEq, Deserialize)]
struct Person<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    age: u32,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default, borrow)]
    nick: Option<&'a str>,
    #[serde(default)]
    score: f64,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Strict {
    id: u64,
    flag: bool,
    #[serde(default)]
    ratio: Option<f32>,
}

#[derive(Debug, PartialEq, Deserialize)]
enum E {
    A,
    B(u32),
    C { x: i8 },
    D(u8, String),
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "type")]
enum Tagged {
    Circle { r: f64 },
    Square { side: u32, label: Option<String> },
    Empty,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(untagged)]
enum Untagged {
    Int(i64),
    Float(f64),
    Text(String),
    Pair(u8, bool),
    Point { x: i8, y: i8 },
    List(Vec<Untagged>),
}

/// Structs whose every field is `#[serde(default, borrow)]`.
macro_rules! lenient {
    ($($name:ident<$a:lifetime> { $($field:ident: $type:ty,)* })*) => {$(
        #[derive(Debug, Default, PartialEq, Deserialize)]
        struct $name<$a> { $(#[serde(default, borrow)] $field: $type,)* }
    )*};
}

// The user-profile plugin's document (plugins/user-profile/src/lib.rs), field for field.
lenient! {
    User<'a> {
        results: List<Nested<User<'a>>>, gender: Field<'a>, name: Nested<Name<'a>>,
        location: Nested<Location<'a>>, email: Field<'a>, login: Nested<Login<'a>>,
        dob: Nested<Dated<'a>>, registered: Nested<Dated<'a>>, phone: Field<'a>,
        picture: Nested<Picture<'a>>,
    }
    Name<'a> { first: Field<'a>, last: Field<'a>, }
    Location<'a> {
        street: Nested<Street<'a>>, city: Field<'a>, state: Field<'a>, country: Field<'a>,
        postcode: Field<'a>,
    }
    Street<'a> { number: Field<'a>, name: Field<'a>, }
    Login<'a> { uuid: Field<'a>, username: Field<'a>, }
    Dated<'a> { date: Field<'a>, }
    Picture<'a> { medium: Field<'a>, }
}

/// A type that reads nothing from the deserializer, so that only the reader's own checks (a
/// comma between items, none before the closing bracket) stand between a malformed container
/// and a value.
#[derive(Debug, PartialEq)]
struct Nothing;

impl<'de> Deserialize<'de> for Nothing {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Nothing)
    }
}

/// The reader on text (the tests build documents as text; bytes that are not UTF-8 have their
/// own test).
fn from_str<'a, T: Deserialize<'a>>(text: &'a str) -> Option<T> {
    from_slice(text.as_bytes())
}

/// The document for a failure message, cut short when long.
fn shown(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
        None => format!("{text:?}"),
    }
}

/// The contract on one document for `T`, values compared by `same`: when the reader gives a
/// value, serde_json gives one too and they are the same. Whether the reader gave a value.
fn agrees_by<'a, T>(text: &'a str, same: impl Fn(&T, &T) -> bool) -> bool
where
    T: Deserialize<'a> + Debug,
{
    let name = std::any::type_name::<T>();
    match (from_str::<T>(text), serde_json::from_str::<T>(text)) {
        (Some(ours), Ok(theirs)) if same(&ours, &theirs) => true,
        (Some(ours), Ok(theirs)) => {
            panic!("{name}: {}: {ours:?}, serde_json {theirs:?}", shown(text))
        }
        (Some(ours), Err(e)) => panic!("{name}: read {} as {ours:?}; serde_json: {e}", shown(text)),
        (None, _) => false,
    }
}

fn agrees<'a, T: Deserialize<'a> + PartialEq + Debug>(text: &'a str) -> bool {
    agrees_by(text, T::eq)
}

/// Asserts that the reader reads `text` (the fast path is taken), as serde_json does.
fn reads<'a, T: Deserialize<'a> + PartialEq + Debug>(text: &'a str) {
    let name = std::any::type_name::<T>();
    assert!(agrees::<T>(text), "{name} not read: {}", shown(text));
}

/// Values are equal and print the same, so that `-0.0` is not `0.0` and `1.0` is not `1`.
fn same_value(ours: &Value, theirs: &Value) -> bool {
    ours == theirs && format!("{ours}") == format!("{theirs}")
}

fn same_bits(ours: &f64, theirs: &f64) -> bool {
    ours.to_bits() == theirs.to_bits()
}

/// The contract for every target type on one document; whether the reader read it as a `Value`.
fn agrees_for_all(text: &str) -> bool {
    macro_rules! each {
        ($($type:ty),*) => { $(agrees::<$type>(text);)* };
    }
    each! { IgnoredAny, Field, Nested<User>, User, Person, Strict, E, Tagged, Untagged }
    each! { Vec<Nothing>, BTreeMap<String, Nothing>, Option<Nothing> }
    each! { Vec<Value>, u8, u32, u64, i64, i128, u128, bool, String, char, (), Option<u32> }
    each! { Vec<i64>, (u8, String), BTreeMap<String, i32>, HashMap<u32, bool> }
    agrees_by::<f32>(text, |a, b| a.to_bits() == b.to_bits());
    agrees_by::<f64>(text, same_bits);
    agrees_by::<Value>(text, same_value)
}

/// [`agrees_for_all`], and the reader reads the document as a `Value` whenever serde_json does.
fn agrees_and_reads(text: &str) {
    let read = agrees_for_all(text);
    assert!(
        read || serde_json::from_str::<Value>(text).is_err(),
        "left: {}",
        shown(text)
    );
}

/// Asserts that the reader reads `text` as a `Value`, as serde_json does.
fn reads_value(text: &str) {
    assert!(
        agrees_by::<Value>(text, same_value),
        "left to serde_json: {}",
        shown(text)
    );
}

/// The places a fragment is tried: alone, in arrays, as an object's value, read or skipped,
/// and as each kind of typed document's field.
fn contexts(fragment: &str) -> [String; 10] {
    let f = fragment;
    [
        f.to_owned(),
        format!("[{f}]"),
        format!("[1, {f}, 2]"),
        format!(r#"{{"a": {f}}}"#),
        format!(r#"{{"name": "n", "age": 1, "zz": {f}}}"#),
        format!(r#"{{"name": {f}, "age": {f}, "score": {f}, "nick": {f}}}"#),
        format!(r#"{{"results": [{{"name": {{"first": {f}}}, "zz": {f}}}]}}"#),
        format!(r#"{{"id": 1, "flag": true, "ratio": {f}}}"#),
        format!(r#"{{"B": {f}}}"#),
        format!(r#"{{"type": "Circle", "r": {f}}}"#),
    ]
}

const SPACES: &[&str] = &["", " ", "  ", "\n", "\t", "\r\n", "\n    ", " \t "];
#[rustfmt::skip]
const KEYS: &[&str] = &[
    "name", "age", "tags", "nick", "score", "id", "flag", "ratio", "type", "r", "side", "x", "y",
    "A", "B", "C", "D", "results", "gender", "location", "street", "number", "postcode", "login",
];
#[rustfmt::skip]
const RAW: &[&str] = &[
    "é", "東", "🦀", "\u{80}", "\u{7ff}", "\u{800}", "\u{ffff}", "\u{10000}", "\u{10ffff}",
    "\u{7f}", "\u{2028}", " ", "'", "/",
];
#[rustfmt::skip]
const ESCAPES: &[&str] = &[
    r#"\""#, r"\\", r"\/", r"\b", r"\f", r"\n", r"\r", r"\t", r"\u0000", r"\u001f", r"\u0041",
    r"\u00E9", r"\uFFFF", r"\ud83e\udd80", r"\uD83E\uDD80", r"\udbff\udfff", r"\ud800\udc00",
];
/// Bytes a mutation writes: structure, number and literal starts, and control bytes.
const MUTANTS: &[u8] = b"{}[]\",:\\ 0-1eE.+tfn\x00\x01\x08\x0b\x0c\x1f\t\n\r\x7f";

impl Random {
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn digits(&mut self, out: &mut String, count: usize) {
        (0..count).for_each(|_| out.push(char::from(b'0' + self.below(10) as u8)));
    }

    /// A JSON number; `wild` allows long digit runs and exponents out of `f64`'s range.
    fn number(&mut self, out: &mut String, wild: bool) {
        let most = if wild { 40 } else { 18 };
        out.push_str(self.pick(&["", "-"]));
        if self.below(4) == 0 {
            out.push('0');
        } else {
            out.push(char::from(b'1' + self.below(9) as u8));
            let count = self.below(most);
            self.digits(out, count);
        }
        if self.below(3) == 0 {
            out.push('.');
            let count = 1 + self.below(most - 1);
            self.digits(out, count);
        }
        if self.below(4) == 0 {
            out.push_str(self.pick(&["e", "E", "e+", "e-", "E+", "E-"]));
            let count = 1 + self.below(if wild { 3 } else { 2 });
            self.digits(out, count);
        }
    }

    /// A JSON string: ASCII runs of every length (so that what follows lands at every offset of
    /// an eight-byte word), escapes, surrogate pairs and multi-byte characters.
    fn string(&mut self, out: &mut String) {
        out.push('"');
        let most = if self.below(8) == 0 { 60 } else { 10 };
        for _ in 0..self.below(most) {
            match self.below(6) {
                0 => out.push_str(self.pick(RAW)),
                1 => out.push_str(self.pick(ESCAPES)),
                2 => {
                    let code = self.below(0xF800);
                    let code = if code >= 0xD800 { code + 0x800 } else { code };
                    let _ = write!(out, "\\u{code:04x}");
                }
                3 => {
                    let (high, low) = (0xD800 + self.below(0x400), 0xDC00 + self.below(0x400));
                    let _ = write!(out, "\\u{high:04X}\\u{low:04x}");
                }
                _ => out.push_str(&"abcdefghijklmnopq"[..1 + self.below(16)]),
            }
        }
        out.push('"');
    }

    /// A value nested at most `depth` deep, often under keys the typed documents read.
    fn value(&mut self, out: &mut String, depth: u32, wild: bool) {
        if depth == 0 || self.below(5) >= 2 {
            match self.below(6) {
                0 => out.push_str(self.pick(&["null", "true", "false"])),
                1 | 2 => self.number(out, wild),
                _ => self.string(out),
            }
            return;
        }
        let object = self.below(2) == 0;
        let len = if self.below(6) == 0 { 1 } else { self.below(5) };
        out.push(if object { '{' } else { '[' });
        for i in 0..len {
            out.push_str(self.pick(SPACES));
            if i > 0 {
                out.push(',');
                out.push_str(self.pick(SPACES));
            }
            if object {
                match self.below(2) {
                    0 => _ = write!(out, "\"{}\"", self.pick(KEYS)),
                    _ => self.string(out),
                }
                out.push_str(self.pick(SPACES));
                out.push(':');
                out.push_str(self.pick(SPACES));
            }
            self.value(out, depth - 1, wild);
        }
        out.push_str(self.pick(SPACES));
        out.push(if object { '}' } else { ']' });
    }

    /// A document nested up to 20 deep, with whitespace around it.
    fn document(&mut self, wild: bool) -> String {
        let mut out = self.pick(SPACES).to_owned();
        let depth = 1 + self.below(20) as u32;
        self.value(&mut out, depth, wild);
        out.push_str(self.pick(SPACES));
        out
    }

    /// `text` with one byte replaced, inserted or removed, half the time at a structural byte;
    /// `None` when that breaks UTF-8.
    fn mutate(&mut self, text: &str) -> Option<String> {
        let mut bytes = text.as_bytes().to_vec();
        let mut at = self.below(bytes.len() + 1);
        if self.below(2) == 0 {
            at += bytes[at..]
                .iter()
                .position(|b| b"{}[],:\"\\".contains(b))
                .unwrap_or(0);
        }
        let byte = self.pick(MUTANTS);
        match self.below(4) {
            _ if at == bytes.len() => bytes.push(byte),
            0 | 1 => bytes[at] = byte,
            2 => bytes.insert(at, byte),
            _ => drop(bytes.remove(at)),
        }
        String::from_utf8(bytes).ok()
    }

    /// A randomuser.me result, sometimes with a field absent or of another type.
    fn user(&mut self) -> Value {
        const NAMES: &[&str] = &["Zoë", "Наталья", "O'Brien", "D\"Arcy", "B\\s", "T\t"];
        let gender = self.pick(&["female", "male"]);
        let postcode = [json!(self.below(99999)), json!("W1 2AB")][self.below(2)].clone();
        let mut user = json!({
            "gender": gender,
            "name": { "title": "Ms", "first": self.pick(NAMES), "last": self.pick(NAMES) },
            "location": {
                "street": { "number": self.below(9999), "name": self.pick(&["Main St", "Straße"]) },
                "city": "Bergen", "state": "Vestland", "country": "Norway", "postcode": postcode,
                "coordinates": { "latitude": "-69.8246", "longitude": "134.8719" }
            },
            "email": format!("user{}@example.com", self.below(1000)),
            "login": {
                "uuid": format!("{:016x}-{:04x}", self.next(), self.below(0x10000)),
                "username": "bluebird123", "password": "hunter2", "md5": "e1e0d7a2b2c7f4d1f0b1"
            },
            "dob": { "date": "1990-05-01T10:00:00.000Z", "age": 36 },
            "registered": { "date": "2012-03-04T05:06:07.000Z", "age": 14.5 },
            "phone": "55 12 34 56",
            "id": { "name": "PPS", "value": ([json!(null), json!("1T")][self.below(2)]) },
            "picture": { "medium": format!("https://randomuser.me/api/portraits/med/{gender}/1.jpg") },
            "nat": "IE"
        });
        if self.below(3) == 0 {
            let paths = ["/name", "/name/first", "/location/city", "/results"];
            let (parent, leaf) = self.pick(&paths).rsplit_once('/').unwrap_or_default();
            let others = [json!(null), json!(-1.5), json!("s"), json!([1, {"a": 2}])];
            let other = self.below(others.len() + 1);
            if let Some(Value::Object(map)) = user.pointer_mut(parent) {
                match others.get(other) {
                    Some(other) => drop(map.insert(leaf.to_owned(), other.clone())),
                    None => drop(map.remove(leaf)),
                }
            }
        }
        user
    }

    /// A randomuser.me response holding 0 to 3 results.
    fn response(&mut self) -> Value {
        let results: Vec<Value> = (0..self.below(4)).map(|_| self.user()).collect();
        let info = json!({ "seed": "weir", "results": results.len(), "page": 1, "version": "1.4" });
        json!({ "results": results, "info": info })
    }
}

/// Coverage: every random ordinary document (any whitespace, nesting up to 20, escapes,
/// multi-byte text, integers and floats), as written and pretty-printed, is read, and read to
/// what serde_json reads for every type.
#[test]
fn ordinary_random_documents_are_read_like_serde_json() {
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    for _ in 0..800 {
        let text = random.document(false);
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("the generator wrote bad JSON ({e}): {}", shown(&text)));
        let pretty = serde_json::to_string_pretty(&value).expect("prints");
        for text in [&text, &pretty] {
            assert!(agrees_for_all(text), "left to serde_json: {}", shown(text));
            reads::<IgnoredAny>(text);
            reads::<Field>(text);
        }
    }
}

/// randomuser.me results and responses, compact and pretty, are read into the user-profile
/// plugin's lenient `User` (and as a `Value`) exactly as serde_json reads them.
#[test]
fn randomuser_documents_are_read_like_serde_json() {
    let mut random = Random(0x2545_F491_4F6C_DD1D);
    for round in 0..150 {
        let document = [random.user(), random.response()][round % 2].clone();
        let pretty = serde_json::to_string_pretty(&document).expect("prints");
        for text in [&document.to_string(), &pretty] {
            reads::<Nested<User>>(text);
            reads::<User>(text);
            reads_value(text);
        }
    }
}

/// Plain documents of each primitive, container and typed document are read.
#[test]
fn plain_values_of_every_type_are_read() {
    reads::<u8>("255");
    reads::<u32>(" 4294967295\n");
    reads::<u64>("18446744073709551615");
    reads::<i64>("-9223372036854775808");
    assert!(agrees_by::<f64>("-1.5e3", same_bits));
    reads::<bool>("false");
    reads::<String>(r#""a\nb\u00e9""#);
    reads::<char>(r#""é""#);
    reads::<Option<u32>>("null");
    reads::<Option<u32>>("7");
    reads::<Vec<i64>>("[1, -2,\n3]");
    reads::<(u8, String)>(r#"[1,"x"]"#);
    reads::<BTreeMap<String, i32>>(r#"{"a": -1, "b\"": 2}"#);
    reads::<Person>(r#"{"name":"Zoë","age":36,"tags":["a","b"],"nick":"z","score":0.5}"#);
    reads::<Person>(r#"{"zz":[{"q":null}],"age":1,"name":"\"A\""}"#);
    reads::<Strict>(r#"{"id": 3, "flag": true, "ratio": 0.25}"#);
    reads::<E>(r#"{"C": {"x": -3}}"#);
}

/// Random strings are read like serde_json reads them as keys and values, read or skipped.
#[test]
fn random_strings_are_read_like_serde_json() {
    let mut random = Random(0xD1B5_4A32_D192_ED03);
    for _ in 0..1500 {
        let mut s = String::new();
        random.string(&mut s);
        reads::<String>(&s);
        reads::<BTreeMap<String, String>>(&format!("{{{s}: {s}}}"));
        for doc in [
            format!(r#"{{"name": {s}, "age": 7, "nick": {s}, "zz": {s}}}"#),
            format!("[{s},{s}]"),
        ] {
            reads::<IgnoredAny>(&doc);
            reads_value(&doc);
            agrees::<Person>(&doc);
            agrees::<(u8, String)>(&doc);
        }
    }
}

/// Strings are borrowed exactly when serde_json borrows them (those without escapes), so that
/// `Cow<str>` fields cost no copy on the fast path (nice to have, not the contract).
#[test]
fn strings_are_borrowed_when_serde_json_borrows_them() {
    let borrowed = |field: &Field| matches!(field, Field::Str(Cow::Borrowed(_)));
    let mut random = Random(0x0123_4567_89AB_CDEF);
    for _ in 0..300 {
        let mut s = String::new();
        random.string(&mut s);
        let text = format!(r#"{{"name": {s}, "age": 1, "gender": {s}}}"#);
        let ours = from_str::<Person>(&text).expect("read");
        let theirs = serde_json::from_str::<Person>(&text).expect("read");
        let cow = |person: &Person| matches!(person.name, Cow::Borrowed(_));
        assert_eq!(cow(&ours), cow(&theirs), "{text}");
        let ours = from_str::<User>(&text).expect("read");
        let theirs = serde_json::from_str::<User>(&text).expect("read");
        assert_eq!(borrowed(&ours.gender), borrowed(&theirs.gender), "{text}");
    }
}

/// Unescaped control bytes are refused in strings read, keys and skipped strings, at every
/// offset of the eight-byte scan (also after an escape); DEL is not a control byte.
#[test]
fn control_bytes_in_strings_are_refused_at_every_offset() {
    for byte in (0u8..0x20).chain([0x7f]) {
        for at in 0..=17 {
            let ascii = &"abcdefghijklmnopqrstu"[..at];
            // Unescaped, and after an escape and multi-byte characters (7 bytes in).
            for before in [ascii.to_owned(), format!("é\\n東{ascii}")] {
                let s = format!("\"{before}{}xyz\"", char::from(byte));
                let mut read = agrees_for_all(&s);
                read &= agrees_for_all(&format!("{{{s}: 1}}"));
                read &= agrees_for_all(&format!(r#"{{"name": {s}, "age": 1, "zz": {s}}}"#));
                assert_eq!(read, byte == 0x7f, "{s:?}");
            }
        }
    }
}

/// Malformed JSON of every kind is refused alone and in every context.
#[test]
fn malformed_documents_are_refused() {
    #[rustfmt::skip]
    const MALFORMED: &[&str] = &[
        "", " ", "\n\t\r ", "[1,]", r#"{"a":1,}"#, "[,]", "[,1]", "[1,,2]", "{,}", r#"{"a":1,,"b":2}"#,
        "[1 2]", r#"{"a":1 "b":2}"#, "[1}", "[1,2}", r#"{"a":1]"#, r#"{"a":[1}}"#, "[{]}", "[}", "{]",
        "01", "-01", "00", "-0.", "-", "1.", ".5", "-.5", "1e", "1e+", "1E-", "+1", "--1", "1.5.2",
        "1e5e5", "0x10", "1_000", "Infinity", "-Infinity", "NaN", "1.e5", "01.5", "1ee5", "1e5.",
        "tru", "nul", "fals", "truex", "nullx", "falsetrue", "True", "NULL", "t", "n", "f",
        r#""\x""#, r#""\u12""#, r#""\u12"x"#, r#""\uZZZZ""#, r#""\u12G4""#, r#""\U0041""#, r#""\'""#,
        r#""\a""#, "\"\\", r#""\""#, "\"abc", "\"", r#""\ud800""#, r#""\udc00""#, r#""\ud800\u0041""#,
        r#""\ud800\ud800""#, r#""\udbff""#, r#""\ud800x""#, r#""\ud800\""#, r#""\ud800\u""#,
        r#""\udfff\ud800""#, r#""\ud800\n""#, "{} x", "1 2", "[]]", "{}}", r#""a""b""#, "[1]x", "{}{}",
        "1,", "[1],", "\u{c}1", "1\u{c}", "\u{a0}1", "[1,\u{a0}2]", "\u{b}[]", "\u{feff}1", "[1,\u{3000}2]",
        "{\"a\"\u{a0}:1}", "{1:2}", "{a:1}", "{'a':1}", r#"{"a" 1}"#, r#"{"a":}"#, r#"{"a"}"#,
        r#"{"a":1:2}"#, "{null:1}", "{[]:1}", r#"{"a"::1}"#, r#"{"a":[}"#, "[", "{", "]", "}", ":",
        ",", r#"{"a":1"#, "[1", "[1,", r#"{"a""#, r#"{"a":"#, "'a'", "/* c */ 1", "// c\n1",
        "1 // c", "[1]\u{0}", "\u{0}",
    ];
    for fragment in MALFORMED {
        assert!(
            serde_json::from_str::<Value>(fragment).is_err(),
            "valid: {fragment:?}"
        );
        for doc in contexts(fragment) {
            agrees_for_all(&doc);
        }
    }
}

/// Well-formed documents a type refuses (keys given twice, wrong types, unknown fields, integer
/// keys that do not parse, lengths) are refused for that type, and read alike where accepted.
#[test]
fn documents_a_type_refuses_are_refused() {
    #[rustfmt::skip]
    const DOCS: &[&str] = &[
        r#"{"a":1,"a":2}"#, r#"{"name":"a","age":1,"name":"b"}"#, r#"{"gender":"f","gender":"m"}"#,
        r#"{"results":[],"results":[]}"#, r#"{"name":{"first":"a","first":"b"}}"#, r#"{"age":1}"#,
        r#"{"name":"n","age":-1}"#, r#"{"name":"n","age":1.0}"#, r#"{"name":"n","age":"1"}"#,
        r#"{"name":"n","age":1,"nick":"e\u0301"}"#, r#"{"name":"n","age":1,"nick":"a\"b"}"#,
        r#"{"name":"n","age":1,"nick":null}"#, r#"{"name":1,"age":1}"#, r#"{"id":1,"flag":1}"#,
        r#"{"id":1,"flag":true,"extra":0}"#, r#"{"id":1,"flag":true,"ratio":1e39}"#,
        r#"["n",1,["t"],null,2.5]"#, r#"["n",1,[],null,2.5,"extra"]"#, "[1,true]", "[1]",
        r#"{"1":true}"#, r#"{"01":true}"#, r#"{"-1":true}"#, r#"{"4294967296":true}"#, r#"{"1 ":true}"#,
        r#"{" 1":true}"#, r#"{"+1":true}"#, r#"{"1e0":true}"#, r#"{"\u0031":true}"#, r#"{"true":1}"#,
        r#"{"1":true,"1":false}"#, r#"{"":1}"#, r#""ab""#, r#""""#, r#""🦀""#, r#"[1,"x",3]"#,
        r#"[256,"x"]"#, r#"[-1,"x"]"#, r#"{"a":2147483648}"#,
    ];
    for doc in DOCS {
        agrees_for_all(doc);
    }
}

/// Externally, internally and un-tagged enums: variants of every kind, written right and wrong.
#[test]
fn enums_are_read_like_serde_json() {
    #[rustfmt::skip]
    const DOCS: &[&str] = &[
        r#""A""#, r#"{"A":null}"#, r#"{"A":1}"#, r#"{"A":[]}"#, r#""B""#, r#"{"B":7}"#, r#"{ "B" : 7 }"#,
        r#"{"\u0042":7}"#, r#"{"B":-7}"#, r#"{"B":7,"C":{"x":1}}"#, r#"{"B":7"#, r#"{"B"7}"#,
        r#"{"C":{"x":-3}}"#, r#"{"C":[5]}"#, r#"{"C":{"x":128}}"#, r#"{"C":{}}"#, r#"{"C":{"x":1,"x":2}}"#,
        r#"{"D":[1,"s"]}"#, r#"{"D":[1]}"#, r#"{"D":[1,"s",2]}"#, r#"{"Z":1}"#, r#""Z""#, "{}", r#"["A"]"#,
        r#"{"type":"Circle","r":1.5}"#, r#"{"r":2,"type":"Circle"}"#, r#"{"type":"Empty"}"#,
        r#"{"type":"Empty","zz":[1,{}]}"#, r#"{"type":"Square","side":3,"label":"x\ty"}"#,
        r#"{"type":"Square","side":3,"label":null}"#, r#"{"type":"Nope"}"#, r#"{"type":1}"#,
        r#"{"r":1}"#, r#"{"type":"Circle","r":1.5,"type":"Circle"}"#, r#"["Circle",1.5]"#,
        "1", "-1", "1.5", "1e2", r#""s""#, "[1,true]", "[300,true]", r#"{"x":1,"y":2}"#,
        r#"{"x":1}"#, r#"[[1],[2.5,"x"],[]]"#, "null", "true", r#"{"x":1,"y":2,"z":3}"#,
    ];
    for doc in DOCS {
        agrees_for_all(doc);
        agrees_for_all(&format!("[{doc}]"));
    }
}

/// Numbers at and past each type's limits, out of `f64`'s range, negative zero and long
/// mantissas, alone and in every context; any number serde_json reads as a `Value` is read.
#[test]
fn numbers_at_every_limit_are_read_like_serde_json() {
    #[rustfmt::skip]
    const NUMBERS: &[&str] = &[
        "0", "-0", "-0.0", "0.0", "0e0", "-0e-0", "1", "-1", "127", "128", "-128", "-129", "255",
        "256", "4294967295", "4294967296", "9223372036854775807", "9223372036854775808",
        "-9223372036854775808", "-9223372036854775809", "18446744073709551615",
        "18446744073709551616", "-18446744073709551616", "99999999999999999999", "1e400", "-1e400",
        "1e-400", "0e400", "1E+2", "1e-0", "1.0", "2.5", "1.7976931348623157e308",
        "1.7976931348623159e308", "2.2250738585072014e-308", "5e-324", "2e-324", "0.1",
        "123456789012345678901234567890", "0.30000000000000004", "3.4028235e38", "3.4028236e38",
        "1e39", "9007199254740993", "1234567890123456789012e-10", "0.000000000000000000000000001e27",
        "170141183460469231731687303715884105727", "170141183460469231731687303715884105728",
        "-170141183460469231731687303715884105728", "340282366920938463463374607431768211455",
        "340282366920938463463374607431768211456",
    ];
    let mut random = Random(0xA076_1D64_78BD_642F);
    let generated = (0..3000).map(|_| {
        let mut number = String::new();
        random.number(&mut number, true);
        number
    });
    for doc in NUMBERS.iter().flat_map(|n| contexts(n)).chain(generated) {
        agrees_and_reads(&doc);
    }
}

/// A number is read as the `f64` nearest its text, as Rust's own `str::parse` reads it, so that a
/// plugin writing it again writes the same number. serde_json's default reading (without its
/// `float_roundtrip` feature) was one unit in the last place off for some numbers of 17 or more
/// significant digits, such as `-122.41941550000001`, and for `9e24`.
#[test]
fn a_number_is_read_as_the_nearest_f64() {
    let mut random = Random(0x2545_F491_4F6C_DD1D);
    let fixed = [
        "-122.41941550000001",
        "9e24",
        "0.30000000000000004",
        "1e23",
        "5e-324",
    ];
    let generated = (0..2000).map(|_| {
        let whole = random.below(1000);
        let fraction = random.next() % 10u64.pow(17);
        let sign = if random.below(2) == 0 { "" } else { "-" };
        format!("{sign}{whole}.{fraction:017}")
    });
    let texts: Vec<String> = fixed
        .iter()
        .map(|t| t.to_string())
        .chain(generated)
        .collect();
    for text in &texts {
        let nearest: f64 = text.parse().unwrap();
        let document = format!(r#"{{"x":{text}}}"#);
        let read: BTreeMap<String, f64> = from_str(&document).expect("the reader reads it");
        assert_eq!(read["x"].to_bits(), nearest.to_bits(), "{text}");
        let value: Value = from_str(&document).expect("the reader reads it as a Value");
        assert_eq!(
            value["x"].as_f64().map(f64::to_bits),
            Some(nearest.to_bits()),
            "{text}"
        );
    }
}

/// Only JSON's four whitespace bytes separate tokens: form feed, vertical tab, NUL, NBSP, the
/// byte order mark and other Unicode spaces are refused wherever they stand.
#[test]
fn only_json_whitespace_separates_tokens() {
    let base = r#"{"a":[1,-2.5e3,true,null,"x y"],"b":{"c":false},"d":"\n"}"#;
    for space in [
        " ", "\t", "\n", "\r", "\u{c}", "\u{b}", "\0", "\u{a0}", "\u{feff}",
    ] {
        for at in 0..=base.len() {
            let doc = format!("{}{space}{}", &base[..at], &base[at..]);
            agrees_and_reads(&doc);
        }
    }
}

/// serde_json refuses 128 levels of containers it reads (and skips any depth): the reader
/// refuses at least there, and never overflows its stack, even at 100 000 levels.
#[test]
fn deep_nesting_is_refused_without_overflowing() {
    let nest = |open: &str, middle, close: &str, depth| {
        format!("{}{middle}{}", open.repeat(depth), close.repeat(depth))
    };
    let limit = nest("[", "", "]", 200);
    assert!(serde_json::from_str::<Value>(&limit).is_err(), "the limit");
    for depth in [1, 2, 20, 64, 119, 120, 121, 126, 127, 128, 129, 200] {
        let arrays = nest("[", "", "]", depth);
        let objects = nest(r#"{"a":"#, "1", "}", depth);
        let read = agrees_for_all(&arrays) & agrees_for_all(&objects);
        assert!(read || depth > 20, "left to serde_json at depth {depth}");
        for doc in [
            nest(r#"[{"a":"#, "null", "}]", depth),
            nest(r#"{"C":"#, "1", "}", depth),
            "[".repeat(depth),
            r#"{"a":"#.repeat(depth),
            format!(r#"{{"name":"n","age":1,"zz":{arrays}}}"#),
            format!(r#"{{"results":[{{"name":{objects}}}],"zz":{objects}}}"#),
            format!(r#"{{"type":"Circle","r":1,"zz":{arrays}}}"#),
            format!("[{arrays},1,{objects}]"),
            // The outermost container closed by the wrong bracket, under deep ones.
            format!(r#"{{"a":{arrays}]"#),
            format!("[{objects}}}"),
        ] {
            agrees_for_all(&doc);
        }
    }
    let arrays = nest("[", "", "]", 100_000);
    for doc in [
        nest(r#"[{"":"#, "0", "}]", 100_000),
        "[".repeat(100_000),
        format!(r#"{{"name":"n","age":1,"zz":{arrays}}}"#),
        arrays,
    ] {
        agrees_for_all(&doc);
    }
}

/// Every truncation of a valid document (random, or randomuser.me compact and pretty) is
/// refused unless serde_json reads it too (as a number's prefix can be a number).
#[test]
fn truncated_documents_are_refused() {
    let mut random = Random(0x5851_F42D_4C95_7F2D);
    let (user, response) = (random.user(), random.response());
    let pretty = serde_json::to_string_pretty(&user).expect("prints");
    let mut documents = vec![response.to_string(), pretty];
    documents.extend((0..25).map(|_| random.document(true)));
    for text in &documents {
        for at in (0..text.len()).filter(|&at| text.is_char_boundary(at)) {
            agrees_for_all(&text[..at]);
        }
    }
}

/// Single-byte edits (replacing, inserting or removing a structural byte, digit, exponent
/// letter, literal start or control byte) of random and randomuser.me documents are never
/// read unless serde_json reads them to the same value.
#[test]
fn mutated_documents_are_read_only_as_serde_json_reads_them() {
    let mut random = Random(0x94D0_49BB_1331_11EB);
    for round in 0..300 {
        let text = match round % 4 {
            0 => random.user().to_string(),
            1 => random.document(false),
            _ => random.document(true),
        };
        for _ in 0..12 {
            if let Some(mutant) = random.mutate(&text) {
                agrees_for_all(&mutant);
            }
        }
    }
}

/// Bytes that are not UTF-8 are refused wherever they stand: in a string read, a key, a
/// skipped string (where serde_json's own reader of a `&[u8]` would let them pass), or between
/// tokens; cut characters, overlong forms and surrogates included, next to multi-byte
/// characters and at every offset of the eight-byte scan. Valid text there is read.
#[test]
fn text_that_is_not_utf8_is_refused_everywhere() {
    const BAD: &[&[u8]] = &[
        b"\x80",
        b"\xbf",
        b"\xc3",
        b"\xc3\x28",
        b"\xe6\x9d",
        b"\xf0\x9f\xa6",
        b"\xc0\xaf",
        b"\xe0\x80\xaf",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xff",
        b"\xfe",
    ];
    let good: &[&[u8]] = &[
        "é".as_bytes(),
        "東".as_bytes(),
        "🦀".as_bytes(),
        "Zoë Ø".as_bytes(),
    ];
    for at in 0..=17 {
        let ascii = &b"abcdefghijklmnopqrstu"[..at];
        for (insert, valid) in BAD
            .iter()
            .map(|b| (*b, false))
            .chain(good.iter().map(|g| (*g, true)))
        {
            let string: Vec<u8> =
                [b"\"".as_slice(), ascii, insert, "東x".as_bytes(), b"\""].concat();
            let documents: [Vec<u8>; 4] = [
                string.clone(),
                [b"{".as_slice(), &string, b": 1}"].concat(),
                [
                    br#"{"name": "a", "age": 1, "zz": "#.as_slice(),
                    &string,
                    b"}",
                ]
                .concat(),
                [b"[1, ".as_slice(), ascii, insert, b"]"].concat(),
            ];
            for (index, document) in documents.iter().enumerate() {
                let text = std::str::from_utf8(document);
                assert_eq!(text.is_ok(), valid, "{document:?}");
                let ours: Option<Value> = from_slice(document);
                let person: Option<Person> = from_slice(document);
                let ignored: Option<IgnoredAny> = from_slice(document);
                match text {
                    Err(_) => {
                        assert!(ours.is_none(), "read {document:?}");
                        assert!(person.is_none(), "read {document:?}");
                        assert!(ignored.is_none(), "skipped {document:?}");
                    }
                    Ok(text) => {
                        agrees_for_all(text);
                        // A character between tokens is malformed JSON, read or not.
                        assert_eq!(ours.is_some(), index != 3, "{text:?}");
                    }
                }
            }
        }
    }
}

/// A value read with [`crate::json::NUMBER_AS_WRITTEN`]: a number's text, or what else it was.
#[derive(Debug, PartialEq)]
enum Written<'a> {
    Number(&'a str),
    Text(&'a str),
    Bool(bool),
    Null,
}

impl<'de> Deserialize<'de> for Written<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Written<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                text: &'de [u8],
            ) -> Result<Written<'de>, E> {
                std::str::from_utf8(text)
                    .map(Written::Number)
                    .map_err(E::custom)
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                text: &'de str,
            ) -> Result<Written<'de>, E> {
                Ok(Written::Text(text))
            }
            fn visit_bool<E: serde::de::Error>(self, flag: bool) -> Result<Written<'de>, E> {
                Ok(Written::Bool(flag))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Written<'de>, E> {
                Ok(Written::Null)
            }
        }
        deserializer.deserialize_newtype_struct(crate::json::NUMBER_AS_WRITTEN, Visit)
    }
}

#[test]
fn numbers_are_read_as_written_when_asked() {
    for number in [
        "0",
        "-0",
        "12.50",
        "-0.5e-3",
        "6.02E+23",
        "1e400",
        "123456789012345678901234567890",
        "0.1000000000000000000000000001",
    ] {
        assert_eq!(
            from_slice::<Written>(number.as_bytes()),
            Some(Written::Number(number))
        );
        let document = format!("{{\"a\": \t{number} , \"b\": 1}}");
        let read: Option<BTreeMap<&str, Written>> = from_slice(document.as_bytes());
        assert_eq!(read.unwrap()["a"], Written::Number(number), "{document}");
    }
    // Other values as they are; a string of digits stays a string.
    assert_eq!(from_slice(br#""12.50""#), Some(Written::Text("12.50")));
    assert_eq!(from_slice(b" true"), Some(Written::Bool(true)));
    assert_eq!(from_slice(b"null"), Some(Written::Null));
    // Nothing serde_json refuses as a number.
    for bad in [
        "01", "1.", "-", "1e", "1e+", ".5", "+1", "1.5.2", "--1", "0x10",
    ] {
        assert_eq!(from_slice::<Written>(bad.as_bytes()), None, "{bad}");
        assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
    }
}
