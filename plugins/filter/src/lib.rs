//! `filter`: keeps the records whose JSON field satisfies one configured predicate and drops the
//! rest (a dropped record is not an error).

use serde_json::Value;
use weir_plugin::json::pointer;
use weir_plugin::{Config, Error, Plugin, Record};

/// The predicates a filter may use, one per filter.
const PREDICATES: &[&str] = &[
    "equals",
    "not_equals",
    "one_of",
    "matches",
    "exists",
    "greater_than",
    "less_than",
];

/// One predicate on a field's value (`None` when the field is absent).
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// Equal to this JSON value.
    Equals(Value),
    /// Absent or different from this value.
    NotEquals(Value),
    /// Equal to one of these values.
    OneOf(Vec<Value>),
    /// A string matching this glob (`*` matches any run of characters).
    Matches(String),
    /// Present (and not null) when true, absent when false.
    Exists(bool),
    /// A number greater than this.
    GreaterThan(f64),
    /// A number less than this.
    LessThan(f64),
}

impl Predicate {
    /// Whether `value` satisfies the predicate.
    pub fn test(&self, value: Option<&Value>) -> bool {
        let value = value.filter(|v| !v.is_null());
        match self {
            Predicate::Equals(expected) => value.is_some_and(|v| same(v, expected)),
            Predicate::NotEquals(expected) => !value.is_some_and(|v| same(v, expected)),
            Predicate::OneOf(options) => {
                value.is_some_and(|v| options.iter().any(|option| same(v, option)))
            }
            Predicate::Matches(pattern) => value
                .and_then(Value::as_str)
                .is_some_and(|s| glob(pattern, s)),
            Predicate::Exists(expected) => value.is_some() == *expected,
            Predicate::GreaterThan(bound) => {
                value.and_then(Value::as_f64).is_some_and(|n| n > *bound)
            }
            Predicate::LessThan(bound) => value.and_then(Value::as_f64).is_some_and(|n| n < *bound),
        }
    }
}

/// Whether two values are equal, numbers by their value whatever their spelling: `1`, `1.0` and
/// `1e0` are one number, and integers compare exactly however large.
fn same(value: &Value, expected: &Value) -> bool {
    match (value, expected) {
        (Value::Number(a), Value::Number(b)) => {
            let exact = |n: &serde_json::Number| {
                n.as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
            };
            match (exact(a), exact(b)) {
                (Some(a), Some(b)) => a == b,
                _ => a.as_f64() == b.as_f64(),
            }
        }
        _ => value == expected,
    }
}

/// Matches `text` against `pattern`, where `*` matches any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The plugin: a field (as a JSON pointer) and a predicate.
#[derive(Debug)]
pub struct Filter {
    field: String,
    predicate: Predicate,
}

impl Plugin for Filter {
    fn init(config: &Config) -> Result<Self, Error> {
        let mut known = vec!["field"];
        known.extend_from_slice(PREDICATES);
        config.deny_unknown(&known)?;
        let field = pointer(config.required_str("field")?);
        let given: Vec<&str> = PREDICATES
            .iter()
            .copied()
            .filter(|key| config.get(key).is_some())
            .collect();
        let [key] = given.as_slice() else {
            return Err(Error::config(format!(
                "give exactly one predicate of {}; got {}",
                PREDICATES.join(", "),
                if given.is_empty() {
                    "none".to_owned()
                } else {
                    given.join(", ")
                }
            )));
        };
        let value = config.get(key).cloned().unwrap_or(Value::Null);
        let number = |value: &Value| {
            value.as_f64().ok_or_else(|| {
                Error::config(format!("config key `{key}` must be a number, got {value}"))
            })
        };
        let predicate = match *key {
            "equals" => Predicate::Equals(value),
            "not_equals" => Predicate::NotEquals(value),
            "one_of" => match value {
                Value::Array(options) => Predicate::OneOf(options),
                other => {
                    return Err(Error::config(format!(
                        "config key `one_of` must be an array, got {other}"
                    )));
                }
            },
            "matches" => Predicate::Matches(config.required_str("matches")?.to_owned()),
            "exists" => match value {
                Value::Bool(b) => Predicate::Exists(b),
                other => {
                    return Err(Error::config(format!(
                        "config key `exists` must be true or false, got {other}"
                    )));
                }
            },
            "greater_than" => Predicate::GreaterThan(number(&value)?),
            _ => Predicate::LessThan(number(&value)?),
        };
        Ok(Filter { field, predicate })
    }

    fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
        let document = record.json()?;
        if self.predicate.test(document.pointer(&self.field)) {
            Ok(vec![record])
        } else {
            Ok(Vec::new())
        }
    }
}

#[cfg(target_arch = "wasm32")]
weir_plugin::export_plugin!(Filter);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(config: Value) -> Result<Filter, Error> {
        Filter::init(&Config::parse(&config.to_string()).unwrap())
    }

    fn keeps(filter: &Filter, value: Value) -> bool {
        !filter
            .transform(Record::new(value.to_string()))
            .unwrap()
            .is_empty()
    }

    #[test]
    fn equals_and_not_equals() {
        let f = filter(json!({"field": "gender", "equals": "female"})).unwrap();
        assert!(keeps(&f, json!({"gender": "female"})));
        assert!(!keeps(&f, json!({"gender": "male"})));
        assert!(!keeps(&f, json!({})));
        let f = filter(json!({"field": "gender", "not_equals": "female"})).unwrap();
        assert!(keeps(&f, json!({"gender": "male"})));
        assert!(keeps(&f, json!({})));
    }

    #[test]
    fn one_of_exists_and_nested_fields() {
        let f =
            filter(json!({"field": "location.country", "one_of": ["Ireland", "Norway"]})).unwrap();
        assert!(keeps(&f, json!({"location": {"country": "Norway"}})));
        assert!(!keeps(&f, json!({"location": {"country": "Spain"}})));
        let f = filter(json!({"field": "email", "exists": true})).unwrap();
        assert!(keeps(&f, json!({"email": "x"})));
        assert!(!keeps(&f, json!({"email": null})));
    }

    #[test]
    fn numbers_are_equal_by_value_whatever_their_spelling() {
        let f = filter(json!({"field": "n", "equals": 1})).unwrap();
        assert!(keeps(&f, json!({"n": 1.0})));
        assert!(!keeps(&f, json!({"n": 1.5})));
        let f = filter(json!({"field": "n", "one_of": [100, 200]})).unwrap();
        let hundred: Value = serde_json::from_str(r#"{"n":1e2}"#).unwrap();
        assert!(keeps(&f, hundred));
        let f = filter(json!({"field": "n", "not_equals": 2})).unwrap();
        assert!(!keeps(&f, json!({"n": 2.0})));
        // Integers past f64's precision stay distinct.
        let f = filter(json!({"field": "n", "equals": 9007199254740993u64})).unwrap();
        assert!(!keeps(&f, json!({"n": 9007199254740992u64})));
        assert!(keeps(&f, json!({"n": 9007199254740993u64})));
    }

    #[test]
    fn numeric_bounds() {
        let f = filter(json!({"field": "dob.age", "greater_than": 30})).unwrap();
        assert!(keeps(&f, json!({"dob": {"age": 31}})));
        assert!(!keeps(&f, json!({"dob": {"age": 30}})));
        assert!(!keeps(&f, json!({"dob": {"age": "old"}})));
        let f = filter(json!({"field": "n", "less_than": 0.5})).unwrap();
        assert!(keeps(&f, json!({"n": 0.1})));
    }

    #[test]
    fn glob_matching() {
        let f = filter(json!({"field": "email", "matches": "*@example.*"})).unwrap();
        assert!(keeps(&f, json!({"email": "ada@example.com"})));
        assert!(!keeps(&f, json!({"email": "ada@other.com"})));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "acb"));
        assert!(glob("exact", "exact"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn non_json_is_a_bad_record() {
        let f = filter(json!({"field": "a", "exists": true})).unwrap();
        let error = f.transform(Record::new("nope")).unwrap_err();
        assert_eq!(error.kind(), weir_plugin::ErrorKind::BadRecord);
    }

    #[test]
    fn config_needs_exactly_one_predicate() {
        assert!(
            filter(json!({"field": "a"}))
                .unwrap_err()
                .message()
                .contains("exactly one")
        );
        let err = filter(json!({"field": "a", "equals": 1, "exists": true})).unwrap_err();
        assert!(err.message().contains("equals, exists"), "{err}");
        assert!(
            filter(json!({"equals": 1}))
                .unwrap_err()
                .message()
                .contains("`field`")
        );
        assert!(
            filter(json!({"field": "a", "greater_than": "x"}))
                .unwrap_err()
                .message()
                .contains("number")
        );
        assert!(
            filter(json!({"field": "a", "exists": true, "x": 1}))
                .unwrap_err()
                .message()
                .contains("`x`")
        );
    }
}
