//! JSON values to CQL values for the column types the sink supports, with an error that names
//! the column, its type and what the record held, and what a field absent from the record binds
//! to (unset by default, so an earlier write's value stays).

use chrono::DateTime;
use scylla::value::{CqlTimestamp, CqlValue, MaybeUnset};
use serde::Deserialize;
use serde_json::Value;

/// What a column gets when its field is absent from the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// The column is left as it is: a value an earlier record stored stays (the default).
    #[default]
    Unset,
    /// The column is written as null, which erases a stored value (Cassandra writes a
    /// tombstone).
    Null,
}

/// One bound value of an INSERT: unset (the stored value stays), null, or a value.
pub type Bound = MaybeUnset<Option<CqlValue>>;

/// The CQL column types the sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// text, varchar, ascii
    Text,
    /// int
    Int,
    /// bigint
    BigInt,
    /// boolean
    Boolean,
    /// timestamp: from RFC 3339 text or epoch milliseconds
    Timestamp,
    /// uuid, timeuuid: from text
    Uuid,
    /// double
    Double,
}

impl ColumnType {
    /// Parses the type name in `system_schema.columns`; `None` for unsupported types.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "text" | "varchar" | "ascii" => ColumnType::Text,
            "int" => ColumnType::Int,
            "bigint" => ColumnType::BigInt,
            "boolean" => ColumnType::Boolean,
            "timestamp" => ColumnType::Timestamp,
            "uuid" | "timeuuid" => ColumnType::Uuid,
            "double" => ColumnType::Double,
            _ => return None,
        })
    }
}

/// Converts one field for `column`; `Ok(None)` for an absent or null field.
pub fn to_cql(
    column: &str,
    kind: ColumnType,
    value: Option<&Value>,
) -> Result<Option<CqlValue>, String> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let mismatch = || format!("column `{column}` ({kind:?}) cannot hold {value}");
    let converted = match kind {
        ColumnType::Text => match value {
            Value::String(s) => CqlValue::Text(s.clone()),
            Value::Number(n) => CqlValue::Text(n.to_string()),
            Value::Bool(b) => CqlValue::Text(b.to_string()),
            _ => return Err(mismatch()),
        },
        ColumnType::Int => CqlValue::Int(
            value
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(mismatch)?,
        ),
        ColumnType::BigInt => CqlValue::BigInt(value.as_i64().ok_or_else(mismatch)?),
        ColumnType::Boolean => CqlValue::Boolean(value.as_bool().ok_or_else(mismatch)?),
        ColumnType::Double => CqlValue::Double(value.as_f64().ok_or_else(mismatch)?),
        ColumnType::Timestamp => CqlValue::Timestamp(CqlTimestamp(match value {
            Value::Number(n) => n.as_i64().ok_or_else(mismatch)?,
            Value::String(s) => DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("{}: {e}", mismatch()))?
                .timestamp_millis(),
            _ => return Err(mismatch()),
        })),
        ColumnType::Uuid => CqlValue::Uuid(
            value
                .as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .ok_or_else(mismatch)?,
        ),
    };
    Ok(Some(converted))
}

/// The value `column` binds for a record whose field is `value`: converted when present, null
/// when the record holds JSON `null`, and as `missing` says when the field is absent.
pub fn bind_field(
    column: &str,
    kind: ColumnType,
    value: Option<&Value>,
    missing: Missing,
) -> Result<Bound, String> {
    if value.is_none() && missing == Missing::Unset {
        return Ok(MaybeUnset::Unset);
    }
    to_cql(column, kind, value).map(MaybeUnset::Set)
}

/// Bytes a bound row takes in the request (each value with its 4-byte length), which is about
/// what the mutation it makes weighs on the server.
pub fn bound_bytes(values: &[Bound]) -> usize {
    values
        .iter()
        .map(|value| {
            4 + match value {
                MaybeUnset::Set(Some(value)) => value_bytes(value),
                MaybeUnset::Set(None) | MaybeUnset::Unset => 0,
            }
        })
        .sum()
}

fn value_bytes(value: &CqlValue) -> usize {
    match value {
        CqlValue::Text(text) | CqlValue::Ascii(text) => text.len(),
        CqlValue::Boolean(_) => 1,
        CqlValue::Int(_) => 4,
        CqlValue::BigInt(_) | CqlValue::Double(_) | CqlValue::Timestamp(_) => 8,
        CqlValue::Uuid(_) => 16,
        // The sink binds only the types above; anything else is sized by its debug form, an
        // overestimate that errs towards the size check.
        other => format!("{other:?}").len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_each_supported_type() {
        let ok = |kind, v: Value| to_cql("c", kind, Some(&v)).unwrap().unwrap();
        assert_eq!(ok(ColumnType::Text, json!("a")), CqlValue::Text("a".into()));
        assert_eq!(
            ok(ColumnType::Text, json!(12345)),
            CqlValue::Text("12345".into())
        );
        assert_eq!(ok(ColumnType::Int, json!(7)), CqlValue::Int(7));
        assert_eq!(
            ok(ColumnType::BigInt, json!(1_i64 << 40)),
            CqlValue::BigInt(1 << 40)
        );
        assert_eq!(
            ok(ColumnType::Boolean, json!(true)),
            CqlValue::Boolean(true)
        );
        assert_eq!(
            ok(ColumnType::Timestamp, json!("1970-01-01T00:00:01.500Z")),
            CqlValue::Timestamp(CqlTimestamp(1500))
        );
        assert_eq!(
            ok(ColumnType::Timestamp, json!(42)),
            CqlValue::Timestamp(CqlTimestamp(42))
        );
        let id = "0f9c6f0e-5d0b-4b8f-9a57-6a1c0a2b9e11";
        assert_eq!(
            ok(ColumnType::Uuid, json!(id)),
            CqlValue::Uuid(uuid::Uuid::parse_str(id).unwrap())
        );
        assert_eq!(to_cql("c", ColumnType::Int, None).unwrap(), None);
        assert_eq!(
            to_cql("c", ColumnType::Int, Some(&Value::Null)).unwrap(),
            None
        );
    }

    #[test]
    fn mismatches_name_the_column_and_the_value() {
        for (kind, value) in [
            (ColumnType::Int, json!("seven")),
            (ColumnType::Int, json!(1_i64 << 40)),
            (ColumnType::Uuid, json!("not-a-uuid")),
            (ColumnType::Timestamp, json!("yesterday")),
            (ColumnType::Boolean, json!(1)),
            (ColumnType::Text, json!({"a": 1})),
        ] {
            let error = to_cql("dob", kind, Some(&value)).unwrap_err();
            assert!(error.contains("`dob`"), "{error}");
        }
        assert_eq!(ColumnType::parse("map<text, int>"), None);
    }

    #[test]
    fn an_absent_field_is_unset_unless_missing_is_null_and_a_json_null_is_null() {
        let record = json!({"email": null, "name": "Zoë"});
        // `MaybeUnset` has no `PartialEq`: compare through `Option`, `None` for unset.
        let bind = |field: &str, missing| match bind_field(
            field,
            ColumnType::Text,
            record.pointer(field),
            missing,
        )
        .unwrap()
        {
            MaybeUnset::Unset => None,
            MaybeUnset::Set(value) => Some(value),
        };
        assert_eq!(bind("/absent", Missing::Unset), None);
        assert_eq!(bind("/absent", Missing::Null), Some(None));
        for missing in [Missing::Unset, Missing::Null] {
            assert_eq!(bind("/email", missing), Some(None));
            assert_eq!(
                bind("/name", missing),
                Some(Some(CqlValue::Text("Zoë".into())))
            );
        }
        assert!(bind_field("n", ColumnType::Int, Some(&json!("x")), Missing::Unset).is_err());
    }

    #[test]
    fn bound_bytes_count_each_value_and_its_length() {
        let row = [
            MaybeUnset::Set(Some(CqlValue::Text("abc".into()))),
            MaybeUnset::Set(Some(CqlValue::BigInt(1))),
            MaybeUnset::Set(None),
            MaybeUnset::Unset,
        ];
        assert_eq!(bound_bytes(&row), (4 + 3) + (4 + 8) + 4 + 4);
    }
}
