//! A column's CQL type as the sink writes it, parsed from the text `system_schema` gives it
//! (`frozen<list<frozen<address>>>`): native types, collections, tuples and user-defined types,
//! nested as CQL allows, with the user types resolved from the keyspace's definitions.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use super::columns::ColumnType;
use crate::connectors::fields::Reading;

/// Types nested inside one another at most: deeper than any schema needs, and a bound on the
/// recursion of parsing, reading and writing a value.
const MAX_NESTING: usize = 16;

/// A user-defined type as the sink writes it: its name and its fields, in their declared order.
#[derive(Clone, PartialEq, Eq)]
pub struct UserType {
    /// The type's name in its keyspace.
    pub name: String,
    /// Each field's name and type, in the order the type declares them (and CQL encodes them).
    pub fields: Vec<(String, ColumnKind)>,
}

/// By name: an error message names the column's type, not its whole definition.
impl std::fmt::Debug for UserType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// A column's type as the sink writes it: a native type from a JSON scalar, a collection from
/// an array or an object, a tuple from an array, a user-defined type from an object; the parts
/// of a collection, a tuple or a user type may themselves be any of these but a map's keys,
/// which are native (read from an object's keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// A native type.
    Native(ColumnType),
    /// `list<T>`: from an array, its items in order.
    List(Box<ColumnKind>),
    /// `set<T>`: from an array; an item given twice is written once.
    Set(Box<ColumnKind>),
    /// `map<K, V>`: from an object, each key read as a K from its text (`"1"` for an int key);
    /// a key given twice counts the last time.
    Map(ColumnType, Box<ColumnKind>),
    /// `tuple<A, B, ...>`: from an array of exactly as many items, each of its own type (a null
    /// item is a null component).
    Tuple(Vec<ColumnKind>),
    /// A user-defined type: from an object, each field by its name (a field absent or null is
    /// null; a key the type does not have is refused).
    User(Arc<UserType>),
}

/// The part of a declared type the sink cannot write, in words (`` `duration` ``, or
/// `` field `x` of user-defined type `t` is `duration` ``).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwritable(pub String);

impl ColumnKind {
    /// Parses a declared type without user-defined types: `None` where it names one or holds
    /// a type the sink cannot write.
    pub fn parse(declared: &str) -> Option<Self> {
        Self::parse_with(declared, &mut |_| None).ok()
    }

    /// Parses a declared type as `system_schema` writes it (`int`, `frozen<set<uuid>>`,
    /// `map<text, frozen<tuple<int, text>>>`, `frozen<"Address">`), looking each user type's
    /// name (unquoted) up with `user_type`.
    pub fn parse_with(
        declared: &str,
        user_type: &mut dyn FnMut(&str) -> Option<Result<UserType, Unwritable>>,
    ) -> Result<Self, Unwritable> {
        parse(declared, user_type, 0)
    }

    /// Whether `declared` is a type the sink could write, taking every name that is no native
    /// type for a user-defined type (for `create`, checked before the keyspace is read; the
    /// types themselves are read at start).
    pub fn parses_with_any_user_type(declared: &str) -> bool {
        Self::parse_with(declared, &mut |name| {
            Some(Ok(UserType {
                name: name.to_owned(),
                fields: Vec::new(),
            }))
        })
        .is_ok()
    }

    /// Whether the column's field is read with its items or entries.
    pub fn reads_items(&self) -> bool {
        !matches!(self, ColumnKind::Native(_))
    }

    /// How the column's field is read: with its items for a collection, a tuple or a user
    /// type, and with its numbers as the record writes them where a value keeps every digit.
    pub fn reading(&self) -> Reading {
        Reading {
            items: self.reads_items(),
            numbers_as_written: self.keeps_every_digit(),
        }
    }

    /// Whether any value of the type keeps every digit of a number (see
    /// [`ColumnType::keeps_every_digit`]).
    fn keeps_every_digit(&self) -> bool {
        match self {
            ColumnKind::Native(native) => native.keeps_every_digit(),
            ColumnKind::List(item) | ColumnKind::Set(item) | ColumnKind::Map(_, item) => {
                item.keeps_every_digit()
            }
            ColumnKind::Tuple(items) => items.iter().any(ColumnKind::keeps_every_digit),
            ColumnKind::User(user) => user.fields.iter().any(|(_, kind)| kind.keeps_every_digit()),
        }
    }
}

/// A keyspace's user-defined types as `system_schema.types` lists them (each field's name and
/// declared type), parsed into [`UserType`]s as the columns name them.
#[derive(Debug, Default)]
pub struct UserTypes {
    defined: HashMap<String, Vec<(String, String)>>,
    /// User types being parsed, one inside another: a bound on the recursion.
    depth: Cell<usize>,
}

impl UserTypes {
    /// The types `defined`, by name.
    pub fn new(defined: HashMap<String, Vec<(String, String)>>) -> Self {
        UserTypes {
            defined,
            depth: Cell::new(0),
        }
    }

    /// Parses a column's declared type, its user types from these definitions.
    pub fn parse(&self, declared: &str) -> Result<ColumnKind, Unwritable> {
        ColumnKind::parse_with(declared, &mut |name| self.user_type(name))
    }

    /// The user type `name`: `None` when the keyspace has none, the field the sink cannot
    /// write when it has one.
    fn user_type(&self, name: &str) -> Option<Result<UserType, Unwritable>> {
        let fields = self.defined.get(name)?;
        if self.depth.get() >= MAX_NESTING {
            return Some(Err(Unwritable(format!(
                "user-defined type `{name}`, nested more than {MAX_NESTING} deep"
            ))));
        }
        self.depth.set(self.depth.get() + 1);
        let parsed = fields
            .iter()
            .map(|(field, declared)| match self.parse(declared) {
                Ok(kind) => Ok((field.clone(), kind)),
                Err(Unwritable(part)) => Err(Unwritable(format!(
                    "field `{field}` of user-defined type `{name}` is {part}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>();
        self.depth.set(self.depth.get() - 1);
        Some(parsed.map(|fields| UserType {
            name: name.to_owned(),
            fields,
        }))
    }
}

/// In CQL's words (`list<frozen<tuple<int, text>>>` as `list<tuple<int, text>>`; `text` for
/// `varchar` and `ascii` too; a user type by its name).
impl std::fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnKind::Native(native) => write!(f, "{}", format!("{native:?}").to_lowercase()),
            ColumnKind::List(item) => write!(f, "list<{item}>"),
            ColumnKind::Set(item) => write!(f, "set<{item}>"),
            ColumnKind::Map(key, value) => {
                write!(f, "map<{}, {value}>", ColumnKind::Native(*key))
            }
            ColumnKind::Tuple(items) => {
                f.write_str("tuple<")?;
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(">")
            }
            ColumnKind::User(user) => f.write_str(&user.name),
        }
    }
}

impl From<ColumnType> for ColumnKind {
    fn from(native: ColumnType) -> Self {
        ColumnKind::Native(native)
    }
}

fn parse(
    declared: &str,
    user_type: &mut dyn FnMut(&str) -> Option<Result<UserType, Unwritable>>,
    depth: usize,
) -> Result<ColumnKind, Unwritable> {
    let declared = declared.trim();
    let unwritable = || Unwritable(format!("`{declared}`"));
    if depth > MAX_NESTING {
        return Err(Unwritable(format!(
            "`{declared}`, nested more than {MAX_NESTING} deep"
        )));
    }
    if let Some((name, inside)) = generic(declared) {
        let parts = split_top_level(inside);
        if parts.iter().any(|part| part.trim().is_empty()) {
            return Err(unwritable());
        }
        let mut parts = parts
            .into_iter()
            .map(|part| parse(part, user_type, depth + 1));
        let kind = match (name, parts.len()) {
            ("frozen", 1) => parts.next().ok_or_else(unwritable)??,
            ("list", 1) => ColumnKind::List(Box::new(parts.next().ok_or_else(unwritable)??)),
            ("set", 1) => ColumnKind::Set(Box::new(parts.next().ok_or_else(unwritable)??)),
            ("map", 2) => {
                let key = match parts.next().ok_or_else(unwritable)?? {
                    ColumnKind::Native(key) => key,
                    _ => {
                        return Err(Unwritable(format!(
                            "`{declared}`, whose keys are not of a native type"
                        )));
                    }
                };
                ColumnKind::Map(key, Box::new(parts.next().ok_or_else(unwritable)??))
            }
            ("tuple", 1..) => ColumnKind::Tuple(parts.collect::<Result<_, _>>()?),
            _ => return Err(unwritable()),
        };
        return Ok(kind);
    }
    if let Some(native) = ColumnType::parse(declared) {
        return Ok(ColumnKind::Native(native));
    }
    let name = user_type_name(declared).ok_or_else(unwritable)?;
    match user_type(&name) {
        Some(Ok(user)) => Ok(ColumnKind::User(Arc::new(user))),
        Some(Err(field)) => Err(field),
        None => Err(unwritable()),
    }
}

/// `name<inside>` as its name and what its brackets hold.
fn generic(declared: &str) -> Option<(&str, &str)> {
    let open = declared.find('<')?;
    let inside = declared[open + 1..].strip_suffix('>')?;
    Some((declared[..open].trim(), inside))
}

/// The comma-separated parts of a type's arguments, commas inside brackets or quotes left alone.
fn split_top_level(inside: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0usize, false, 0);
    for (at, c) in inside.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => {
                parts.push(&inside[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&inside[start..]);
    parts
}

/// The user-defined type a declared type's text names (`address`, `"Home"`), unquoted, when it
/// may name one: a CQL name that is no native type nor another type CQL reserves.
fn user_type_name(declared: &str) -> Option<String> {
    let unquoted = match declared.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => declared.to_owned(),
    };
    let plain = !unquoted.is_empty()
        && unquoted.chars().all(|c| c.is_alphanumeric() || c == '_')
        && ColumnType::parse(&unquoted).is_none()
        && !matches!(unquoted.as_str(), "counter" | "duration");
    plain.then_some(unquoted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnKind::{List, Map, Native, Set, Tuple, User};

    /// The keyspace's user types for the tests: `address` (street text, zip varint), `tagged`
    /// (name text, tags frozen<list<text>>, home frozen<address>), `timed` (d duration), and
    /// `ouroboros`, which holds itself (Cassandra refuses that; a bound stops it here).
    fn user_types() -> UserTypes {
        let defined = [
            ("address", vec![("street", "text"), ("zip", "varint")]),
            (
                "tagged",
                vec![
                    ("name", "text"),
                    ("tags", "frozen<list<text>>"),
                    ("home", "frozen<address>"),
                ],
            ),
            ("timed", vec![("d", "duration")]),
            ("ouroboros", vec![("tail", "frozen<ouroboros>")]),
        ];
        UserTypes::new(
            defined
                .into_iter()
                .map(|(name, fields)| {
                    let fields = fields
                        .into_iter()
                        .map(|(field, declared)| (field.to_owned(), declared.to_owned()))
                        .collect();
                    (name.to_owned(), fields)
                })
                .collect(),
        )
    }

    fn parsed(declared: &str) -> Result<ColumnKind, Unwritable> {
        user_types().parse(declared)
    }

    #[test]
    fn types_parse_as_system_schema_writes_them_nested_as_cql_allows() {
        let native = |t| Box::new(Native(t));
        assert_eq!(parsed("int"), Ok(Native(ColumnType::Int)));
        assert_eq!(parsed("list<text>"), Ok(List(native(ColumnType::Text))));
        assert_eq!(
            parsed("frozen<set<uuid>>"),
            Ok(Set(native(ColumnType::Uuid)))
        );
        assert_eq!(
            parsed("map<text, int>"),
            Ok(Map(ColumnType::Text, native(ColumnType::Int)))
        );
        assert_eq!(
            parsed("list<frozen<list<int>>>"),
            Ok(List(Box::new(List(native(ColumnType::Int)))))
        );
        assert_eq!(
            parsed("map<text, frozen<tuple<int, frozen<set<text>>>>>"),
            Ok(Map(
                ColumnType::Text,
                Box::new(Tuple(vec![
                    Native(ColumnType::Int),
                    Set(native(ColumnType::Text))
                ]))
            ))
        );
        let Ok(List(item)) = parsed("list<frozen<tagged>>") else {
            panic!("a list of a user type");
        };
        let User(tagged) = *item else {
            panic!("a user type");
        };
        assert_eq!(tagged.name, "tagged");
        assert_eq!(
            tagged.fields[1],
            ("tags".into(), List(native(ColumnType::Text)))
        );
        assert!(matches!(&tagged.fields[2].1, User(address) if address.name == "address"));
        assert!(matches!(parsed(r#"frozen<"address">"#), Ok(User(_))));
        for (declared, part) in [
            ("counter", "`counter`"),
            ("duration", "`duration`"),
            (
                "map<frozen<list<int>>, int>",
                "whose keys are not of a native type",
            ),
            ("map<text>", "`map<text>`"),
            ("list<>", "`list<>`"),
            ("vector<float, 3>", "`vector<float, 3>`"),
            ("frozen<unknown>", "`unknown`"),
            (
                "frozen<timed>",
                "field `d` of user-defined type `timed` is `duration`",
            ),
            (
                "list<frozen<timed>>",
                "field `d` of user-defined type `timed`",
            ),
            ("frozen<ouroboros>", "nested more than 16 deep"),
        ] {
            let Err(Unwritable(said)) = parsed(declared) else {
                panic!("{declared} parsed");
            };
            assert!(said.contains(part), "{declared}: {said}");
        }
        let deep = format!("{}int{}", "list<".repeat(20), ">".repeat(20));
        assert!(
            parsed(&deep)
                .unwrap_err()
                .0
                .contains("nested more than 16 deep")
        );
        assert_eq!(ColumnKind::parse("frozen<address>"), None, "no user types");
        assert!(ColumnKind::parses_with_any_user_type(
            "list<frozen<anything>>"
        ));
        assert!(!ColumnKind::parses_with_any_user_type("list<duration>"));
    }

    #[test]
    fn numbers_are_read_as_written_where_any_part_keeps_every_digit() {
        for (declared, as_written) in [
            ("int", false),
            ("decimal", true),
            ("list<double>", false),
            ("map<int, varint>", true),
            ("frozen<tuple<int, text>>", true),
            ("frozen<address>", true),
            ("list<frozen<list<bigint>>>", false),
        ] {
            let reading = parsed(declared).unwrap().reading();
            assert_eq!(reading.numbers_as_written, as_written, "{declared}");
            assert_eq!(reading.items, declared != "int" && declared != "decimal");
        }
    }
}
