//! JSON values to CQL values for the column types the sink supports, with an error that names
//! the column, its type and what the record held.

use chrono::DateTime;
use scylla::value::{CqlTimestamp, CqlValue};
use serde_json::Value;

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

/// Converts one field for `column`; `Ok(None)` for an absent or null field (written as null).
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
}
