//! JSON values to CQL values for the column types the sink supports, with an error that names
//! the column, its type and what the record held, and what a field absent from the record binds
//! to (unset by default, so an earlier write's value stays). Values are read as Cassandra's own
//! `INSERT ... JSON` reads them where it can: dates, times, addresses and blobs from their CQL
//! text forms, `varint` and `decimal` from numbers or from text, exactly; collections and
//! tuples from arrays, maps and user-defined types from objects.

use std::borrow::Cow;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, NaiveTime, Timelike};
use scylla::frame::response::result::{CollectionType, ColumnType as CqlType, NativeType};
use scylla::serialize::SerializationError;
use scylla::serialize::value::SerializeValue;
use scylla::serialize::writers::{CellWriter, WrittenCellProof};
use scylla::value::{CqlDate, CqlDecimal, CqlTime, CqlTimestamp, CqlTimeuuid, CqlVarint};
use serde::Deserialize;
use serde_json::Number;

use super::kinds::ColumnKind;
use super::numbers;
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
    /// tinyint
    TinyInt,
    /// smallint
    SmallInt,
    /// int
    Int,
    /// bigint
    BigInt,
    /// varint: from an integer, or from text of up to 100 digits
    Varint,
    /// boolean
    Boolean,
    /// timestamp: from RFC 3339 text or epoch milliseconds
    Timestamp,
    /// date: from `YYYY-MM-DD` text
    Date,
    /// time: from `HH:MM:SS` text with up to nine digits of fraction
    Time,
    /// uuid, timeuuid: from text
    Uuid,
    /// float: from a number within its range (rounded to the nearest float)
    Float,
    /// double
    Double,
    /// decimal: exactly, from a number as the record writes it (`12.50` keeps its scale) or
    /// from text such as `"12.50"`
    Decimal,
    /// inet: from IPv4 or IPv6 text
    Inet,
    /// blob: from `0x` and hex digits, as CQL writes a blob
    Blob,
}

/// The types [`ColumnType::parse`] takes, for messages.
pub const SUPPORTED_TYPES: &str = "text, varchar, ascii, tinyint, smallint, int, bigint, varint, boolean, timestamp, date, time, uuid, timeuuid, float, double, decimal, inet, blob";

impl ColumnType {
    /// Whether a number written into the column keeps every digit the record wrote (`varint`,
    /// `decimal`, text), so that it must not be read through a float.
    pub fn keeps_every_digit(self) -> bool {
        matches!(
            self,
            ColumnType::Varint | ColumnType::Decimal | ColumnType::Text
        )
    }

    /// Parses the type name in `system_schema.columns`; `None` for unsupported types.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "text" | "varchar" | "ascii" => ColumnType::Text,
            "tinyint" => ColumnType::TinyInt,
            "smallint" => ColumnType::SmallInt,
            "int" => ColumnType::Int,
            "bigint" => ColumnType::BigInt,
            "varint" => ColumnType::Varint,
            "boolean" => ColumnType::Boolean,
            "timestamp" => ColumnType::Timestamp,
            "date" => ColumnType::Date,
            "time" => ColumnType::Time,
            "uuid" | "timeuuid" => ColumnType::Uuid,
            "float" => ColumnType::Float,
            "double" => ColumnType::Double,
            "decimal" => ColumnType::Decimal,
            "inet" => ColumnType::Inet,
            "blob" => ColumnType::Blob,
            _ => return None,
        })
    }

    /// Why a column of the type `name` cannot be written, in words for the error that stops
    /// the sink.
    pub fn unsupported(name: &str) -> String {
        if name == "counter" {
            return "a counter column is changed by UPDATE ... SET c = c + n, which an INSERT cannot do: write counters with another tool, or keep them in a table of their own".into();
        }
        format!(
            "the sink writes {SUPPORTED_TYPES}, and lists, sets, maps (whose keys are of those types), tuples and user-defined types of them, nested as CQL allows"
        )
    }
}

/// The days CQL's `date` counts from: 2^31 is 1970-01-01.
const DATE_EPOCH: i64 = 1 << 31;

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
    /// tinyint
    TinyInt(i8),
    /// smallint
    SmallInt(i16),
    /// int
    Int(i32),
    /// bigint
    BigInt(i64),
    /// varint: two's-complement big-endian bytes
    Varint(Vec<u8>),
    /// boolean
    Boolean(bool),
    /// timestamp, in milliseconds since the epoch
    Timestamp(i64),
    /// date, in days where 2^31 is the epoch
    Date(u32),
    /// time, in nanoseconds since midnight
    Time(i64),
    /// uuid or timeuuid, as the column is declared
    Uuid(uuid::Uuid),
    /// float
    Float(f32),
    /// double
    Double(f64),
    /// decimal: the unscaled integer and the scale
    Decimal(numbers::Scaled),
    /// inet
    Inet(IpAddr),
    /// blob
    Blob(Vec<u8>),
    /// list or set, as the column is declared
    List(Vec<Cell<'a>>),
    /// map
    Map(Vec<(Cell<'a>, Cell<'a>)>),
    /// tuple or user-defined type: each component in its declared order, null where absent
    Tuple(Vec<Cell<'a>>),
}

impl Cell<'_> {
    /// The same value owning its text, to be kept beyond the record.
    pub fn into_owned(self) -> Cell<'static> {
        match self {
            Cell::Text(text) => Cell::Text(Cow::Owned(text.into_owned())),
            Cell::Unset => Cell::Unset,
            Cell::Null => Cell::Null,
            Cell::TinyInt(n) => Cell::TinyInt(n),
            Cell::SmallInt(n) => Cell::SmallInt(n),
            Cell::Int(n) => Cell::Int(n),
            Cell::BigInt(n) => Cell::BigInt(n),
            Cell::Varint(bytes) => Cell::Varint(bytes),
            Cell::Boolean(flag) => Cell::Boolean(flag),
            Cell::Timestamp(ms) => Cell::Timestamp(ms),
            Cell::Date(days) => Cell::Date(days),
            Cell::Time(nanos) => Cell::Time(nanos),
            Cell::Uuid(id) => Cell::Uuid(id),
            Cell::Float(x) => Cell::Float(x),
            Cell::Double(x) => Cell::Double(x),
            Cell::Decimal(scaled) => Cell::Decimal(scaled),
            Cell::Inet(address) => Cell::Inet(address),
            Cell::Blob(bytes) => Cell::Blob(bytes),
            Cell::List(items) => Cell::List(items.into_iter().map(Cell::into_owned).collect()),
            Cell::Tuple(items) => Cell::Tuple(items.into_iter().map(Cell::into_owned).collect()),
            Cell::Map(entries) => Cell::Map(
                entries
                    .into_iter()
                    .map(|(key, value)| (key.into_owned(), value.into_owned()))
                    .collect(),
            ),
        }
    }

    /// Calls `use_bytes` with the value's bytes as the request carries them (the CQL encoding of
    /// its type), without copying text or allocating (but for a decimal's scale and digits);
    /// `None` for unset and null, which have none. A partition key's token is computed from
    /// these bytes.
    pub fn with_wire_bytes<R>(&self, use_bytes: impl FnOnce(&[u8]) -> R) -> Option<R> {
        Some(match self {
            Cell::Unset | Cell::Null => return None,
            Cell::Text(text) => use_bytes(text.as_bytes()),
            Cell::TinyInt(n) => use_bytes(&n.to_be_bytes()),
            Cell::SmallInt(n) => use_bytes(&n.to_be_bytes()),
            Cell::Int(n) => use_bytes(&n.to_be_bytes()),
            Cell::BigInt(n) | Cell::Timestamp(n) | Cell::Time(n) => use_bytes(&n.to_be_bytes()),
            Cell::Varint(bytes) | Cell::Blob(bytes) => use_bytes(bytes),
            Cell::Boolean(flag) => use_bytes(&[u8::from(*flag)]),
            Cell::Date(days) => use_bytes(&days.to_be_bytes()),
            Cell::Uuid(id) => use_bytes(id.as_bytes()),
            Cell::Float(x) => use_bytes(&x.to_be_bytes()),
            Cell::Double(x) => use_bytes(&x.to_be_bytes()),
            Cell::Decimal(scaled) => {
                let mut bytes = scaled.scale.to_be_bytes().to_vec();
                bytes.extend_from_slice(&scaled.unscaled);
                use_bytes(&bytes)
            }
            Cell::Inet(IpAddr::V4(address)) => use_bytes(&address.octets()),
            Cell::Inet(IpAddr::V6(address)) => use_bytes(&address.octets()),
            Cell::List(items) => use_bytes(&collection_bytes(items.len(), &mut items.iter())),
            Cell::Tuple(items) => use_bytes(&tuple_bytes(items)),
            Cell::Map(entries) => use_bytes(&collection_bytes(
                entries.len(),
                &mut entries.iter().flat_map(|(key, value)| [key, value]),
            )),
        })
    }

    /// Bytes the value takes in the request, beside its 4-byte length.
    fn bytes(&self) -> usize {
        match self {
            Cell::Unset | Cell::Null => 0,
            Cell::Text(text) => text.len(),
            Cell::Boolean(_) | Cell::TinyInt(_) => 1,
            Cell::SmallInt(_) => 2,
            Cell::Int(_) | Cell::Date(_) | Cell::Float(_) => 4,
            Cell::BigInt(_) | Cell::Double(_) | Cell::Timestamp(_) | Cell::Time(_) => 8,
            Cell::Uuid(_) => 16,
            Cell::Varint(bytes) | Cell::Blob(bytes) => bytes.len(),
            Cell::Decimal(scaled) => 4 + scaled.unscaled.len(),
            Cell::Inet(IpAddr::V4(_)) => 4,
            Cell::Inet(IpAddr::V6(_)) => 16,
            Cell::List(items) => 4 + items.iter().map(|item| 4 + item.bytes()).sum::<usize>(),
            Cell::Tuple(items) => items.iter().map(|item| 4 + item.bytes()).sum::<usize>(),
            Cell::Map(entries) => {
                4 + entries
                    .iter()
                    .map(|(key, value)| 8 + key.bytes() + value.bytes())
                    .sum::<usize>()
            }
        }
    }
}

/// A collection as CQL encodes it: the count of elements (a map's entries), then each element
/// (a map's key and value in turn) with its 4-byte length.
/// (A `dyn` iterator: a generic one would instantiate [`Cell::with_wire_bytes`] without end.)
fn collection_bytes<'c, 'a: 'c>(
    count: usize,
    elements: &mut dyn Iterator<Item = &'c Cell<'a>>,
) -> Vec<u8> {
    let mut bytes = i32::try_from(count)
        .unwrap_or(i32::MAX)
        .to_be_bytes()
        .to_vec();
    for element in elements {
        element.with_wire_bytes(|value| {
            bytes.extend_from_slice(&i32::try_from(value.len()).unwrap_or(i32::MAX).to_be_bytes());
            bytes.extend_from_slice(value);
        });
    }
    bytes
}

/// A tuple or a user type as CQL encodes it: each component with its 4-byte length, -1 for a
/// null one, and no count.
fn tuple_bytes(items: &[Cell]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for item in items {
        let written = item.with_wire_bytes(|value| {
            bytes.extend_from_slice(&i32::try_from(value.len()).unwrap_or(i32::MAX).to_be_bytes());
            bytes.extend_from_slice(value);
        });
        if written.is_none() {
            bytes.extend_from_slice(&(-1i32).to_be_bytes());
        }
    }
    bytes
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
            Cell::TinyInt(n) => n.serialize(typ, writer),
            Cell::SmallInt(n) => n.serialize(typ, writer),
            Cell::Int(n) => n.serialize(typ, writer),
            Cell::BigInt(n) => n.serialize(typ, writer),
            Cell::Varint(bytes) => {
                CqlVarint::from_signed_bytes_be_slice(bytes).serialize(typ, writer)
            }
            Cell::Boolean(flag) => flag.serialize(typ, writer),
            Cell::Timestamp(ms) => CqlTimestamp(*ms).serialize(typ, writer),
            Cell::Date(days) => CqlDate(*days).serialize(typ, writer),
            Cell::Time(nanos) => CqlTime(*nanos).serialize(typ, writer),
            Cell::Uuid(id) if matches!(typ, CqlType::Native(NativeType::Timeuuid)) => {
                CqlTimeuuid::from(*id).serialize(typ, writer)
            }
            Cell::Uuid(id) => id.serialize(typ, writer),
            Cell::Float(x) => x.serialize(typ, writer),
            Cell::Double(x) => x.serialize(typ, writer),
            Cell::Decimal(scaled) => {
                CqlDecimal::from_signed_be_bytes_slice_and_exponent(&scaled.unscaled, scaled.scale)
                    .serialize(typ, writer)
            }
            Cell::Inet(address) => address.serialize(typ, writer),
            Cell::Blob(bytes) => bytes.as_slice().serialize(typ, writer),
            Cell::List(items) => items.serialize(typ, writer),
            Cell::Map(entries) => serialize_map(entries, typ, writer),
            Cell::Tuple(items) => serialize_tuple(items, typ, writer),
        }
    }
}

/// A tuple's or a user type's components serialised for the column's type, each by its own
/// declared type.
fn serialize_tuple<'b>(
    items: &[Cell],
    typ: &CqlType,
    writer: CellWriter<'b>,
) -> Result<WrittenCellProof<'b>, SerializationError> {
    let types: Vec<&CqlType> = match typ {
        CqlType::Tuple(types) => types.iter().collect(),
        CqlType::UserDefinedType { definition, .. } => {
            definition.field_types.iter().map(|(_, t)| t).collect()
        }
        other => return Err(SerializationError::new(NotATuple(format!("{other:?}")))),
    };
    // Fewer components than the type has are the first ones, the rest null, as CQL reads them:
    // a user type that gained a field (`ALTER TYPE ... ADD`) after the sink read it.
    if items.len() > types.len() {
        return Err(SerializationError::new(NotATuple(format!(
            "{typ:?}, which has {} components, not {}",
            types.len(),
            items.len()
        ))));
    }
    let mut builder = writer.into_value_builder();
    for (item, typ) in items.iter().zip(types) {
        item.serialize(typ, builder.make_sub_writer())?;
    }
    builder.finish().map_err(SerializationError::new)
}

/// A tuple or user type value bound to a column that does not take one.
#[derive(Debug, thiserror::Error)]
#[error("a tuple or user type value cannot be written as {0}")]
struct NotATuple(String);

/// A map's entries serialised for a `map<K, V>` column, each key and value by its own type.
fn serialize_map<'b>(
    entries: &[(Cell, Cell)],
    typ: &CqlType,
    writer: CellWriter<'b>,
) -> Result<WrittenCellProof<'b>, SerializationError> {
    let CqlType::Collection {
        typ: CollectionType::Map(key_type, value_type),
        ..
    } = typ
    else {
        return Err(SerializationError::new(NotAMap(format!("{typ:?}"))));
    };
    let mut builder = writer.into_value_builder();
    let count = i32::try_from(entries.len())
        .map_err(|_| SerializationError::new(NotAMap("a map of over 2^31 entries".into())))?;
    builder.append_bytes(&count.to_be_bytes());
    for (key, value) in entries {
        key.serialize(key_type, builder.make_sub_writer())?;
        value.serialize(value_type, builder.make_sub_writer())?;
    }
    builder.finish().map_err(SerializationError::new)
}

/// A map value bound to a column that does not take one.
#[derive(Debug, thiserror::Error)]
#[error("a map cannot be written as {0}")]
struct NotAMap(String);

/// Converts one field for `column`: null for an absent or null field.
pub fn to_cell<'a>(
    column: &str,
    kind: &ColumnKind,
    value: Option<Leaf<'a>>,
) -> Result<Cell<'a>, String> {
    match value {
        None | Some(Leaf::Null) => Ok(Cell::Null),
        Some(value) => value_cell(column, kind, value, ""),
    }
}

/// Converts a present, non-null value of `kind` found `at` a place inside the column's field
/// (`item 2, field zip`; empty for the field itself), which an error names.
fn value_cell<'a>(
    column: &str,
    kind: &ColumnKind,
    value: Leaf<'a>,
    at: &str,
) -> Result<Cell<'a>, String> {
    let located = |error: String| {
        if at.is_empty() {
            error
        } else {
            format!("{error} (at {at})")
        }
    };
    let inside = |part: String| {
        if at.is_empty() {
            part
        } else {
            format!("{at}, {part}")
        }
    };
    // A part of a collection may not be null; one of a tuple or a user type may.
    let part = |place: String, part_kind: &ColumnKind, leaf: Leaf<'a>, nullable: bool| match leaf {
        Leaf::Null if nullable => Ok(Cell::Null),
        Leaf::Null => Err(format!(
            "column `{column}` ({kind}) cannot hold null at {place}: a collection holds no nulls"
        )),
        leaf => value_cell(column, part_kind, leaf, &place),
    };
    match (kind, value) {
        (&ColumnKind::Native(native), value) => native_cell(column, native, value).map_err(located),
        (ColumnKind::List(item), Leaf::Items(items)) => items
            .into_iter()
            .enumerate()
            .map(|(index, leaf)| part(inside(format!("item {index}")), item, leaf, false))
            .collect::<Result<Vec<_>, _>>()
            .map(Cell::List),
        (ColumnKind::Set(item), Leaf::Items(items)) => {
            let mut seen = std::collections::HashSet::new();
            let mut kept = Vec::with_capacity(items.len());
            for (index, leaf) in items.into_iter().enumerate() {
                let cell = part(inside(format!("item {index}")), item, leaf, false)?;
                if cell.with_wire_bytes(|bytes| seen.insert(bytes.to_vec())) == Some(true) {
                    kept.push(cell);
                }
            }
            Ok(Cell::List(kept))
        }
        (&ColumnKind::Map(key_type, ref value_kind), Leaf::Entries(entries)) => {
            let mut at_key = std::collections::HashMap::new();
            let mut kept: Vec<(Cell, Cell)> = Vec::with_capacity(entries.len());
            for (key, leaf) in entries {
                let place = inside(format!("key {}", serde_json::Value::from(key.as_ref())));
                let key_cell = native_cell(column, key_type, key_leaf(key_type, key))
                    .map_err(|e| format!("{e} (at {place})"))?;
                let value_cell = part(place, value_kind, leaf, false)?;
                let bytes = key_cell.with_wire_bytes(<[u8]>::to_vec).unwrap_or_default();
                match at_key.get(&bytes) {
                    Some(&index) => kept[index] = (key_cell, value_cell),
                    None => {
                        at_key.insert(bytes, kept.len());
                        kept.push((key_cell, value_cell));
                    }
                }
            }
            Ok(Cell::Map(kept))
        }
        (ColumnKind::Tuple(kinds), Leaf::Items(items)) => {
            if items.len() != kinds.len() {
                return Err(located(format!(
                    "column `{column}` ({kind}) takes an array of {} items, not {}",
                    kinds.len(),
                    items.len()
                )));
            }
            items
                .into_iter()
                .zip(kinds)
                .enumerate()
                .map(|(index, (leaf, item))| {
                    part(inside(format!("item {index}")), item, leaf, true)
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Cell::Tuple)
        }
        (ColumnKind::User(user), Leaf::Entries(entries)) => {
            let mut fields = vec![Cell::Null; user.fields.len()];
            for (key, leaf) in entries {
                let Some(index) = user.fields.iter().position(|(name, _)| *name == key) else {
                    let fields: Vec<&str> =
                        user.fields.iter().map(|(name, _)| name.as_str()).collect();
                    return Err(located(format!(
                        "column `{column}` (user type {}) has no field {} (its fields: {}; drop the key in a plugin, or add the field with ALTER TYPE and restart the pipeline)",
                        user.name,
                        serde_json::Value::from(key.as_ref()),
                        fields.join(", ")
                    )));
                };
                let place = inside(format!("field {key}"));
                fields[index] = part(place, &user.fields[index].1, leaf, true)?;
            }
            Ok(Cell::Tuple(fields))
        }
        (_, value) => Err(located(format!(
            "column `{column}` ({kind}) cannot hold {value}"
        ))),
    }
}

/// A map key's text as the leaf its type reads: itself for text, else the JSON scalar it
/// spells when it spells one (`"1"` an integer, `"true"` a boolean), as Cassandra reads a
/// JSON map's keys.
fn key_leaf(key_type: ColumnType, key: Cow<'_, str>) -> Leaf<'_> {
    if key_type.keeps_every_digit() {
        // Text as it is; a varint or a decimal from its text, every digit.
        return Leaf::Text(key);
    }
    match serde_json::from_str::<serde_json::Value>(&key) {
        Ok(serde_json::Value::Number(number)) => Leaf::Number(number),
        Ok(serde_json::Value::Bool(flag)) => Leaf::Bool(flag),
        _ => Leaf::Text(key),
    }
}

/// Converts a present, non-null field for a column of a native type.
fn native_cell<'a>(column: &str, kind: ColumnType, value: Leaf<'a>) -> Result<Cell<'a>, String> {
    let mismatch = |value: &Leaf| format!("column `{column}` ({kind:?}) cannot hold {value}");
    if kind == ColumnType::Text
        && matches!(
            value,
            Leaf::Text(_) | Leaf::Number(_) | Leaf::Numeral(_) | Leaf::Bool(_)
        )
    {
        // A scalar always has a text form; a number's is as the record writes it.
        return Ok(Cell::Text(value.into_text().unwrap_or_default()));
    }
    // A number as written is read as serde_json reads it for the types that take a float or
    // a bounded integer; its text is kept for those that keep every digit.
    let parsed_numeral;
    let number = match &value {
        Leaf::Number(number) => Some(number),
        Leaf::Numeral(numeral) => {
            parsed_numeral = numeral.parse::<Number>().ok();
            parsed_numeral.as_ref()
        }
        _ => None,
    };
    let numeral = match &value {
        Leaf::Numeral(numeral) => Some(*numeral),
        _ => None,
    };
    let text = match &value {
        Leaf::Text(text) => Some(text.as_ref()),
        _ => None,
    };
    let unparsed = |why: String| format!("{}: {why}", mismatch(&value));
    let converted = match kind {
        ColumnType::Text => None,
        ColumnType::TinyInt => number
            .and_then(Number::as_i64)
            .and_then(|n| i8::try_from(n).ok())
            .map(Cell::TinyInt),
        ColumnType::SmallInt => number
            .and_then(Number::as_i64)
            .and_then(|n| i16::try_from(n).ok())
            .map(Cell::SmallInt),
        ColumnType::Int => number
            .and_then(Number::as_i64)
            .and_then(|n| i32::try_from(n).ok())
            .map(Cell::Int),
        ColumnType::BigInt => number.and_then(Number::as_i64).map(Cell::BigInt),
        ColumnType::Varint | ColumnType::Decimal
            if text.or(numeral).is_some_and(|text| {
                text.bytes().filter(u8::is_ascii_digit).count() > numbers::MAX_DIGITS
            }) =>
        {
            return Err(unparsed(format!(
                "more than {} digits",
                numbers::MAX_DIGITS
            )));
        }
        ColumnType::Varint => match (numeral, number, text) {
            (Some(written), ..) | (_, _, Some(written)) => {
                numbers::integer(written).map(Cell::Varint)
            }
            (_, Some(number), _) if number.is_i64() || number.is_u64() => {
                numbers::integer(&number.to_string()).map(Cell::Varint)
            }
            _ => None,
        },
        ColumnType::Float => number.and_then(Number::as_f64).and_then(|x| {
            let narrowed = x as f32;
            narrowed.is_finite().then_some(Cell::Float(narrowed))
        }),
        ColumnType::Double => number.and_then(Number::as_f64).map(Cell::Double),
        ColumnType::Decimal => match (numeral, number, text) {
            (Some(written), ..) | (_, _, Some(written)) => {
                numbers::decimal(written).map(Cell::Decimal)
            }
            (_, Some(number), _) => numbers::decimal(&number.to_string()).map(Cell::Decimal),
            _ => None,
        },
        ColumnType::Boolean => match &value {
            Leaf::Bool(flag) => Some(Cell::Boolean(*flag)),
            _ => None,
        },
        ColumnType::Timestamp => match &value {
            Leaf::Number(number) => number.as_i64().map(Cell::Timestamp),
            Leaf::Text(text) => {
                return DateTime::parse_from_rfc3339(text)
                    .map(|at| Cell::Timestamp(at.timestamp_millis()))
                    .map_err(|e| unparsed(e.to_string()));
            }
            _ => None,
        },
        ColumnType::Date => match text {
            Some(text) => {
                let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .map_err(|e| unparsed(format!("{e} (write YYYY-MM-DD)")))?;
                let days = date
                    .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default())
                    .num_days();
                u32::try_from(days + DATE_EPOCH).ok().map(Cell::Date)
            }
            None => None,
        },
        ColumnType::Time => match text {
            Some(text) => {
                let time = NaiveTime::parse_from_str(text, "%H:%M:%S%.f")
                    .map_err(|e| unparsed(format!("{e} (write HH:MM:SS or HH:MM:SS.fffffffff)")))?;
                // chrono reads a leap second as a nanosecond count past one second.
                (time.nanosecond() < 1_000_000_000).then(|| {
                    Cell::Time(
                        i64::from(time.num_seconds_from_midnight()) * 1_000_000_000
                            + i64::from(time.nanosecond()),
                    )
                })
            }
            None => None,
        },
        ColumnType::Uuid => text
            .and_then(|text| uuid::Uuid::parse_str(text).ok())
            .map(Cell::Uuid),
        ColumnType::Inet => text
            .and_then(|text| text.parse::<IpAddr>().ok())
            .map(Cell::Inet),
        ColumnType::Blob => match text {
            Some(text) => {
                let digits = text
                    .strip_prefix("0x")
                    .or_else(|| text.strip_prefix("0X"))
                    .ok_or_else(|| unparsed("a blob is written as 0x and hex digits".into()))?;
                Some(Cell::Blob(
                    hex::decode(digits).map_err(|e| unparsed(e.to_string()))?,
                ))
            }
            None => None,
        },
    };
    converted.ok_or_else(|| mismatch(&value))
}

/// The value `column` binds for a record whose field is `value`: converted when present, null
/// when the record holds JSON `null`, and as `missing` says when the field is absent.
pub fn bind_field<'a>(
    column: &str,
    kind: &ColumnKind,
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
    use std::sync::Arc;

    use super::*;
    use crate::connectors::cassandra::kinds::UserType;

    /// A native type inside a collection.
    fn n(native: ColumnType) -> Box<ColumnKind> {
        Box::new(ColumnKind::Native(native))
    }
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
            (Cell::TinyInt(-3), NativeType::TinyInt),
            (Cell::SmallInt(-300), NativeType::SmallInt),
            (Cell::Varint(vec![0xff, 0x00]), NativeType::Varint),
            (Cell::Date(DATE_EPOCH as u32 + 3), NativeType::Date),
            (Cell::Time(3_600_000_000_001), NativeType::Time),
            (Cell::Float(-1.25), NativeType::Float),
            (
                Cell::Decimal(numbers::decimal("-12.50").unwrap()),
                NativeType::Decimal,
            ),
            (Cell::Inet("10.0.0.1".parse().unwrap()), NativeType::Inet),
            (Cell::Inet("2001:db8::1".parse().unwrap()), NativeType::Inet),
            (Cell::Blob(vec![0xca, 0xfe]), NativeType::Blob),
            (Cell::Blob(Vec::new()), NativeType::Blob),
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
        let path = FieldPath::parse("v");
        let mut found = FieldSet::reading([(&path, ColumnKind::from(kind).reading())])
            .read(document.as_bytes())
            .unwrap();
        bind_field("dob", &kind.into(), found.remove(0), missing).map(Cell::into_owned)
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
        assert_eq!(
            to_cell("c", &ColumnType::Int.into(), None).unwrap(),
            Cell::Null
        );
        assert_eq!(ok(ColumnType::Int, "null"), Cell::Null);
    }

    #[test]
    fn converts_the_other_native_types_from_their_cql_text_forms() {
        assert_eq!(ok(ColumnType::TinyInt, "-128"), Cell::TinyInt(-128));
        assert_eq!(ok(ColumnType::SmallInt, "32767"), Cell::SmallInt(32767));
        assert_eq!(ok(ColumnType::Float, "1.5"), Cell::Float(1.5));
        assert_eq!(ok(ColumnType::Float, "7"), Cell::Float(7.0));
        assert_eq!(
            ok(ColumnType::Varint, "-129"),
            Cell::Varint(vec![0xff, 0x7f])
        );
        assert_eq!(
            ok(ColumnType::Varint, r#""18446744073709551616""#),
            Cell::Varint(vec![0x01, 0, 0, 0, 0, 0, 0, 0, 0])
        );
        let decimal = |text: &str| Cell::Decimal(numbers::decimal(text).unwrap());
        assert_eq!(ok(ColumnType::Decimal, "12.5"), decimal("12.5"));
        assert_eq!(ok(ColumnType::Decimal, "3"), decimal("3"));
        assert_eq!(
            ok(ColumnType::Decimal, r#""0.1000000000000000000000000001""#),
            decimal("0.1000000000000000000000000001")
        );
        assert_eq!(
            ok(ColumnType::Date, r#""1970-01-04""#),
            Cell::Date(DATE_EPOCH as u32 + 3)
        );
        assert_eq!(
            ok(ColumnType::Date, r#""1969-12-31""#),
            Cell::Date(DATE_EPOCH as u32 - 1)
        );
        assert_eq!(
            ok(ColumnType::Time, r#""01:00:00.000000001""#),
            Cell::Time(3_600_000_000_001)
        );
        assert_eq!(
            ok(ColumnType::Time, r#""23:59:59""#),
            Cell::Time(86_399_000_000_000)
        );
        assert_eq!(
            ok(ColumnType::Inet, r#""192.168.0.1""#),
            Cell::Inet("192.168.0.1".parse().unwrap())
        );
        assert_eq!(
            ok(ColumnType::Inet, r#""::1""#),
            Cell::Inet("::1".parse().unwrap())
        );
        assert_eq!(
            ok(ColumnType::Blob, r#""0xCAfe""#),
            Cell::Blob(vec![0xca, 0xfe])
        );
        assert_eq!(ok(ColumnType::Blob, r#""0x""#), Cell::Blob(Vec::new()));
        for (kind, json, shown) in [
            (ColumnType::TinyInt, "128", "128"),
            (ColumnType::SmallInt, "-32769", "-32769"),
            (ColumnType::Float, "1e39", "1e+39"),
            (ColumnType::Varint, "1.5", "1.5"),
            (ColumnType::Varint, r#""12a""#, r#""12a""#),
            (ColumnType::Decimal, r#""twelve""#, r#""twelve""#),
            (ColumnType::Decimal, "true", "true"),
            (ColumnType::Date, r#""2024-02-30""#, "YYYY-MM-DD"),
            (ColumnType::Date, "19000", "19000"),
            (ColumnType::Time, r#""25:00:00""#, "HH:MM:SS"),
            (ColumnType::Time, r#""23:59:60""#, r#""23:59:60""#),
            (ColumnType::Inet, r#""localhost""#, r#""localhost""#),
            (ColumnType::Blob, r#""cafe""#, "0x and hex digits"),
            (ColumnType::Blob, r#""0xcaf""#, r#""0xcaf""#),
            (
                ColumnType::Varint,
                &format!("\"{}\"", "9".repeat(101)),
                "more than 100 digits",
            ),
        ] {
            let error = bound(kind, json, Missing::Unset).unwrap_err();
            assert!(
                error.contains("`dob`") && error.contains(shown),
                "{kind:?} {json}: {error}"
            );
        }
        for name in SUPPORTED_TYPES.split(", ") {
            assert!(ColumnType::parse(name).is_some(), "{name}");
        }
        assert!(ColumnType::unsupported("counter").contains("UPDATE"));
        assert!(ColumnType::unsupported("duration").contains("decimal, inet, blob"));
    }

    #[test]
    fn numbers_keep_every_digit_the_record_wrote_where_the_column_does() {
        let decimal = |text: &str| Cell::Decimal(numbers::decimal(text).unwrap());
        let integer = |text: &str| Cell::Varint(numbers::integer(text).unwrap());
        let thirty = "123456789012345678901234567890";
        assert_eq!(ok(ColumnType::Decimal, "12.50"), decimal("12.50"));
        assert_ne!(
            ok(ColumnType::Decimal, "12.50"),
            decimal("12.5"),
            "the scale"
        );
        for written in [
            "0.1000000000000000000000000001",
            thirty,
            "-1e400",
            "6.02E+23",
        ] {
            assert_eq!(ok(ColumnType::Decimal, written), decimal(written));
        }
        assert_eq!(ok(ColumnType::Varint, thirty), integer(thirty));
        assert_eq!(ok(ColumnType::Varint, "-129"), integer("-129"));
        for written in ["1.50", thirty, "1e2", "-0"] {
            assert_eq!(ok(ColumnType::Text, written), Cell::Text(written.into()));
        }
        let error = bound(ColumnType::Decimal, &"9".repeat(101), Missing::Unset).unwrap_err();
        assert!(error.contains("more than 100 digits"), "{error}");
        let error = bound(ColumnType::Varint, "1e3", Missing::Unset).unwrap_err();
        assert!(error.contains("cannot hold 1e3"), "{error}");

        // A field read for a decimal column and for others: each reads it as its type does.
        let path = FieldPath::parse("v");
        let kinds = [
            ColumnType::Decimal,
            ColumnType::Int,
            ColumnType::Double,
            ColumnType::Float,
        ];
        let set = FieldSet::reading(kinds.map(|kind| (&path, ColumnKind::from(kind).reading())));
        let found = set.read(br#"{"v": 7.50}"#).unwrap();
        assert!(matches!(found[1], Some(Leaf::Numeral("7.50"))), "{found:?}");
        let cells: Vec<_> = kinds
            .iter()
            .zip(found)
            .map(|(kind, leaf)| to_cell("v", &(*kind).into(), leaf))
            .collect();
        assert_eq!(
            cells,
            [
                Ok(decimal("7.50")),
                Err("column `v` (Int) cannot hold 7.50".to_owned()),
                Ok(Cell::Double(7.5)),
                Ok(Cell::Float(7.5))
            ]
        );
        let found = set.read(br#"{"v": 7}"#).unwrap();
        assert_eq!(
            to_cell("v", &ColumnType::Int.into(), found[1].clone()),
            Ok(Cell::Int(7))
        );

        // In collections: items, values and map keys.
        use ColumnKind::{List, Map, Set};
        assert_eq!(
            collection(List(n(ColumnType::Decimal)), "[12.50, 1e-30]"),
            Ok(Cell::List(vec![decimal("12.50"), decimal("1e-30")]))
        );
        assert_eq!(
            collection(Set(n(ColumnType::Varint)), &format!("[{thirty}, {thirty}]")),
            Ok(Cell::List(vec![integer(thirty)]))
        );
        assert_eq!(
            collection(
                Map(ColumnType::Decimal, n(ColumnType::Text)),
                r#"{"12.50": 1.0}"#
            ),
            Ok(Cell::Map(vec![(
                decimal("12.50"),
                Cell::Text("1.0".into())
            )]))
        );
    }

    /// Field `v` of `{"v": JSON}` read as a column of `kind` reads it, collections with items.
    fn collection(kind: ColumnKind, json: &str) -> Result<Cell<'static>, String> {
        let document = format!(r#"{{"v": {json}}}"#);
        let path = FieldPath::parse("v");
        let mut found = FieldSet::reading([(&path, kind.reading())])
            .read(document.as_bytes())
            .unwrap();
        to_cell("tags", &kind, found.remove(0)).map(Cell::into_owned)
    }

    #[test]
    fn lists_sets_and_maps_are_read_from_arrays_and_objects() {
        use ColumnKind::{List, Map, Set};
        let text = |t: &str| Cell::Text(t.to_owned().into());
        assert_eq!(
            collection(List(n(ColumnType::Text)), r#"["b", "a", "b", 7]"#),
            Ok(Cell::List(vec![text("b"), text("a"), text("b"), text("7")]))
        );
        assert_eq!(
            collection(Set(n(ColumnType::Int)), "[3, 1, 3]"),
            Ok(Cell::List(vec![Cell::Int(3), Cell::Int(1)])),
            "an item given twice is written once"
        );
        assert_eq!(
            collection(
                Map(ColumnType::Text, n(ColumnType::Double)),
                r#"{"x": 1.5, "y": 2, "x": 3}"#
            ),
            Ok(Cell::Map(vec![
                (text("x"), Cell::Double(3.0)),
                (text("y"), Cell::Double(2.0)),
            ])),
            "a key given twice counts the last time"
        );
        assert_eq!(
            collection(
                Map(ColumnType::Int, n(ColumnType::Date)),
                r#"{"1": "1970-01-02", "-7": "1970-01-03"}"#
            ),
            Ok(Cell::Map(vec![
                (Cell::Int(1), Cell::Date(DATE_EPOCH as u32 + 1)),
                (Cell::Int(-7), Cell::Date(DATE_EPOCH as u32 + 2)),
            ])),
            "an int key read from its text"
        );
        assert_eq!(
            collection(
                Map(ColumnType::Uuid, n(ColumnType::Boolean)),
                r#"{"0f9c6f0e-5d0b-4b8f-9a57-6a1c0a2b9e11": true}"#
            ),
            Ok(Cell::Map(vec![(
                Cell::Uuid(uuid::Uuid::parse_str("0f9c6f0e-5d0b-4b8f-9a57-6a1c0a2b9e11").unwrap()),
                Cell::Boolean(true)
            )]))
        );
        assert_eq!(
            collection(List(n(ColumnType::Int)), "[]"),
            Ok(Cell::List(Vec::new()))
        );
        assert_eq!(collection(List(n(ColumnType::Int)), "null"), Ok(Cell::Null));
        for (kind, json, shown) in [
            (List(n(ColumnType::Int)), r#"[1, "two"]"#, r#"item 1"#),
            (List(n(ColumnType::Int)), "[1, null]", "holds no nulls"),
            (Set(n(ColumnType::Text)), "[[1]]", "an array (at item 0)"),
            (
                List(n(ColumnType::Text)),
                r#""a,b""#,
                r#"cannot hold "a,b""#,
            ),
            (
                Map(ColumnType::Int, n(ColumnType::Text)),
                r#"{"one": "x"}"#,
                r#"key "one""#,
            ),
            (
                Map(ColumnType::Text, n(ColumnType::Int)),
                r#"{"a": "x"}"#,
                r#"key "a""#,
            ),
            (
                Map(ColumnType::Text, n(ColumnType::Int)),
                "[1]",
                "cannot hold an array",
            ),
            (
                List(n(ColumnType::Int)),
                r#"{"a": 1}"#,
                "cannot hold an object",
            ),
        ] {
            let error = collection(kind.clone(), json).unwrap_err();
            assert!(
                error.contains("`tags`") && error.contains(shown),
                "{kind:?} {json}: {error}"
            );
        }
    }

    /// A user type `address` (street text, number int, zip varint).
    fn address() -> ColumnKind {
        ColumnKind::User(Arc::new(UserType {
            name: "address".into(),
            fields: vec![
                ("street".into(), ColumnType::Text.into()),
                ("number".into(), ColumnType::Int.into()),
                ("zip".into(), ColumnType::Varint.into()),
            ],
        }))
    }

    #[test]
    fn tuples_come_from_arrays_and_user_types_from_objects() {
        let tuple = ColumnKind::Tuple(vec![
            ColumnType::Int.into(),
            ColumnType::Text.into(),
            ColumnType::Decimal.into(),
        ]);
        assert_eq!(
            collection(tuple.clone(), r#"[7, "a", 12.50]"#),
            Ok(Cell::Tuple(vec![
                Cell::Int(7),
                Cell::Text("a".into()),
                Cell::Decimal(numbers::decimal("12.50").unwrap()),
            ]))
        );
        assert_eq!(
            collection(tuple.clone(), r#"[null, "a", null]"#),
            Ok(Cell::Tuple(vec![
                Cell::Null,
                Cell::Text("a".into()),
                Cell::Null
            ])),
            "a component may be null"
        );
        let short = collection(tuple.clone(), "[1, \"a\"]").unwrap_err();
        assert!(
            short.contains("takes an array of 3 items, not 2"),
            "{short}"
        );
        let wrong = collection(tuple.clone(), r#"[1, "a", "x"]"#).unwrap_err();
        assert!(
            wrong.contains("item 2") && wrong.contains(r#""x""#),
            "{wrong}"
        );
        let not_array = collection(tuple, r#"{"a": 1}"#).unwrap_err();
        assert!(not_array.contains("cannot hold an object"), "{not_array}");

        assert_eq!(
            collection(
                address(),
                r#"{"zip": 123456789012345678901234567890, "street": "Main"}"#
            ),
            Ok(Cell::Tuple(vec![
                Cell::Text("Main".into()),
                Cell::Null,
                Cell::Varint(numbers::integer("123456789012345678901234567890").unwrap()),
            ])),
            "fields in the type's order, an absent one null, a varint every digit"
        );
        assert_eq!(
            collection(address(), r#"{"number": 1, "number": 2, "street": null}"#),
            Ok(Cell::Tuple(vec![Cell::Null, Cell::Int(2), Cell::Null])),
            "a key given twice counts the last time"
        );
        let unknown = collection(address(), r#"{"street": "x", "city": "y"}"#).unwrap_err();
        assert!(
            unknown.contains(
                "column `tags` (user type address) has no field \"city\" (its fields: street, number, zip;"
            ),
            "{unknown}"
        );
        let wrong = collection(address(), r#"{"number": "ten"}"#).unwrap_err();
        assert!(
            wrong.contains("field number") && wrong.contains(r#""ten""#),
            "{wrong}"
        );
        let not_object = collection(address(), "[1]").unwrap_err();
        assert!(not_object.contains("cannot hold an array"), "{not_object}");
    }

    #[test]
    fn nested_types_are_read_whole_and_errors_say_where_inside() {
        let list_of_addresses = ColumnKind::List(Box::new(address()));
        assert_eq!(
            collection(
                list_of_addresses.clone(),
                r#"[{"street": "a", "zip": 1}, {"number": 2}]"#
            ),
            Ok(Cell::List(vec![
                Cell::Tuple(vec![
                    Cell::Text("a".into()),
                    Cell::Null,
                    Cell::Varint(vec![1])
                ]),
                Cell::Tuple(vec![Cell::Null, Cell::Int(2), Cell::Null]),
            ]))
        );
        let wrong = collection(list_of_addresses.clone(), r#"[{}, {"zip": "z"}]"#).unwrap_err();
        assert!(wrong.contains(r#"(at item 1, field zip)"#), "{wrong}");
        let null = collection(list_of_addresses, "[{}, null]").unwrap_err();
        assert!(
            null.contains("cannot hold null at item 1: a collection holds no nulls"),
            "{null}"
        );
        let lists_by_name = ColumnKind::Map(
            ColumnType::Text,
            Box::new(ColumnKind::List(n(ColumnType::Int))),
        );
        assert_eq!(
            collection(lists_by_name.clone(), r#"{"a": [1, 2], "b": []}"#),
            Ok(Cell::Map(vec![
                (
                    Cell::Text("a".into()),
                    Cell::List(vec![Cell::Int(1), Cell::Int(2)])
                ),
                (Cell::Text("b".into()), Cell::List(Vec::new())),
            ]))
        );
        let wrong = collection(lists_by_name, r#"{"a": [1, "x"]}"#).unwrap_err();
        assert!(wrong.contains(r#"(at key "a", item 1)"#), "{wrong}");
        let pairs = ColumnKind::Set(Box::new(ColumnKind::Tuple(vec![
            ColumnType::Int.into(),
            ColumnType::Text.into(),
        ])));
        assert_eq!(
            collection(pairs.clone(), r#"[[1, "a"], [1, "a"], [2, null]]"#),
            Ok(Cell::List(vec![
                Cell::Tuple(vec![Cell::Int(1), Cell::Text("a".into())]),
                Cell::Tuple(vec![Cell::Int(2), Cell::Null]),
            ])),
            "a set's item given twice is written once"
        );
        assert!(pairs.to_string() == "set<tuple<int, text>>");
    }

    #[test]
    fn tuples_and_user_types_serialise_and_give_their_wire_bytes_as_the_driver_does() {
        use scylla::frame::response::result::UserDefinedType;
        let tuple_type = CqlType::Tuple(vec![
            CqlType::Native(NativeType::Int),
            CqlType::Native(NativeType::Text),
            CqlType::Native(NativeType::BigInt),
        ]);
        let cell = Cell::Tuple(vec![Cell::Int(7), Cell::Text("ab".into()), Cell::Null]);
        let mut ours = Vec::new();
        cell.serialize(&tuple_type, CellWriter::new(&mut ours))
            .unwrap();
        // The driver's own encoding of the same tuple.
        let mut theirs = Vec::new();
        (Some(7i32), Some("ab"), None::<i64>)
            .serialize(&tuple_type, CellWriter::new(&mut theirs))
            .unwrap();
        assert_eq!(ours, theirs);
        let (length, value) = ours.split_at(4);
        assert_eq!(length, (value.len() as i32).to_be_bytes());
        assert_eq!(cell.with_wire_bytes(<[u8]>::to_vec).as_deref(), Some(value));
        assert_eq!(cell.bytes(), value.len());

        // A user type is encoded as a tuple of its fields.
        let user_type = CqlType::UserDefinedType {
            frozen: true,
            definition: Arc::new(UserDefinedType {
                name: "address".into(),
                keyspace: "ks".into(),
                field_types: vec![
                    ("n".into(), CqlType::Native(NativeType::Int)),
                    ("s".into(), CqlType::Native(NativeType::Text)),
                    ("b".into(), CqlType::Native(NativeType::BigInt)),
                ],
            }),
        };
        let mut as_user = Vec::new();
        cell.serialize(&user_type, CellWriter::new(&mut as_user))
            .unwrap();
        assert_eq!(as_user, theirs);
        // A component count or a type the column does not have is refused.
        let long = Cell::Tuple(vec![Cell::Int(7), Cell::Null, Cell::Null, Cell::Null]);
        assert!(
            long.serialize(&tuple_type, CellWriter::new(&mut Vec::new()))
                .is_err()
        );
        // Fewer components are the first ones: a user type that gained a field since.
        let short = Cell::Tuple(vec![Cell::Int(7), Cell::Text("ab".into())]);
        let mut first_two = Vec::new();
        short
            .serialize(&user_type, CellWriter::new(&mut first_two))
            .unwrap();
        let mut theirs_two = Vec::new();
        (Some(7i32), Some("ab"))
            .serialize(
                &CqlType::Tuple(vec![
                    CqlType::Native(NativeType::Int),
                    CqlType::Native(NativeType::Text),
                ]),
                CellWriter::new(&mut theirs_two),
            )
            .unwrap();
        assert_eq!(first_two, theirs_two);
        assert!(
            cell.serialize(
                &CqlType::Native(NativeType::Int),
                CellWriter::new(&mut Vec::new())
            )
            .is_err()
        );
        let wrong = Cell::Tuple(vec![Cell::Text("x".into()), Cell::Null, Cell::Null]);
        assert!(
            wrong
                .serialize(&tuple_type, CellWriter::new(&mut Vec::new()))
                .is_err()
        );

        // A list of tuples, against the driver's encoding of the same list.
        let list_type = CqlType::Collection {
            frozen: false,
            typ: CollectionType::List(Box::new(tuple_type.clone())),
        };
        let list = Cell::List(vec![
            cell.clone(),
            Cell::Tuple(vec![Cell::Null, Cell::Null, Cell::BigInt(-1)]),
        ]);
        let mut ours = Vec::new();
        list.serialize(&list_type, CellWriter::new(&mut ours))
            .unwrap();
        let mut theirs = Vec::new();
        vec![
            (Some(7i32), Some("ab"), None::<i64>),
            (None, None, Some(-1)),
        ]
        .serialize(&list_type, CellWriter::new(&mut theirs))
        .unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(
            list.with_wire_bytes(<[u8]>::to_vec).as_deref(),
            Some(&ours[4..])
        );
        assert_eq!(list.bytes(), ours.len() - 4);
    }

    #[test]
    fn collections_serialise_and_give_their_wire_bytes_as_the_driver_does() {
        use scylla::frame::response::result::CollectionType;
        let list = |item: NativeType| CqlType::Collection {
            frozen: false,
            typ: CollectionType::List(Box::new(CqlType::Native(item))),
        };
        let set = |item: NativeType| CqlType::Collection {
            frozen: true,
            typ: CollectionType::Set(Box::new(CqlType::Native(item))),
        };
        let map = |key: NativeType, value: NativeType| CqlType::Collection {
            frozen: false,
            typ: CollectionType::Map(
                Box::new(CqlType::Native(key)),
                Box::new(CqlType::Native(value)),
            ),
        };
        let cases = [
            (
                Cell::List(vec![Cell::Text("a".into()), Cell::Text("bc".into())]),
                list(NativeType::Text),
            ),
            (
                Cell::List(vec![Cell::Int(1), Cell::Int(-2)]),
                set(NativeType::Int),
            ),
            (Cell::List(Vec::new()), list(NativeType::Int)),
            (
                Cell::Map(vec![
                    (Cell::Text("k".into()), Cell::BigInt(5)),
                    (Cell::Text("".into()), Cell::BigInt(-5)),
                ]),
                map(NativeType::Text, NativeType::BigInt),
            ),
        ];
        for (cell, typ) in &cases {
            let mut serialised = Vec::new();
            cell.serialize(typ, CellWriter::new(&mut serialised))
                .unwrap();
            let (length, expected) = serialised.split_at(4);
            assert_eq!(length, (expected.len() as i32).to_be_bytes(), "{cell:?}");
            assert_eq!(
                cell.with_wire_bytes(<[u8]>::to_vec).as_deref(),
                Some(expected),
                "{cell:?}"
            );
            assert_eq!(cell.bytes(), expected.len(), "{cell:?}");
        }
        // The driver's own encoding of the same list, for an independent check of the format.
        let mut theirs = Vec::new();
        vec!["a", "bc"]
            .serialize(&list(NativeType::Text), CellWriter::new(&mut theirs))
            .unwrap();
        let mut ours = Vec::new();
        cases[0]
            .0
            .serialize(&cases[0].1, CellWriter::new(&mut ours))
            .unwrap();
        assert_eq!(ours, theirs);
        let mut as_text = Vec::new();
        assert!(
            Cell::Map(Vec::new())
                .serialize(&list(NativeType::Text), CellWriter::new(&mut as_text))
                .is_err(),
            "a map is not a list"
        );
    }

    #[test]
    fn text_borrows_the_record_unless_it_holds_escapes() {
        let bytes = br#"{"plain": "abc", "escaped": "a\u0062c"}"#;
        let paths = [FieldPath::parse("plain"), FieldPath::parse("escaped")];
        let found = FieldSet::new(&paths).read(bytes).unwrap();
        let cells: Vec<Cell> = found
            .into_iter()
            .map(|leaf| to_cell("c", &ColumnType::Text.into(), leaf).unwrap())
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
            (Cell::TinyInt(1), native(NativeType::TinyInt)),
            (Cell::SmallInt(1), native(NativeType::SmallInt)),
            (Cell::Varint(vec![1, 0]), native(NativeType::Varint)),
            (Cell::Date(1), native(NativeType::Date)),
            (Cell::Time(1), native(NativeType::Time)),
            (Cell::Float(0.5), native(NativeType::Float)),
            (
                Cell::Decimal(numbers::decimal("1.5").unwrap()),
                native(NativeType::Decimal),
            ),
            (Cell::Inet("::1".parse().unwrap()), native(NativeType::Inet)),
            (Cell::Blob(vec![1, 2, 3]), native(NativeType::Blob)),
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
