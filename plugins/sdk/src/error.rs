//! Plugin errors: each says who is to blame, which decides whether the host dead-letters the
//! record as bad input or counts it against the plugin.

use std::fmt;

/// Who is to blame for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input record is malformed; it goes to the dead-letter destination.
    BadRecord,
    /// The plugin's config is unusable; the host refuses the plugin version.
    Config,
    /// The plugin failed on a record it should have handled.
    Failure,
}

/// An error from a plugin, with a message for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// The input record is malformed: say which field and why.
    pub fn bad_record(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::BadRecord,
            message: message.into(),
        }
    }

    /// The config is unusable: name the key and what is expected.
    pub fn config(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Config,
            message: message.into(),
        }
    }

    /// The plugin itself failed.
    pub fn failure(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Failure,
            message: message.into(),
        }
    }

    /// Who is to blame.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for a human.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Malformed JSON in a record is the record's fault, so `?` on serde_json makes a bad record.
impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::bad_record(format!("invalid JSON: {error}"))
    }
}
