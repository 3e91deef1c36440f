//! The `file` connector: JSON lines in (with a checkpoint file for resuming) and JSON lines out.

mod checkpoint;
mod position;
mod sink;
mod source;
mod write_failure;
pub(crate) mod writer_lock;

use async_trait::async_trait;

use super::{ConfigProblem, ConnectorError, Sink, SinkSpec, Source, SourceSpec};

pub(crate) use checkpoint::{lock_checkpoint, read_line_checkpoint, write_checkpoint};
pub use sink::{FileSink, FileSinkConfig, WriteMode};
pub use source::{FileSource, FileSourceConfig};
pub(crate) use writer_lock::WriterLock;

#[async_trait]
impl SourceSpec for FileSourceConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        FileSourceConfig::validate(self)
    }

    async fn build(&self) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(Box::new(FileSource::open(self).await?))
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

#[async_trait]
impl SinkSpec for FileSinkConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        FileSinkConfig::validate(self)
    }

    async fn build(&self, dead_letter: bool) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(FileSink::open(self, dead_letter).await?))
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}
