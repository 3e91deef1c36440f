//! Reading a field of a JSON record by a user's dotted path (`login.uuid`), shared by the sinks
//! that take keys or columns from record fields.

use serde_json::Value;

/// The JSON pointer for a dotted path: `login.uuid` is `/login/uuid`; a pointer stays as it is.
pub fn pointer(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{}", path.replace('.', "/"))
    }
}

/// The field at `pointer` as text: strings as they are, numbers and booleans printed; `None`
/// when absent or null, or an object or array.
pub fn text_at(document: &Value, pointer: &str) -> Option<String> {
    match document.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_fields_as_text() {
        let doc = serde_json::json!({"login": {"uuid": "u1"}, "n": 3, "o": {}});
        assert_eq!(text_at(&doc, &pointer("login.uuid")).as_deref(), Some("u1"));
        assert_eq!(text_at(&doc, &pointer("n")).as_deref(), Some("3"));
        assert_eq!(text_at(&doc, &pointer("o")), None);
        assert_eq!(text_at(&doc, &pointer("missing")), None);
        assert_eq!(pointer("/a/b"), "/a/b");
    }
}
