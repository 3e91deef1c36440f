//! What a benchmark creates on the user's services (Kafka topics and consumer groups, a Cassandra
//! keyspace, a scratch folder) and removes when it ends, whether it measured or failed: each
//! `weir bench pipeline` run loads topics and tables of its own, so without this a few runs
//! leave gigabytes on a cluster. `--keep` keeps them for inspection instead.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaErrorCode;
use scylla::client::session_builder::SessionBuilder;

/// How long the brokers and the node may take over each removal before it is reported as not
/// done.
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The names of what a benchmark created, registered before each is created, so that a run
/// failing halfway removes what it got to.
#[derive(Debug)]
pub struct Leftovers {
    brokers: String,
    topics: Vec<String>,
    groups: Vec<String>,
    /// The Cassandra contact point and the keyspace.
    keyspace: Option<(String, String)>,
    folder: Option<PathBuf>,
}

/// What became of the leftovers when the benchmark ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// Everything was removed; the text lists it.
    Removed(String),
    /// `--keep` was given; the text lists what stays.
    Kept(String),
    /// Some could not be removed: each failure says what, why and how to remove it by hand.
    Incomplete {
        /// Everything the bench created.
        created: String,
        /// What could not be removed.
        failures: Vec<String>,
    },
}

impl fmt::Display for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cleanup::Removed(what) => write!(f, "removed what the bench created: {what}"),
            Cleanup::Kept(what) => write!(f, "kept for inspection (--keep): {what}"),
            Cleanup::Incomplete { created, failures } => {
                write!(f, "could not remove all the bench created ({created}):")?;
                for failure in failures {
                    write!(f, "\n  {failure}")?;
                }
                Ok(())
            }
        }
    }
}

impl Leftovers {
    /// Nothing yet, on the Kafka cluster at `brokers`.
    pub fn new(brokers: &str) -> Self {
        Leftovers {
            brokers: brokers.to_owned(),
            topics: Vec::new(),
            groups: Vec::new(),
            keyspace: None,
            folder: None,
        }
    }

    /// Registers a topic about to be created, and returns its name.
    pub fn topic(&mut self, name: String) -> String {
        self.topics.push(name.clone());
        name
    }

    /// Registers a consumer group about to be joined, and returns its name.
    pub fn group(&mut self, name: String) -> String {
        self.groups.push(name.clone());
        name
    }

    /// Registers a keyspace about to be created on the node at `nodes`, and returns its name.
    pub fn keyspace(&mut self, nodes: &str, name: String) -> String {
        self.keyspace = Some((nodes.to_owned(), name.clone()));
        name
    }

    /// Registers a local scratch folder about to be created.
    pub fn folder(&mut self, path: &Path) {
        self.folder = Some(path.to_owned());
    }

    /// Removes everything unless `keep`, and says what became of it.
    pub async fn finish(&self, keep: bool) -> Cleanup {
        if keep {
            return Cleanup::Kept(self.to_string());
        }
        let failures = self.remove().await;
        if failures.is_empty() {
            Cleanup::Removed(self.to_string())
        } else {
            Cleanup::Incomplete {
                created: self.to_string(),
                failures,
            }
        }
    }

    /// Removes everything; one line for each thing that could not be removed. What is already
    /// gone (never created, or removed by someone else) counts as removed.
    async fn remove(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if !self.groups.is_empty() || !self.topics.is_empty() {
            match self.remove_from_kafka().await {
                Ok(more) => failures.extend(more),
                Err(reason) => failures.push(format!(
                    "cannot reach Kafka at {} to remove {}: {reason}",
                    self.brokers,
                    self.kafka_part()
                )),
            }
        }
        if let Some((nodes, keyspace)) = &self.keyspace
            && let Err(reason) = drop_keyspace(nodes, keyspace).await
        {
            failures.push(format!(
                "cannot drop keyspace {keyspace} at {nodes}: {reason}; drop it by hand with `DROP KEYSPACE {keyspace};` in cqlsh"
            ));
        }
        if let Some(folder) = &self.folder
            && let Err(error) = std::fs::remove_dir_all(folder)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            failures.push(format!(
                "cannot remove the scratch folder {}: {error}",
                folder.display()
            ));
        }
        failures
    }

    /// Deletes the consumer groups (they must have no members left), then the topics.
    async fn remove_from_kafka(&self) -> Result<Vec<String>, String> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .map_err(|e| e.to_string())?;
        let options = AdminOptions::new()
            .request_timeout(Some(REMOVAL_TIMEOUT))
            .operation_timeout(Some(REMOVAL_TIMEOUT));
        let brokers = &self.brokers;
        let mut failures = Vec::new();
        let groups: Vec<&str> = self.groups.iter().map(String::as_str).collect();
        if !groups.is_empty() {
            let results = admin.delete_groups(&groups, &options).await;
            failures.extend(refusals(results, RDKafkaErrorCode::GroupIdNotFound, |group, code| {
                format!(
                    "cannot delete consumer group {group}: {code}; delete it by hand once its members have left, with `kafka-consumer-groups.sh --bootstrap-server {brokers} --delete --group {group}`"
                )
            })?);
        }
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if !topics.is_empty() {
            let results = admin.delete_topics(&topics, &options).await;
            failures.extend(refusals(
                results,
                RDKafkaErrorCode::UnknownTopicOrPartition,
                |topic, code| {
                    format!(
                        "cannot delete topic {topic}: {code}; delete it by hand with `kafka-topics.sh --bootstrap-server {brokers} --delete --topic {topic}`"
                    )
                },
            )?);
        }
        Ok(failures)
    }

    /// The topics and groups, as the summary lists them.
    fn kafka_part(&self) -> String {
        let mut parts = Vec::new();
        if !self.topics.is_empty() {
            parts.push(format!("topics {}", self.topics.join(", ")));
        }
        if !self.groups.is_empty() {
            parts.push(format!("consumer groups {}", self.groups.join(", ")));
        }
        parts.join("; ")
    }
}

/// What an admin request's per-name results refused, one line each by `describe`; a name
/// already gone (`gone`) counts as removed. The request failing as a whole is the error.
fn refusals(
    results: KafkaResult<Vec<Result<String, (String, RDKafkaErrorCode)>>>,
    gone: RDKafkaErrorCode,
    describe: impl Fn(&str, RDKafkaErrorCode) -> String,
) -> Result<Vec<String>, String> {
    Ok(results
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|result| match result {
            Err((name, code)) if code != gone => Some(describe(&name, code)),
            _ => None,
        })
        .collect())
}

/// Lists everything: `topics a, b; consumer groups c; keyspace d; folder e`.
impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let kafka = self.kafka_part();
        if !kafka.is_empty() {
            parts.push(kafka);
        }
        if let Some((_, keyspace)) = &self.keyspace {
            parts.push(format!("keyspace {keyspace}"));
        }
        if let Some(folder) = &self.folder {
            parts.push(format!("folder {}", folder.display()));
        }
        if parts.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

async fn drop_keyspace(nodes: &str, keyspace: &str) -> Result<(), String> {
    let session = SessionBuilder::new()
        .known_node(nodes)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    // Dropping a keyspace is a schema change the node can take a while to agree on.
    let mut drop = scylla::statement::Statement::new(format!("DROP KEYSPACE IF EXISTS {keyspace}"));
    drop.set_request_timeout(Some(REMOVAL_TIMEOUT));
    session
        .query_unpaged(drop, &[])
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lists_everything_in_the_order_the_bench_creates_it() {
        let mut leftovers = Leftovers::new("127.0.0.1:9092");
        assert_eq!(leftovers.to_string(), "nothing");
        leftovers.topic("in".into());
        leftovers.topic("out".into());
        leftovers.group("g1".into());
        leftovers.keyspace("127.0.0.1:9042", "ks".into());
        leftovers.folder(Path::new("/tmp/scratch"));
        assert_eq!(
            leftovers.to_string(),
            "topics in, out; consumer groups g1; keyspace ks; folder /tmp/scratch"
        );
    }

    #[tokio::test]
    async fn keep_removes_nothing_and_says_what_stays() {
        let dir = tempfile::tempdir().unwrap();
        let mut leftovers = Leftovers::new("127.0.0.1:1");
        leftovers.folder(dir.path());
        let cleanup = leftovers.finish(true).await;
        assert!(dir.path().exists());
        assert_eq!(
            cleanup.to_string(),
            format!(
                "kept for inspection (--keep): folder {}",
                dir.path().display()
            )
        );
    }

    #[tokio::test]
    async fn a_keyspace_on_a_node_that_is_down_is_reported_with_how_to_drop_it_by_hand() {
        let mut leftovers = Leftovers::new("127.0.0.1:1");
        // Nothing listens on port 1: the connection is refused at once.
        leftovers.keyspace("127.0.0.1:1", "weir_bench_left".into());
        let cleanup = leftovers.finish(false).await;
        let Cleanup::Incomplete { created, failures } = &cleanup else {
            panic!("{cleanup}");
        };
        assert_eq!(created, "keyspace weir_bench_left");
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].starts_with("cannot drop keyspace weir_bench_left at 127.0.0.1:1: ")
                && failures[0].ends_with("`DROP KEYSPACE weir_bench_left;` in cqlsh"),
            "{}",
            failures[0]
        );
        assert!(
            cleanup.to_string().starts_with(
                "could not remove all the bench created (keyspace weir_bench_left):\n  cannot drop"
            ),
            "{cleanup}"
        );
    }

    #[tokio::test]
    async fn a_folder_is_removed_and_one_already_gone_counts_as_removed() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        std::fs::write(scratch.join("dead-letters.jsonl"), "{}\n").unwrap();
        let mut leftovers = Leftovers::new("127.0.0.1:1");
        leftovers.folder(&scratch);
        assert!(matches!(leftovers.finish(false).await, Cleanup::Removed(_)));
        assert!(!scratch.exists());
        assert!(matches!(leftovers.finish(false).await, Cleanup::Removed(_)));
    }
}
