//! Files that one pipeline file would have written by two writers, or read and written by one
//! pipeline, refused at load. A `file` sink cuts a failed batch off the end of its file and
//! drops a torn last line at start, so a second writer's lines there would be cut too; two file
//! sources sharing a checkpoint would each move the other's position; and a pipeline whose sink
//! writes the file its source follows reads its own output forever.
//!
//! Paths are compared as written, made absolute against the working folder without touching the
//! filesystem (`out.jsonl` and `./out.jsonl` are one file; a symbolic link is not seen through).

use std::path::{Path, PathBuf};

use super::PipelineConfig;
use crate::connectors::{SinkConfig, SourceConfig};

/// The first conflict among `pipelines`' files, as the key (relative to its pipeline) and index
/// of its second use and a message naming the first.
pub(super) fn conflict(pipelines: &[PipelineConfig]) -> Option<(usize, String, String)> {
    let mut seen: Vec<(PathBuf, usize, &'static str)> = Vec::new();
    for (index, pipeline) in pipelines.iter().enumerate() {
        let read = match &pipeline.source {
            SourceConfig::File(file) => Some(comparable(&file.path)),
            _ => None,
        };
        for (key, path) in written(pipeline) {
            let path = comparable(path);
            if read.as_ref() == Some(&path) {
                return Some((
                    index,
                    key.to_owned(),
                    format!(
                        "`{}` is the file this pipeline's source reads: it would read its own output again and again; write elsewhere",
                        path.display()
                    ),
                ));
            }
            if let Some((_, first, first_key)) = seen.iter().find(|(seen, ..)| *seen == path) {
                let whose = if *first == index {
                    "this pipeline's".to_owned()
                } else {
                    format!("pipeline `{}`'s", pipelines[*first].name)
                };
                return Some((
                    index,
                    key.to_owned(),
                    format!(
                        "`{}` is also {whose} `{first_key}`: two writers of one file would cut and overwrite each other's lines; give each its own file",
                        path.display()
                    ),
                ));
            }
            seen.push((path, index, key));
        }
    }
    None
}

/// The files a pipeline writes, each with its key.
fn written(pipeline: &PipelineConfig) -> Vec<(&'static str, &Path)> {
    let mut files = Vec::new();
    match &pipeline.source {
        SourceConfig::File(file) => {
            if let Some(checkpoint) = &file.checkpoint {
                files.push(("source.checkpoint", checkpoint.as_path()));
            }
        }
        SourceConfig::Http(http) => {
            if let Some(journal) = &http.journal {
                files.push(("source.journal", journal.as_path()));
            }
        }
        _ => {}
    }
    for (key, destination) in [
        ("sink.path", &pipeline.sink),
        ("dead_letter.path", &pipeline.dead_letter),
    ] {
        if let SinkConfig::File(file) = destination {
            files.push((key, file.path.as_path()));
        }
    }
    files
}

/// `path` made absolute against the working folder, `.` components dropped; as written when
/// the working folder cannot be read.
fn comparable(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
