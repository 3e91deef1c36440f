//! Waits, before each timed run of `weir bench pipeline`, until the Cassandra node has no flush
//! or compaction running or queued. The rows a run writes are flushed and compacted in the
//! background for seconds after it ends, on the cores the next run needs: a read-only run that
//! started then measured the node's housekeeping of the run before it, and its ratio moved from
//! round to round with it. Before the latency run it also empties the tables the throughput
//! runs wrote: the node kept the last of their rows in its memtables and flushed them during the
//! latency run, where that flush was measured as the pipeline's tail.

use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

use super::BenchError;

/// The node's thread pools that work through written data in the background.
const BACKGROUND_POOLS: [&str; 3] = [
    "CompactionExecutor",
    "MemtableFlushWriter",
    "MemtablePostFlush",
];

/// How long the node may take to empty a table: Cassandra's own `truncate_request_timeout`
/// (60 s by default) plus slack, so the node's answer arrives rather than the driver's timeout.
const TRUNCATE_TIMEOUT: Duration = Duration::from_secs(90);

/// How often the node's pools are read while waiting.
const POLL: Duration = Duration::from_millis(250);

/// Reads in a row that must find the pools idle: a compaction often starts just after the flush
/// that feeds it ends.
const IDLE_READS: u32 = 4;

/// The longest wait; a run then starts anyway, and the report says so.
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// The node's background pools, read through the `system_views.thread_pools` virtual table
/// (Cassandra 4.0 and later) of the node the session reaches.
pub struct NodeWatch {
    session: Session,
}

/// One of the node's thread pools, as `system_views.thread_pools` reports it.
struct Pool {
    name: String,
    /// Tasks running.
    active: i32,
    /// Tasks queued.
    pending: i32,
    /// Tasks completed since the node started.
    completed: i64,
}

/// The waits before the runs of one benchmark.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Waits {
    /// Waits made.
    pub count: usize,
    /// All of them together.
    pub total: Duration,
    /// The longest.
    pub longest: Duration,
    /// Runs that started after [`LONGEST_WAIT`] with the node still busy.
    pub still_busy: usize,
}

/// `17 runs ...: 19.6 s in all, 2.5 s at most`, and how many started busy, if any.
impl std::fmt::Display for Waits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "before each of its {} runs the bench waited for the Cassandra node to finish flushing and compacting: {:.1} s in all, {:.1} s at most",
            self.count,
            self.total.as_secs_f64(),
            self.longest.as_secs_f64()
        )?;
        if self.still_busy > 0 {
            write!(
                f,
                "; {} started with the node still busy after {} s",
                self.still_busy,
                LONGEST_WAIT.as_secs()
            )?;
        }
        Ok(())
    }
}

impl Waits {
    fn add(&mut self, waited: Duration, quiet: bool) {
        self.count += 1;
        self.total += waited;
        self.longest = self.longest.max(waited);
        if !quiet {
            self.still_busy += 1;
        }
    }
}

impl NodeWatch {
    /// Connects to the node at `nodes`.
    pub async fn connect(nodes: &str) -> Result<NodeWatch, BenchError> {
        let session = SessionBuilder::new()
            .known_node(nodes)
            .build()
            .await
            .map_err(|e| {
                BenchError::Setup(format!("cannot connect to Cassandra at {nodes}: {e}"))
            })?;
        Ok(NodeWatch { session })
    }

    /// Empties `keyspace.table` for each of `tables`, so none of their rows stay in the node's
    /// memtables to be flushed during a later run once they fill. The node discards them, or
    /// flushes them first where its settings ask for that (durable writes, `auto_snapshot`);
    /// [`NodeWatch::until_quiet`] then waits for the compaction such a flush starts.
    pub async fn empty_tables(&self, keyspace: &str, tables: &[&str]) -> Result<(), BenchError> {
        for table in tables {
            let mut truncate =
                scylla::statement::Statement::new(format!("TRUNCATE TABLE {keyspace}.{table}"));
            truncate.set_request_timeout(Some(TRUNCATE_TIMEOUT));
            self.session
                .query_unpaged(truncate, &[])
                .await
                .map_err(|e| {
                    BenchError::Setup(format!(
                        "cannot empty {keyspace}.{table} before the latency run (TRUNCATE needs every replica up): {e}"
                    ))
                })?;
        }
        Ok(())
    }

    /// The background pools, as the node reports them now.
    async fn background_pools(&self) -> Result<Vec<Pool>, BenchError> {
        let unreadable = |e: &dyn std::fmt::Display| {
            BenchError::Setup(format!(
                "cannot read system_views.thread_pools (Cassandra 4.0 or later) to watch the node's flushes and compactions: {e}"
            ))
        };
        let rows = self
            .session
            .query_unpaged(
                "SELECT name, active_tasks, pending_tasks, completed_tasks FROM system_views.thread_pools",
                &[],
            )
            .await
            .map_err(|e| unreadable(&e))?
            .into_rows_result()
            .map_err(|e| unreadable(&e))?;
        let mut pools = Vec::with_capacity(BACKGROUND_POOLS.len());
        for row in rows
            .rows::<(String, i32, i32, i64)>()
            .map_err(|e| unreadable(&e))?
        {
            let (name, active, pending, completed) = row.map_err(|e| unreadable(&e))?;
            if BACKGROUND_POOLS.contains(&name.as_str()) {
                pools.push(Pool {
                    name,
                    active,
                    pending,
                    completed,
                });
            }
        }
        Ok(pools)
    }

    /// Tasks running or queued in the node's background pools.
    async fn background_tasks(&self) -> Result<i64, BenchError> {
        let pools = self.background_pools().await?;
        Ok(pools
            .iter()
            .map(|pool| i64::from(pool.active) + i64::from(pool.pending))
            .sum())
    }

    /// Memtable flushes the node has completed since it started, of any table: read before and
    /// after a run, the flushes that ran during it.
    pub async fn flushes_completed(&self) -> Result<i64, BenchError> {
        let pools = self.background_pools().await?;
        Ok(pools
            .iter()
            .filter(|pool| pool.name == "MemtableFlushWriter")
            .map(|pool| pool.completed)
            .sum())
    }

    /// Waits until the background pools are idle on [`IDLE_READS`] reads in a row, or
    /// [`LONGEST_WAIT`] passed, and adds the wait to `waits`.
    pub async fn until_quiet(&self, waits: &mut Waits) -> Result<(), BenchError> {
        let started = Instant::now();
        let mut idle_reads = 0;
        let quiet = loop {
            if self.background_tasks().await? == 0 {
                idle_reads += 1;
                if idle_reads == IDLE_READS {
                    break true;
                }
            } else {
                idle_reads = 0;
            }
            if started.elapsed() >= LONGEST_WAIT {
                break false;
            }
            tokio::time::sleep(POLL).await;
        };
        waits.add(started.elapsed(), quiet);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_add_up_and_count_the_runs_that_started_busy() {
        let mut waits = Waits::default();
        waits.add(Duration::from_secs(2), true);
        waits.add(Duration::from_secs(60), false);
        waits.add(Duration::from_secs(1), true);
        assert_eq!(
            waits,
            Waits {
                count: 3,
                total: Duration::from_secs(63),
                longest: Duration::from_secs(60),
                still_busy: 1,
            }
        );
        assert_eq!(
            waits.to_string(),
            "before each of its 3 runs the bench waited for the Cassandra node to finish flushing and compacting: 63.0 s in all, 60.0 s at most; 1 started with the node still busy after 60 s"
        );
    }
}
