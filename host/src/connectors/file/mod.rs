//! The `file` connector: JSON lines in (with a checkpoint file for resuming) and JSON lines out.

mod sink;
mod source;

pub use sink::{FileSink, FileSinkConfig, WriteMode};
pub use source::{FileSource, FileSourceConfig};
