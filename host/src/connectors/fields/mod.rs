//! Reading a field of a JSON record by a user's dotted path (`login.uuid`), shared by the sinks
//! that take keys or columns from record fields.

mod set;

pub use set::{FieldSet, Leaf, Reading};

use serde_json::Value;

/// A field's place in a JSON record, from a dotted path (`login.uuid`) or a JSON pointer
/// (`/login/uuid`), split into its keys once: reading it for each record allocates nothing,
/// where `Value::pointer` unescapes every key of every lookup into a new `String`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    /// The keys (or array indexes) from the top, unescaped.
    keys: Vec<String>,
}

impl FieldPath {
    /// Whether `other` leads through this path to a field below it.
    pub fn is_above(&self, other: &FieldPath) -> bool {
        other.keys.len() > self.keys.len() && other.keys.starts_with(&self.keys)
    }

    /// The path a user wrote: a JSON pointer when it starts with `/`, else dot-separated keys.
    pub fn parse(path: &str) -> Self {
        let keys = match path.strip_prefix('/') {
            Some(pointer) => pointer
                .split('/')
                .map(|key| key.replace("~1", "/").replace("~0", "~"))
                .collect(),
            None => path.split('.').map(str::to_owned).collect(),
        };
        FieldPath { keys }
    }

    /// The value at this path in `document`, as `Value::pointer` finds it: an object's key, or
    /// an array's index written without sign or leading zeros.
    pub fn find<'a>(&self, document: &'a Value) -> Option<&'a Value> {
        self.keys
            .iter()
            .try_fold(document, |value, key| match value {
                Value::Object(map) => map.get(key),
                Value::Array(items) => index(key).and_then(|i| items.get(i)),
                _ => None,
            })
    }
}

/// An array index as RFC 6901 writes one.
fn index(key: &str) -> Option<usize> {
    if key.starts_with('+') || (key.starts_with('0') && key.len() != 1) {
        return None;
    }
    key.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_fields_by_dotted_path_or_pointer() {
        let doc = serde_json::json!({"login": {"uuid": "u1"}, "n": 3, "o": {}});
        let at = |path: &str| FieldPath::parse(path).find(&doc).cloned();
        assert_eq!(at("login.uuid"), Some(serde_json::json!("u1")));
        assert_eq!(at("/login/uuid"), Some(serde_json::json!("u1")));
        assert_eq!(at("n"), Some(serde_json::json!(3)));
        assert_eq!(at("o"), Some(serde_json::json!({})));
        assert_eq!(at("missing"), None);
    }

    #[test]
    fn finds_what_a_json_pointer_finds() {
        let doc = serde_json::json!({
            "a": {"b/c": 1, "d~e": 2, "": 3, "list": [10, 20, {"x": "y"}]},
            "0": "zero",
        });
        for pointer in [
            "/a",
            "/a/b~1c",
            "/a/d~0e",
            "/a/",
            "/a/list/0",
            "/a/list/2/x",
            "/a/list/01",
            "/a/list/+1",
            "/a/list/3",
            "/a/list/-",
            "/0",
            "/a/b~1c/z",
            "/missing/deeper",
        ] {
            assert_eq!(
                FieldPath::parse(pointer).find(&doc),
                doc.pointer(pointer),
                "{pointer}"
            );
        }
        // A dotted path is the pointer of its keys (so an empty one is the key "", as before).
        assert_eq!(FieldPath::parse("").find(&doc), doc.pointer("/"));
        assert_eq!(
            FieldPath::parse("a.list.2.x").find(&doc),
            doc.pointer("/a/list/2/x")
        );
    }
}
