//! JSON values to CQL values for the column types the sink supports, with an error that names
//! the column, its type and what the record held, and what a field absent from the record binds
//! to (unset by default, so an earlier write's value stays).

use std::borrow::Cow;

use chrono::DateTime;
use scylla::frame::response::result::{ColumnType as CqlType, NativeType};
use scylla::serialize::SerializationError;
use scylla::serialize::value::SerializeValue;
use scylla::serialize::writers::{CellWriter, WrittenCellProof};
use scylla::value::{CqlTimestamp, CqlTimeuuid};
use serde::Deserialize;
use serde_json::Number;

use crate::connectors::fields::Leaf;

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

/// One bound value of an INSERT: unset (the stored value stays), null, or a value, its text
/// borrowed from the record it was read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// Not written: the value stored before stays.
    Unset,
    /// Written as null.
    Null,
    /// text, varchar, ascii
    Text(Cow<'a, str>),
    /// int
    Int(i32),
    /// bigint
    BigInt(i64),
    /// boolean
    Boolean(bool),
    /// timestamp, in milliseconds since the epoch
    Timestamp(i64),
    /// uuid or timeuuid, as the column is declared
    Uuid(uuid::Uuid),
    /// double
    Double(f64),
}

impl Cell<'_> {
    /// The same value owning its text, to be kept beyond the record.
    pub fn into_owned(self) -> Cell<'static> {
        match self {
            Cell::Text(text) => Cell::Text(Cow::Owned(text.into_owned())),
            Cell::Unset => Cell::Unset,
            Cell::Null => Cell::Null,
            Cell::Int(n) => Cell::Int(n),
            Cell::BigInt(n) => Cell::BigInt(n),
            Cell::Boolean(flag) => Cell::Boolean(flag),
            Cell::Timestamp(ms) => Cell::Timestamp(ms),
            Cell::Uuid(id) => Cell::Uuid(id),
            Cell::Double(x) => Cell::Double(x),
        }
    }

    /// Calls `use_bytes` with the value's bytes as the request carries them (the CQL encoding of
    /// its type), without copying text or allocating; `None` for unset and null, which have
    /// none. A partition key's token is computed from these bytes.
    pub fn with_wire_bytes<R>(&self, use_bytes: impl FnOnce(&[u8]) -> R) -> Option<R> {
        Some(match self {
            Cell::Unset | Cell::Null => return None,
            Cell::Text(text) => use_bytes(text.as_bytes()),
            Cell::Int(n) => use_bytes(&n.to_be_bytes()),
            Cell::BigInt(n) | Cell::Timestamp(n) => use_bytes(&n.to_be_bytes()),
            Cell::Boolean(flag) => use_bytes(&[u8::from(*flag)]),
            Cell::Uuid(id) => use_bytes(id.as_bytes()),
            Cell::Double(x) => use_bytes(&x.to_be_bytes()),
        })
    }

    /// Bytes the value takes in the request, beside its 4-byte length.
    fn bytes(&self) -> usize {
        match self {
            Cell::Unset | Cell::Null => 0,
            Cell::Text(text) => text.len(),
            Cell::Boolean(_) => 1,
            Cell::Int(_) => 4,
            Cell::BigInt(_) | Cell::Double(_) | Cell::Timestamp(_) => 8,
            Cell::Uuid(_) => 16,
        }
    }
}

/// Each value is checked against the column's declared type by the driver's own serialisers.
impl SerializeValue for Cell<'_> {
    fn serialize<'b>(
        &self,
        typ: &CqlType,
        writer: CellWriter<'b>,
    ) -> Result<WrittenCellProof<'b>, SerializationError> {
        match self {
            Cell::Unset => Ok(writer.set_unset()),
            Cell::Null => Ok(writer.set_null()),
            Cell::Text(text) => <str as SerializeValue>::serialize(text, typ, writer),
            Cell::Int(n) => n.serialize(typ, writer),
            Cell::BigInt(n) => n.serialize(typ, writer),
            Cell::Boolean(flag) => flag.serialize(typ, writer),
            Cell::Timestamp(ms) => CqlTimestamp(*ms).serialize(typ, writer),
            Cell::Uuid(id) if matches!(typ, CqlType::Native(NativeType::Timeuuid)) => {
                CqlTimeuuid::from(*id).serialize(typ, writer)
            }
            Cell::Uuid(id) => id.serialize(typ, writer),
            Cell::Double(x) => x.serialize(typ, writer),
        }
    }
}

/// Converts one field for `column`: null for an absent or null field.
pub fn to_cell<'a>(
    column: &str,
    kind: ColumnType,
    value: Option<Leaf<'a>>,
) -> Result<Cell<'a>, String> {
    let value = match value {
        None | Some(Leaf::Null) => return Ok(Cell::Null),
        Some(value) => value,
    };
    let mismatch = |value: &Leaf| format!("column `{column}` ({kind:?}) cannot hold {value}");
    if kind == ColumnType::Text && matches!(value, Leaf::Text(_) | Leaf::Number(_) | Leaf::Bool(_))
    {
        // A scalar always has a text form.
        return Ok(Cell::Text(value.into_text().unwrap_or_default()));
    }
    let number = match &value {
        Leaf::Number(number) => Some(number),
        _ => None,
    };
    let converted = match kind {
        ColumnType::Text => None,
        ColumnType::Int => number
            .and_then(Number::as_i64)
            .and_then(|n| i32::try_from(n).ok())
            .map(Cell::Int),
        ColumnType::BigInt => number.and_then(Number::as_i64).map(Cell::BigInt),
        ColumnType::Double => number.and_then(Number::as_f64).map(Cell::Double),
        ColumnType::Boolean => match &value {
            Leaf::Bool(flag) => Some(Cell::Boolean(*flag)),
            _ => None,
        },
        ColumnType::Timestamp => match &value {
            Leaf::Number(number) => number.as_i64().map(Cell::Timestamp),
            Leaf::Text(text) => {
                return DateTime::parse_from_rfc3339(text)
                    .map(|at| Cell::Timestamp(at.timestamp_millis()))
                    .map_err(|e| format!("{}: {e}", mismatch(&value)));
            }
            _ => None,
        },
        ColumnType::Uuid => match &value {
            Leaf::Text(text) => uuid::Uuid::parse_str(text).ok().map(Cell::Uuid),
            _ => None,
        },
    };
    converted.ok_or_else(|| mismatch(&value))
}

/// The value `column` binds for a record whose field is `value`: converted when present, null
/// when the record holds JSON `null`, and as `missing` says when the field is absent.
pub fn bind_field<'a>(
    column: &str,
    kind: ColumnType,
    value: Option<Leaf<'a>>,
    missing: Missing,
) -> Result<Cell<'a>, String> {
    if value.is_none() && missing == Missing::Unset {
        return Ok(Cell::Unset);
    }
    to_cell(column, kind, value)
}

/// Bytes a bound row takes in the request (each value with its 4-byte length), which is about
/// what the mutation it makes weighs on the server.
pub fn bound_bytes(values: &[Cell]) -> usize {
    values.iter().map(|value| 4 + value.bytes()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::fields::{FieldPath, FieldSet};

    #[test]
    fn wire_bytes_are_what_the_driver_serialises() {
        let text = |t: &str| Cell::Text(Cow::Owned(t.to_owned()));
        let time_id = uuid::Uuid::parse_str("50554d6e-29bb-11e5-b345-feff819cdc9f").unwrap();
        let cases = [
            (text(""), NativeType::Text),
            (text("Zoë \"quoted\""), NativeType::Text),
            (text("plain"), NativeType::Ascii),
            (Cell::Int(-7), NativeType::Int),
            (Cell::Int(i32::MAX), NativeType::Int),
            (Cell::BigInt(1 << 40), NativeType::BigInt),
            (Cell::BigInt(-1), NativeType::BigInt),
            (Cell::Boolean(true), NativeType::Boolean),
            (Cell::Boolean(false), NativeType::Boolean),
            (Cell::Timestamp(1_500), NativeType::Timestamp),
            (
                Cell::Uuid(uuid::Uuid::from_u128(0x0123_4567_89ab_cdef)),
                NativeType::Uuid,
            ),
            (Cell::Uuid(time_id), NativeType::Timeuuid),
            (Cell::Double(2.5), NativeType::Double),
            (Cell::Double(-0.0), NativeType::Double),
        ];
        for (cell, native) in cases {
            // The driver writes a 4-byte length, then the value.
            let mut serialised = Vec::new();
            cell.serialize(
                &CqlType::Native(native.clone()),
                CellWriter::new(&mut serialised),
            )
            .unwrap();
            let (length, expected) = serialised.split_at(4);
            assert_eq!(length, (expected.len() as i32).to_be_bytes(), "{cell:?}");
            let ours = cell.with_wire_bytes(<[u8]>::to_vec);
            assert_eq!(ours.as_deref(), Some(expected), "{cell:?} as {native:?}");
        }
        assert_eq!(Cell::Unset.with_wire_bytes(<[u8]>::len), None);
        assert_eq!(Cell::Null.with_wire_bytes(<[u8]>::len), None);
    }

    /// Field `v` of `{"v": JSON}` (absent when `json` is empty), bound for a column of `kind`.
    fn bound(kind: ColumnType, json: &str, missing: Missing) -> Result<Cell<'static>, String> {
        let document = if json.is_empty() {
            "{}".to_owned()
        } else {
            format!(r#"{{"v": {json}}}"#)
        };
        let mut found = FieldSet::new(&[FieldPath::parse("v")])
            .read(document.as_bytes())
            .unwrap();
        bind_field("dob", kind, found.remove(0), missing).map(Cell::into_owned)
    }

    fn ok(kind: ColumnType, json: &str) -> Cell<'static> {
        bound(kind, json, Missing::Unset).unwrap()
    }

    #[test]
    fn converts_each_supported_type() {
        assert_eq!(ok(ColumnType::Text, r#""a""#), Cell::Text("a".into()));
        assert_eq!(ok(ColumnType::Text, "12345"), Cell::Text("12345".into()));
        assert_eq!(ok(ColumnType::Text, "true"), Cell::Text("true".into()));
        assert_eq!(ok(ColumnType::Int, "7"), Cell::Int(7));
        assert_eq!(
            ok(ColumnType::BigInt, "1099511627776"),
            Cell::BigInt(1 << 40)
        );
        assert_eq!(ok(ColumnType::Boolean, "true"), Cell::Boolean(true));
        assert_eq!(ok(ColumnType::Double, "2.5"), Cell::Double(2.5));
        // The nearest double to the text (serde_json's `float_roundtrip`): without it these were
        // a unit in the last place off.
        assert_eq!(
            ok(ColumnType::Double, "-122.41941550000001"),
            Cell::Double(-122.419_415_500_000_01)
        );
        assert_eq!(ok(ColumnType::Double, "9e24"), Cell::Double(9e24));
        assert_eq!(
            ok(ColumnType::Timestamp, r#""1970-01-01T00:00:01.500Z""#),
            Cell::Timestamp(1500)
        );
        assert_eq!(ok(ColumnType::Timestamp, "42"), Cell::Timestamp(42));
        let id = "0f9c6f0e-5d0b-4b8f-9a57-6a1c0a2b9e11";
        assert_eq!(
            ok(ColumnType::Uuid, &format!("\"{id}\"")),
            Cell::Uuid(uuid::Uuid::parse_str(id).unwrap())
        );
        assert_eq!(to_cell("c", ColumnType::Int, None).unwrap(), Cell::Null);
        assert_eq!(ok(ColumnType::Int, "null"), Cell::Null);
    }

    #[test]
    fn text_borrows_the_record_unless_it_holds_escapes() {
        let bytes = br#"{"plain": "abc", "escaped": "a\u0062c"}"#;
        let paths = [FieldPath::parse("plain"), FieldPath::parse("escaped")];
        let found = FieldSet::new(&paths).read(bytes).unwrap();
        let cells: Vec<Cell> = found
            .into_iter()
            .map(|leaf| to_cell("c", ColumnType::Text, leaf).unwrap())
            .collect();
        assert!(matches!(&cells[0], Cell::Text(Cow::Borrowed("abc"))));
        assert_eq!(cells[1], Cell::Text("abc".into()));
    }

    #[test]
    fn mismatches_name_the_column_and_the_value() {
        for (kind, json, shown) in [
            (ColumnType::Int, r#""seven""#, r#""seven""#),
            (ColumnType::Int, "1099511627776", "1099511627776"),
            (ColumnType::Int, "1.5", "1.5"),
            (ColumnType::Uuid, r#""not-a-uuid""#, r#""not-a-uuid""#),
            (ColumnType::Timestamp, r#""yesterday""#, r#""yesterday""#),
            (ColumnType::Boolean, "1", "1"),
            (ColumnType::Text, r#"{"a": 1}"#, "an object"),
            (ColumnType::Double, "[1]", "an array"),
        ] {
            let error = bound(kind, json, Missing::Unset).unwrap_err();
            assert!(error.contains("`dob`"), "{error}");
            assert!(error.contains(shown), "{error}");
        }
        assert_eq!(ColumnType::parse("map<text, int>"), None);
    }

    #[test]
    fn an_absent_field_is_unset_unless_missing_is_null_and_a_json_null_is_null() {
        assert_eq!(bound(ColumnType::Text, "", Missing::Unset), Ok(Cell::Unset));
        assert_eq!(bound(ColumnType::Text, "", Missing::Null), Ok(Cell::Null));
        for missing in [Missing::Unset, Missing::Null] {
            assert_eq!(bound(ColumnType::Text, "null", missing), Ok(Cell::Null));
            assert_eq!(
                bound(ColumnType::Text, r#""Zoë""#, missing),
                Ok(Cell::Text("Zoë".into()))
            );
        }
    }

    #[test]
    fn cells_serialise_as_the_driver_serialises_the_column_type_and_refuse_another() {
        let native = |kind| CqlType::Native(kind);
        let serialised = |cell: &Cell, typ: &CqlType| {
            let mut buffer = Vec::new();
            let written = cell.serialize(typ, CellWriter::new(&mut buffer)).is_ok();
            written.then_some(buffer)
        };
        let id = uuid::Uuid::parse_str("0f9c6f0e-5d0b-4b8f-9a57-6a1c0a2b9e11").unwrap();
        let cases = [
            (Cell::Text("abc".into()), native(NativeType::Text)),
            (Cell::Text("abc".into()), native(NativeType::Ascii)),
            (Cell::Int(7), native(NativeType::Int)),
            (Cell::BigInt(7), native(NativeType::BigInt)),
            (Cell::Boolean(true), native(NativeType::Boolean)),
            (Cell::Double(0.5), native(NativeType::Double)),
            (Cell::Timestamp(1500), native(NativeType::Timestamp)),
            (Cell::Uuid(id), native(NativeType::Uuid)),
            (Cell::Uuid(id), native(NativeType::Timeuuid)),
        ];
        for (cell, typ) in &cases {
            let bytes = serialised(cell, typ).unwrap();
            assert_eq!(bytes.len(), 4 + cell.bytes(), "{cell:?} as {typ:?}");
        }
        // Null and unset are the negative lengths -1 and -2, for any type.
        assert_eq!(
            serialised(&Cell::Null, &native(NativeType::Int)).unwrap(),
            (-1_i32).to_be_bytes()
        );
        assert_eq!(
            serialised(&Cell::Unset, &native(NativeType::Int)).unwrap(),
            (-2_i32).to_be_bytes()
        );
        assert_eq!(
            serialised(&Cell::Text("7".into()), &native(NativeType::Int)),
            None
        );
        assert_eq!(serialised(&Cell::Int(7), &native(NativeType::BigInt)), None);
    }

    #[test]
    fn bound_bytes_count_each_value_and_its_length() {
        let row = [
            Cell::Text("abc".into()),
            Cell::BigInt(1),
            Cell::Null,
            Cell::Unset,
        ];
        assert_eq!(bound_bytes(&row), (4 + 3) + (4 + 8) + 4 + 4);
    }
}
