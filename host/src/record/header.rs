//! A record's headers, built so the host can stamp the same header on every record of a stream
//! without allocating per record: names and values are shared or static where the host sets
//! them, and owned where a record arrived with them.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

/// A record's headers, in the order they were set; a name may repeat. One is held inline: a
/// plugin's output carries its version header and usually nothing else, and a vector of its own
/// for it was an allocation per record, freed on another thread by the sink stage.
pub type Headers = smallvec::SmallVec<[Header; 1]>;

/// One header of a record: a name and opaque bytes, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Header {
    /// The header's name. Names starting with `weir.` are set by the host.
    pub key: HeaderName,
    /// The header's value, usually UTF-8 text. Cloning shares the bytes.
    pub value: Bytes,
}

/// A header's name: text that compares, hashes and prints as the `str` it holds. Cloning a name
/// made from a `&'static str` or an `Arc<str>` copies no text, so a name the host sets on every
/// record (`weir.version.user-profile`) is built once per stream, not once per record.
#[derive(Clone)]
pub struct HeaderName(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
    Owned(String),
}

impl HeaderName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(name) => name,
            Repr::Shared(name) => name,
            Repr::Owned(name) => name,
        }
    }

    /// A name whose clones share `name`'s text: for a name set on many records.
    pub fn shared(name: &str) -> Self {
        HeaderName(Repr::Shared(Arc::from(name)))
    }
}

impl Default for HeaderName {
    fn default() -> Self {
        HeaderName(Repr::Static(""))
    }
}

impl Deref for HeaderName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for HeaderName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for HeaderName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for HeaderName {
    fn from(name: &'static str) -> Self {
        HeaderName(Repr::Static(name))
    }
}

impl From<String> for HeaderName {
    fn from(name: String) -> Self {
        HeaderName(Repr::Owned(name))
    }
}

impl From<Arc<str>> for HeaderName {
    fn from(name: Arc<str>) -> Self {
        HeaderName(Repr::Shared(name))
    }
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for HeaderName {}

impl PartialEq<str> for HeaderName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for HeaderName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Hash for HeaderName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of(value: &impl Hash) -> u64 {
        let mut hasher = DefaultHasher::new();
        value.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn names_compare_and_hash_by_their_text_whatever_holds_it() {
        let names = [
            HeaderName::from("weir.version.a"),
            HeaderName::shared("weir.version.a"),
            HeaderName::from("weir.version.a".to_owned()),
        ];
        for name in &names {
            assert_eq!(name, &names[0]);
            assert_eq!(*name, "weir.version.a");
            assert_eq!(hash_of(name), hash_of(&"weir.version.a"));
            assert_eq!(format!("{name:?}"), "\"weir.version.a\"");
            assert_eq!(name.to_string(), "weir.version.a");
        }
        assert_ne!(names[0], HeaderName::from("weir.version.b"));
    }

    #[test]
    fn a_shared_name_and_value_are_not_copied_by_a_clone() {
        let header = Header {
            key: HeaderName::shared("weir.version.a"),
            value: Bytes::from(b"090ff39429c0".to_vec()),
        };
        let copy = header.clone();
        assert_eq!(copy, header);
        assert!(std::ptr::eq(copy.key.as_str(), header.key.as_str()));
        assert_eq!(copy.value.as_ptr(), header.value.as_ptr());
    }
}
