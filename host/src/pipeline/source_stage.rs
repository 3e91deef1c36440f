//! The source stage: polls batches, marks oversized records, hands them to the transform stage,
//! and commits the positions the sink stage acknowledged. It is the only stage that talks to the
//! source, so commits happen in one place and in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use crate::config::PipelineConfig;
use crate::connectors::{ConnectorError, Source};
use crate::observe::tap::SOURCE_STAGE;
use crate::pipeline::batch::{FromSink, ToTransform};
use crate::pipeline::retry::{Backoff, SHUTDOWN_GRACE};
use crate::pipeline::stats::PipelineStats;
use crate::record::{SourcePosition, SourceRecord};

/// Polls batches and commits acknowledged positions. After the source ends (or shutdown, or the
/// sink stage ending early), it keeps committing until the sink has acknowledged everything in
/// flight.
pub(super) async fn run(
    pipeline: &str,
    mut source: Box<dyn Source>,
    config: &PipelineConfig,
    transform: &mut impl ToTransform,
    from_sink: FromSink,
    stats: &PipelineStats,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectorError> {
    let FromSink {
        acknowledged: mut ack_rx,
        running: mut sink_running,
    } = from_sink;
    let mut result = Ok(());
    let mut commits = PendingCommits::default();
    let source_tap = stats.taps().point(SOURCE_STAGE);
    // Between failed polls; a poll that succeeds starts it over.
    let mut backoff = Backoff::new();
    if let Some(lag) = source.lag_handle() {
        stats.set_lag_handle(lag);
    }
    loop {
        while let Ok(positions) = ack_rx.try_recv() {
            commits.add(positions);
        }
        if commits
            .try_commit(pipeline, source.as_mut(), false)
            .await?
            .is_some()
        {
            stats.commit_failures().fetch_add(1, Ordering::Relaxed);
        }
        if *shutdown.borrow() {
            tracing::info!(pipeline, "Shutdown requested; draining in-flight batches.");
            break;
        }
        // The sender is never used: the channel closing is the whole message.
        if sink_running.has_changed().is_err() {
            // Its error (or panic) is what the pipeline reports once the stages are joined.
            tracing::warn!(pipeline, "The sink stage ended; the source stops polling.");
            break;
        }
        // A poll cancelled half-way may drop records it had read; that loses nothing, because
        // either branch ends the loop and no later position is committed after them.
        let polled = tokio::select! {
            polled = source.poll_batch(config.batch.size, config.batch.linger()) => polled,
            _ = shutdown.changed() => continue,
            _ = sink_running.changed() => continue,
        };
        let mut records = match polled {
            Ok(Some(records)) if records.is_empty() => {
                backoff = Backoff::new();
                continue;
            }
            Ok(Some(records)) => {
                backoff = Backoff::new();
                records
            }
            Ok(None) => break,
            Err(error) if error.is_transient() => {
                stats.source_retries().fetch_add(1, Ordering::Relaxed);
                let wait = backoff.wait();
                tracing::warn!(pipeline, %error, wait_ms = wait.as_millis() as u64, "Source failed; retrying.");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                    _ = sink_running.changed() => {}
                }
                continue;
            }
            Err(error) => {
                result = Err(error);
                break;
            }
        };
        stats.record_polled(records.len());
        source_tap.offer(records.iter().map(|r| (&r.record, Some(&r.position))));
        reject_oversized(&mut records, config.limits.max_record_bytes);
        if !transform.route(records).await {
            break;
        }
    }
    // Closing the workers' queues lets them drain and end.
    transform.close();
    // The sink acknowledges every batch it received before it ends, in order.
    while let Some(positions) = ack_rx.recv().await {
        commits.add(positions);
    }
    // The final commit, retried with backoff, is bounded as a whole by the shutdown grace: a
    // store that stopped answering must not hold up the shutdown. What it could not commit is
    // read again after a restart (duplicates, never a loss), so that is a warning, not a failure.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    let mut backoff = Backoff::new();
    let mut attempts = 0u32;
    // Whether the grace ran out with an attempt under way. Some sources commit on a blocking
    // thread that goes on after the wait for it stops, so that commit may still land.
    let mut cut_short = false;
    loop {
        attempts += 1;
        let committed = tokio::time::timeout_at(
            deadline,
            commits.try_commit(pipeline, source.as_mut(), true),
        )
        .await;
        match committed {
            Ok(Ok(None)) => return result,
            Ok(Ok(Some(_))) => {
                stats.commit_failures().fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                cut_short = true;
                break;
            }
        }
        let wait = backoff.wait();
        if tokio::time::Instant::now() + wait >= deadline {
            break;
        }
        tokio::time::sleep(wait).await;
    }
    let grace_ms = SHUTDOWN_GRACE.as_millis() as u64;
    let positions = commits.describe();
    if cut_short {
        tracing::warn!(
            pipeline,
            attempts,
            grace_ms,
            positions = %positions,
            "The final commit did not finish within the shutdown grace and may still complete; if it does not, the records after the last committed position are read again after a restart (duplicates, not a loss)."
        );
    } else {
        tracing::warn!(
            pipeline,
            attempts,
            grace_ms,
            positions = %positions,
            "Could not commit the final positions within the shutdown grace; the records after the last committed position are read again after a restart (duplicates, not a loss)."
        );
    }
    result
}

/// Bytes of an oversized record's value kept in its dead letter.
const OVERSIZED_EXCERPT: usize = 64 * 1024;

/// Marks records larger than `max_bytes` as malformed. Their dead letter keeps only the start of
/// the value, with the full size and sha256 in headers: an oversized record would not fit most
/// dead-letter destinations either, and the whole record stays in the source at the coordinates
/// the dead letter names.
fn reject_oversized(records: &mut [SourceRecord], max_bytes: usize) {
    for source_record in records.iter_mut().filter(|r| r.malformed.is_none()) {
        let record = &mut source_record.record;
        let size = record.value.len() + record.key.as_ref().map_or(0, |key| key.len());
        if size <= max_bytes {
            continue;
        }
        source_record.malformed = Some(format!(
            "record of {size} bytes exceeds limits.max_record_bytes ({max_bytes}); the dead letter keeps its first {OVERSIZED_EXCERPT} bytes"
        ));
        record.keep_excerpt(OVERSIZED_EXCERPT);
    }
}

/// Acknowledged positions not yet committed, merged per stream and partition. Commits are
/// cumulative, so a failed commit is simply retried with the later positions included, after a
/// backoff: a store that refuses commits (a full disk under a checkpoint, an offsets table
/// gone read-only) is not asked again at every poll, nor is the log written at every poll.
#[derive(Default)]
struct PendingCommits {
    highest: BTreeMap<(Arc<str>, i32), i64>,
    /// Set while commits fail.
    failing: Option<FailingCommits>,
}

/// A run of failed commits: how many, since when, and when the next may be tried.
struct FailingCommits {
    since: tokio::time::Instant,
    failures: u32,
    backoff: Backoff,
    retry_at: tokio::time::Instant,
}

impl PendingCommits {
    /// The positions not committed, as `stream[partition]@offset`, for a message.
    fn describe(&self) -> String {
        if self.highest.is_empty() {
            return "those acknowledged since the last commit".to_owned();
        }
        self.highest
            .iter()
            .map(|((stream, partition), offset)| format!("{stream}[{partition}]@{offset}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn add(&mut self, positions: Vec<SourcePosition>) {
        for position in positions {
            let offset = self
                .highest
                .entry((position.stream, position.partition))
                .or_insert(position.offset);
            *offset = (*offset).max(position.offset);
        }
    }

    /// Commits what is pending; `last` when the pipeline has drained and this commit must be
    /// durable before returning. A transient failure keeps it pending and is returned as
    /// `Some(error)`; a permanent one is an error.
    async fn try_commit(
        &mut self,
        pipeline: &str,
        source: &mut dyn Source,
        last: bool,
    ) -> Result<Option<ConnectorError>, ConnectorError> {
        // The last commit always goes out: a source that commits on an interval may hold
        // acknowledgements that no pending position names any more. It also goes out at once,
        // whatever the backoff: it has a loop of its own, bounded by the shutdown grace.
        if !last
            && (self.highest.is_empty()
                || self
                    .failing
                    .as_ref()
                    .is_some_and(|failing| tokio::time::Instant::now() < failing.retry_at))
        {
            return Ok(None);
        }
        let positions: Vec<SourcePosition> = self
            .highest
            .iter()
            .map(|((stream, partition), offset)| SourcePosition {
                stream: Arc::clone(stream),
                partition: *partition,
                offset: *offset,
            })
            .collect();
        let committed = if last {
            source.commit_final(&positions).await
        } else {
            source.commit(&positions).await
        };
        match committed {
            Ok(()) => {
                self.highest.clear();
                if let Some(failing) = self.failing.take() {
                    tracing::info!(
                        pipeline,
                        failures = failing.failures,
                        failing_for_ms = failing.since.elapsed().as_millis() as u64,
                        "Commits succeed again."
                    );
                }
                Ok(None)
            }
            Err(error) if error.is_transient() => {
                let now = tokio::time::Instant::now();
                let failing = self.failing.get_or_insert_with(|| FailingCommits {
                    since: now,
                    failures: 0,
                    backoff: Backoff::new(),
                    retry_at: now,
                });
                failing.failures += 1;
                let wait = failing.backoff.wait();
                failing.retry_at = now + wait;
                tracing::warn!(
                    pipeline,
                    %error,
                    attempt = failing.failures,
                    wait_ms = wait.as_millis() as u64,
                    "Commit failed; it will be retried with later positions."
                );
                Ok(Some(error))
            }
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::sync::{Notify, mpsc};

    use super::*;
    use crate::connectors::LagHandle;
    use crate::observe::PartitionLag;
    use crate::record::Record;

    /// A source with a record in every poll and a lag the test moves.
    struct Lagging {
        lag: Arc<Mutex<i64>>,
    }

    #[async_trait]
    impl Source for Lagging {
        async fn poll_batch(
            &mut self,
            _max: usize,
            _linger: Duration,
        ) -> Result<Option<Vec<SourceRecord>>, ConnectorError> {
            Ok(Some(vec![SourceRecord {
                record: Record::from_value("{}"),
                position: SourcePosition {
                    stream: Arc::from("t"),
                    partition: 0,
                    offset: 0,
                },
                malformed: None,
            }]))
        }

        async fn commit(&mut self, _positions: &[SourcePosition]) -> Result<(), ConnectorError> {
            Ok(())
        }

        fn lag_handle(&self) -> Option<LagHandle> {
            let lag = Arc::clone(&self.lag);
            Some(LagHandle::new(move || {
                Some(vec![PartitionLag {
                    topic: "t".into(),
                    partition: 0,
                    lag: *lag.lock().unwrap(),
                }])
            }))
        }
    }

    /// A transform stage whose queues are full for good: `route` never returns.
    struct Stalled {
        routed: Arc<Notify>,
    }

    impl ToTransform for Stalled {
        async fn route(&mut self, _records: Vec<SourceRecord>) -> bool {
            self.routed.notify_one();
            std::future::pending().await
        }

        fn close(&mut self) {}
    }

    fn generate_pipeline() -> PipelineConfig {
        crate::config::PipelineFile::parse(
            Path::new("t.toml"),
            r#"
            [[pipeline]]
            name = "p"
            source = { type = "generate" }
            sink = { type = "blackhole" }
            dead_letter = { type = "stdout" }
            "#,
        )
        .unwrap()
        .pipelines
        .remove(0)
    }

    /// A transform stage that takes every batch.
    struct Taking;

    impl ToTransform for Taking {
        async fn route(&mut self, _records: Vec<SourceRecord>) -> bool {
            true
        }

        fn close(&mut self) {}
    }

    /// What a scripted source's poll answers.
    enum Poll {
        Fails,
        Empty,
    }

    /// A source that answers its polls as `script` says, then ends. Its commits succeed, or fail for good (`Fails`), or the final one never answers
    /// (`Hangs`).
    struct Scripted {
        script: std::collections::VecDeque<Poll>,
        final_commit: FinalCommit,
    }

    #[derive(Clone, Copy)]
    enum FinalCommit {
        Succeeds,
        Fails,
        Hangs,
    }

    #[async_trait]
    impl Source for Scripted {
        async fn poll_batch(
            &mut self,
            _max: usize,
            _linger: Duration,
        ) -> Result<Option<Vec<SourceRecord>>, ConnectorError> {
            match self.script.pop_front() {
                Some(Poll::Fails) => Err(ConnectorError::transient("s", "down")),
                Some(Poll::Empty) => Ok(Some(Vec::new())),
                None => Ok(None),
            }
        }

        /// Fails unless the final commit is to succeed, so the positions stay pending.
        async fn commit(&mut self, _positions: &[SourcePosition]) -> Result<(), ConnectorError> {
            match self.final_commit {
                FinalCommit::Succeeds => Ok(()),
                FinalCommit::Fails | FinalCommit::Hangs => {
                    Err(ConnectorError::transient("s", "commit refused"))
                }
            }
        }

        async fn commit_final(
            &mut self,
            positions: &[SourcePosition],
        ) -> Result<(), ConnectorError> {
            match self.final_commit {
                FinalCommit::Hangs => std::future::pending().await,
                FinalCommit::Succeeds | FinalCommit::Fails => self.commit(positions).await,
            }
        }
    }

    /// Runs the source stage over `source` with one acknowledged position, until it ends.
    async fn run_scripted(source: Scripted) -> Result<(), ConnectorError> {
        let config = generate_pipeline();
        let stats = PipelineStats::new("p");
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        ack_tx
            .send(vec![SourcePosition {
                stream: Arc::from("t"),
                partition: 0,
                offset: 7,
            }])
            .unwrap();
        drop(ack_tx);
        let (_running_tx, running_rx) = watch::channel(());
        let (_shutdown_tx, shutdown_rx) = watch::channel(false);
        let from_sink = FromSink {
            acknowledged: ack_rx,
            running: running_rx,
        };
        run(
            "p",
            Box::new(source),
            &config,
            &mut Taking,
            from_sink,
            &stats,
            shutdown_rx,
        )
        .await
    }

    /// Everything logged on this thread while the guard lives, as text.
    fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        struct Writer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Writer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&logs);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Writer(Arc::clone(&into)))
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(logs: &Mutex<Vec<u8>>) -> String {
        String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
    }

    #[tokio::test]
    async fn a_failing_source_is_retried_with_backoff_that_a_success_starts_over() {
        use Poll::{Empty, Fails};
        let (logs, _guard) = capture_logs();
        let source = Scripted {
            script: [Fails, Fails, Fails, Empty, Fails].into(),
            final_commit: FinalCommit::Succeeds,
        };
        run_scripted(source).await.unwrap();
        let logged = text(&logs);
        let waits: Vec<u64> = logged
            .lines()
            .filter(|line| line.contains("Source failed; retrying."))
            .map(|line| {
                let at = line.find("wait_ms=").expect("each retry logs its wait") + 8;
                let digits: String = line[at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().unwrap()
            })
            .collect();
        // Each wait is a random part, half to all, of 100 ms doubling; the poll that succeeded
        // started it over.
        let expected = [(50, 100), (100, 200), (200, 400), (50, 100)];
        assert_eq!(waits.len(), expected.len(), "{logged}");
        for (wait, (low, high)) in waits.iter().zip(expected) {
            assert!((low..high).contains(wait), "{waits:?}");
        }
    }

    /// On a paused clock, so the grace passes at once and the time the stage took is exact.
    #[tokio::test(start_paused = true)]
    async fn a_final_commit_that_cannot_succeed_ends_within_the_grace_without_failing() {
        let (logs, _guard) = capture_logs();
        let ending = |final_commit| async move {
            let source = Scripted {
                script: Default::default(),
                final_commit,
            };
            let started = tokio::time::Instant::now();
            let ended = run_scripted(source).await;
            (ended, started.elapsed())
        };
        let (failing, hanging) =
            tokio::join!(ending(FinalCommit::Fails), ending(FinalCommit::Hangs));
        for (ended, took) in [failing, hanging] {
            ended.expect("a final commit that cannot succeed does not fail the pipeline");
            assert!(
                took <= SHUTDOWN_GRACE + Duration::from_millis(10),
                "the source stage took {took:?}, longer than the grace"
            );
        }
        let logged = text(&logs);
        let warned = |message: &str| {
            logged
                .lines()
                .filter(|line| {
                    line.contains("WARN")
                        && line.contains(message)
                        && line.contains("t[0]@7")
                        && line.contains("read again after a restart")
                })
                .count()
        };
        // A commit that failed is over; one cut short by the grace may still land.
        assert_eq!(
            warned("Could not commit the final positions within the shutdown grace;"),
            1,
            "{logged}"
        );
        assert_eq!(
            warned(
                "did not finish within the shutdown grace and may still complete; if it does not"
            ),
            1,
            "{logged}"
        );
    }

    /// A source whose commits fail while `refusing`, counting the attempts.
    struct Refusing {
        refusing: bool,
        attempts: u32,
    }

    #[async_trait]
    impl Source for Refusing {
        async fn poll_batch(
            &mut self,
            _max: usize,
            _linger: Duration,
        ) -> Result<Option<Vec<SourceRecord>>, ConnectorError> {
            Ok(None)
        }

        async fn commit(&mut self, _positions: &[SourcePosition]) -> Result<(), ConnectorError> {
            self.attempts += 1;
            if self.refusing {
                Err(ConnectorError::transient("s", "no space left on device"))
            } else {
                Ok(())
            }
        }
    }

    /// On a paused clock: the stage asks for a commit at every poll, here every millisecond.
    #[tokio::test(start_paused = true)]
    async fn failing_commits_are_retried_with_backoff_not_at_every_poll() {
        let (logs, _guard) = capture_logs();
        let mut source = Refusing {
            refusing: true,
            attempts: 0,
        };
        let mut commits = PendingCommits::default();
        commits.add(vec![SourcePosition {
            stream: Arc::from("t"),
            partition: 0,
            offset: 7,
        }]);
        for _ in 0..1000 {
            commits.try_commit("p", &mut source, false).await.unwrap();
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        // At 0 ms, then after waits of 50-100, 100-200, 200-400 and 400-800 ms.
        assert!(
            (3..=5).contains(&source.attempts),
            "{} commit attempts in a second",
            source.attempts
        );
        // The final commit does not wait for the backoff.
        let before = source.attempts;
        let failed = commits.try_commit("p", &mut source, true).await.unwrap();
        assert!(failed.is_some());
        assert_eq!(source.attempts, before + 1);
        source.refusing = false;
        for _ in 0..20_000 {
            commits.try_commit("p", &mut source, false).await.unwrap();
            if commits.highest.is_empty() {
                break;
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(commits.highest.is_empty(), "never committed once it could");
        let logged = text(&logs);
        let warned = logged
            .lines()
            .filter(|line| line.contains("Commit failed;"))
            .count();
        assert_eq!(warned as u32, before + 1, "{logged}");
        assert!(
            logged.contains(&format!(
                "Commits succeed again. pipeline=\"p\" failures={}",
                before + 1
            )),
            "{logged}"
        );
    }

    #[test]
    fn positions_not_committed_are_named() {
        let mut commits = PendingCommits::default();
        assert!(commits.describe().contains("acknowledged"));
        commits.add(vec![
            SourcePosition {
                stream: Arc::from("orders"),
                partition: 2,
                offset: 41,
            },
            SourcePosition {
                stream: Arc::from("orders"),
                partition: 2,
                offset: 40,
            },
        ]);
        assert_eq!(commits.describe(), "orders[2]@41");
    }

    #[tokio::test]
    async fn the_lag_keeps_moving_while_the_source_waits_on_a_stalled_sink() {
        let config = generate_pipeline();
        let lag = Arc::new(Mutex::new(1));
        let stats = Arc::new(PipelineStats::new("p"));
        let routed = Arc::new(Notify::new());
        let (_ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (_running_tx, running_rx) = watch::channel(());
        let (_shutdown_tx, shutdown_rx) = watch::channel(false);
        let stage = tokio::spawn({
            let source = Box::new(Lagging {
                lag: Arc::clone(&lag),
            });
            let stats = Arc::clone(&stats);
            let mut transform = Stalled {
                routed: Arc::clone(&routed),
            };
            async move {
                let from_sink = FromSink {
                    acknowledged: ack_rx,
                    running: running_rx,
                };
                run(
                    "p",
                    source,
                    &config,
                    &mut transform,
                    from_sink,
                    &stats,
                    shutdown_rx,
                )
                .await
            }
        });
        // The source stage is stuck handing its first batch on, and stays so.
        routed.notified().await;
        for produced in [20, 300] {
            *lag.lock().unwrap() = produced;
            let reported: Vec<i64> = stats.lag().iter().map(|p| p.lag).collect();
            assert_eq!(reported, [produced]);
        }
        stage.abort();
    }
}
