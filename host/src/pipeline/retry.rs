//! Retries with capped exponential backoff and jitter, for as long as the pipeline runs, because
//! dropping data is never the answer to an outage: sink writes, and opening the connectors at
//! start, so a store that is down when the process starts only delays the pipeline.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::RngExt;
use tokio::sync::watch;

use crate::connectors::{ConnectorError, Rejected, Sink};
use crate::record::Record;

/// The first wait after a failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The waits between the attempts of one operation: doubling up to [`MAX_BACKOFF`], each
/// shortened by a random part of up to half, so pipelines retrying against the same store do
/// not hit it in step. Also the source stage's, between failed polls and final commits.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff {
            next: INITIAL_BACKOFF,
        }
    }

    pub(super) fn wait(&mut self) -> Duration {
        let wait = self.next.mul_f64(rand::rng().random_range(0.5..1.0));
        self.next = (self.next * 2).min(MAX_BACKOFF);
        wait
    }
}

/// Resolves once shutdown is requested. A sender that is gone can never request it, so then
/// this never resolves (rather than resolving at once, which would turn waits into busy loops).
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|requested| *requested).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How long a write still under way when shutdown is requested may take to finish. A healthy
/// store answers well within it, so a drain completes; a store that stopped answering (a
/// half-open connection, a hung server) is given up on, so a shutdown never waits for an outage
/// to end.
pub const SHUTDOWN_GRACE: std::time::Duration = Duration::from_secs(5);

/// Writes `records` to `sink` until it succeeds or fails permanently. Shutdown ends it early
/// with `Ok(None)`, nothing written for sure and so nothing to acknowledge: at once while it
/// is failing (no retry begins after shutdown), and [`SHUTDOWN_GRACE`] after the request
/// while an attempt is under way. Each retry is counted in `retries`.
pub async fn write_with_backoff(
    what: &str,
    sink: &mut dyn Sink,
    records: &[Record],
    shutdown: &mut watch::Receiver<bool>,
    retries: &AtomicU64,
) -> Result<Option<Vec<Rejected>>, ConnectorError> {
    write_until(what, sink, records, shutdown, retries, SHUTDOWN_GRACE).await
}

async fn write_until(
    what: &str,
    sink: &mut dyn Sink,
    records: &[Record],
    shutdown: &mut watch::Receiver<bool>,
    retries: &AtomicU64,
    grace: Duration,
) -> Result<Option<Vec<Rejected>>, ConnectorError> {
    let mut backoff = Backoff::new();
    let mut attempt = 1u32;
    let abandoned = |attempt: u32, why: &str| -> Result<Option<Vec<Rejected>>, ConnectorError> {
        tracing::warn!(
            what,
            attempt,
            records = records.len(),
            "Shutdown requested {why}; the batch is abandoned unacknowledged and will be read again after a restart."
        );
        Ok(None)
    };
    loop {
        let written = tokio::select! {
            written = sink.write(records) => written,
            () = grace_after_shutdown(shutdown, grace) => {
                return abandoned(attempt, &format!("and the write did not finish within {} ms", grace.as_millis()));
            }
        };
        let error = match written {
            Ok(rejected) => {
                if attempt > 1 {
                    tracing::info!(what, attempt, "Recovered after retries.");
                }
                return Ok(Some(rejected));
            }
            Err(error) if !error.is_transient() => return Err(error),
            Err(error) => error,
        };
        if *shutdown.borrow() {
            tracing::warn!(what, attempt, %error, "Write failed.");
            return abandoned(attempt, "while the write was failing");
        }
        let wait = backoff.wait();
        tracing::warn!(what, attempt, %error, wait_ms = wait.as_millis() as u64, "Write failed; retrying.");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown_requested(shutdown) => return abandoned(attempt, "while the write was failing"),
        }
        attempt += 1;
        retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// Resolves `grace` after shutdown is requested.
async fn grace_after_shutdown(shutdown: &mut watch::Receiver<bool>, grace: Duration) {
    shutdown_requested(shutdown).await;
    tokio::time::sleep(grace).await;
}

/// Opens a connector with `open` until it succeeds or fails permanently; a transient failure is
/// logged and retried. `Ok(None)` when shutdown is requested first: an attempt under way is
/// abandoned then, since nothing was read or written through it yet.
pub async fn open_with_backoff<T, F, Fut>(
    pipeline: &str,
    connector: &str,
    shutdown: &mut watch::Receiver<bool>,
    mut open: F,
) -> Result<Option<T>, ConnectorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ConnectorError>>,
{
    let mut backoff = Backoff::new();
    let mut attempt = 1u32;
    loop {
        if *shutdown.borrow() {
            return Ok(None);
        }
        // A connection attempt may hang (a firewall dropping packets), so shutdown ends it too.
        let result = tokio::select! {
            result = open() => result,
            _ = shutdown_requested(shutdown) => return Ok(None),
        };
        let error = match result {
            Ok(opened) => {
                if attempt > 1 {
                    tracing::info!(pipeline, connector, attempt, "Opened after retries.");
                }
                return Ok(Some(opened));
            }
            Err(error) if !error.is_transient() => return Err(error),
            Err(error) => error,
        };
        let wait = backoff.wait();
        tracing::warn!(pipeline, connector, attempt, %error, wait_ms = wait.as_millis() as u64, "Cannot open the connector; retrying.");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown_requested(shutdown) => return Ok(None),
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    use crate::connectors::ErrorKind;

    /// Fails `failures` times with `retry`, then accepts.
    struct FlakySink {
        failures: u32,
        retry: ErrorKind,
        calls: u32,
    }

    #[async_trait]
    impl Sink for FlakySink {
        async fn write(&mut self, _records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
            self.calls += 1;
            if self.calls <= self.failures {
                Err(ConnectorError::new(self.retry, "flaky", "down"))
            } else {
                Ok(Vec::new())
            }
        }
    }

    #[tokio::test]
    async fn retries_transient_errors_until_success() {
        let (_tx, mut rx) = watch::channel(false);
        let mut sink = FlakySink {
            failures: 2,
            retry: ErrorKind::Transient,
            calls: 0,
        };
        let retries = AtomicU64::new(0);
        assert!(
            write_with_backoff("t", &mut sink, &[], &mut rx, &retries)
                .await
                .is_ok()
        );
        assert_eq!(sink.calls, 3);
        assert_eq!(retries.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn fatal_errors_are_not_retried() {
        let (_tx, mut rx) = watch::channel(false);
        let mut sink = FlakySink {
            failures: 5,
            retry: ErrorKind::Fatal,
            calls: 0,
        };
        assert!(
            write_with_backoff("t", &mut sink, &[], &mut rx, &AtomicU64::new(0))
                .await
                .is_err()
        );
        assert_eq!(sink.calls, 1);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below_each_step() {
        let mut backoff = Backoff::new();
        let mut step = INITIAL_BACKOFF;
        for _ in 0..12 {
            let wait = backoff.wait();
            assert!(
                wait >= step / 2 && wait <= step,
                "{wait:?} for a step of {step:?}"
            );
            step = (step * 2).min(MAX_BACKOFF);
        }
        assert_eq!(step, MAX_BACKOFF);
    }

    /// An `open` that fails `failures` times with `retry`, then opens; counts its calls.
    fn flaky_open(
        failures: u32,
        retry: ErrorKind,
        calls: &std::cell::Cell<u32>,
    ) -> impl FnMut() -> std::future::Ready<Result<&'static str, ConnectorError>> + '_ {
        move || {
            calls.set(calls.get() + 1);
            std::future::ready(if calls.get() <= failures {
                Err(ConnectorError::new(retry, "flaky", "down"))
            } else {
                Ok("opened")
            })
        }
    }

    #[tokio::test]
    async fn opening_retries_transient_errors_until_it_opens() {
        let (_tx, mut rx) = watch::channel(false);
        let calls = std::cell::Cell::new(0);
        let opened = open_with_backoff(
            "p",
            "flaky",
            &mut rx,
            flaky_open(3, ErrorKind::Transient, &calls),
        )
        .await;
        assert_eq!(opened.unwrap(), Some("opened"));
        assert_eq!(calls.get(), 4);
    }

    #[tokio::test]
    async fn opening_fails_at_once_on_a_fatal_error() {
        let (_tx, mut rx) = watch::channel(false);
        let calls = std::cell::Cell::new(0);
        let opened = open_with_backoff(
            "p",
            "flaky",
            &mut rx,
            flaky_open(5, ErrorKind::Fatal, &calls),
        )
        .await;
        assert_eq!(opened.unwrap_err().message, "down");
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test]
    async fn shutdown_ends_opening_without_an_error() {
        let (tx, mut rx) = watch::channel(false);
        let calls = std::cell::Cell::new(0);
        let opening = open_with_backoff(
            "p",
            "flaky",
            &mut rx,
            flaky_open(u32::MAX, ErrorKind::Transient, &calls),
        );
        // Asked while the attempts keep failing: the wait between two attempts ends at once.
        let ask = async {
            while calls.get() < 2 {
                tokio::task::yield_now().await;
            }
            tx.send(true).unwrap();
        };
        let (opened, ()) = tokio::join!(opening, ask);
        assert_eq!(opened.unwrap(), None);
        assert_eq!(calls.get(), 2);
    }

    #[tokio::test]
    async fn shutdown_stops_retrying_and_acknowledges_nothing() {
        let (tx, mut rx) = watch::channel(false);
        tx.send(true).unwrap();
        let mut sink = FlakySink {
            failures: u32::MAX,
            retry: ErrorKind::Transient,
            calls: 0,
        };
        let written = write_with_backoff("t", &mut sink, &[], &mut rx, &AtomicU64::new(0)).await;
        assert!(matches!(written, Ok(None)), "{written:?}");
        assert_eq!(sink.calls, 1);
    }

    /// Never answers, as a store behind a half-open connection.
    struct HungSink;

    #[async_trait]
    impl Sink for HungSink {
        async fn write(&mut self, _records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn shutdown_abandons_a_hung_write_after_the_grace() {
        let (tx, mut rx) = watch::channel(false);
        let (mut sink, retries) = (HungSink, AtomicU64::new(0));
        let writing = write_until(
            "t",
            &mut sink,
            &[],
            &mut rx,
            &retries,
            Duration::from_millis(20),
        );
        let ask = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(true).unwrap();
        };
        let (written, ()) = tokio::join!(writing, ask);
        assert!(matches!(written, Ok(None)), "{written:?}");
    }

    #[tokio::test]
    async fn a_write_under_way_at_shutdown_may_still_finish() {
        let (tx, mut rx) = watch::channel(false);
        tx.send(true).unwrap();
        let mut sink = FlakySink {
            failures: 0,
            retry: ErrorKind::Transient,
            calls: 0,
        };
        let written = write_with_backoff("t", &mut sink, &[], &mut rx, &AtomicU64::new(0)).await;
        assert!(matches!(written, Ok(Some(_))), "{written:?}");
    }
}
