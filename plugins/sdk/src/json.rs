//! JSON helpers for the common plugin shape: read fields by pointer, with a bad-record error
//! naming the missing field, so a mapping is a few lines of `?`.

use serde_json::Value;

use crate::Error;

/// The value at a JSON pointer (`/name/first`); a bad record naming the field when absent or null.
pub fn at<'a>(value: &'a Value, pointer: &str) -> Result<&'a Value, Error> {
    match value.pointer(pointer) {
        None | Some(Value::Null) => Err(Error::bad_record(format!(
            "missing required field `{}`",
            field_name(pointer)
        ))),
        Some(found) => Ok(found),
    }
}

/// The string at a JSON pointer; a bad record when absent or not a string.
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> Result<&'a str, Error> {
    at(value, pointer)?.as_str().ok_or_else(|| {
        Error::bad_record(format!("field `{}` must be a string", field_name(pointer)))
    })
}

/// The value at a JSON pointer as text: strings as they are, numbers and booleans printed.
/// For fields an API sends sometimes as a number and sometimes as a string.
pub fn text_at(value: &Value, pointer: &str) -> Result<String, Error> {
    match at(value, pointer)? {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(Error::bad_record(format!(
            "field `{}` must be a string or a number",
            field_name(pointer)
        ))),
    }
}

/// `/name/first` as `name.first`, the way users write field paths.
pub fn field_name(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// A user's dotted field path (`name.first`) as a JSON pointer (`/name/first`).
pub fn pointer(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{}", path.replace('.', "/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_and_null_fields_name_the_field() {
        let doc = json!({"name": {"first": "Ada", "last": null}});
        assert_eq!(str_at(&doc, "/name/first").unwrap(), "Ada");
        let err = str_at(&doc, "/name/last").unwrap_err();
        assert_eq!(err.message(), "missing required field `name.last`");
        assert!(at(&doc, "/age").is_err());
    }

    #[test]
    fn text_at_accepts_numbers_and_strings() {
        let doc = json!({"a": 1234, "b": "W1 2AB", "c": [1]});
        assert_eq!(text_at(&doc, "/a").unwrap(), "1234");
        assert_eq!(text_at(&doc, "/b").unwrap(), "W1 2AB");
        assert!(text_at(&doc, "/c").is_err());
    }

    #[test]
    fn pointer_converts_dotted_paths() {
        assert_eq!(pointer("name.first"), "/name/first");
        assert_eq!(pointer("/x"), "/x");
    }
}
