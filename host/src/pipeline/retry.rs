//! Retries of sink writes: capped exponential backoff with jitter, for as long as the pipeline
//! runs, because dropping data is never the answer to an outage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::RngExt;
use tokio::sync::watch;

use crate::connectors::{ConnectorError, Rejected, Retry, Sink};
use crate::record::Record;

/// The first wait after a failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Writes `records` to `sink` until it succeeds, fails permanently, or shutdown is requested
/// while it is failing (then the last error is returned and nothing is acknowledged). Each retry
/// is counted in `retries`.
pub async fn write_with_backoff(
    what: &str,
    sink: &mut dyn Sink,
    records: &[Record],
    shutdown: &mut watch::Receiver<bool>,
    retries: &AtomicU64,
) -> Result<Vec<Rejected>, ConnectorError> {
    let mut backoff = INITIAL_BACKOFF;
    let mut attempt = 1u32;
    loop {
        let error = match sink.write(records).await {
            Ok(rejected) => {
                if attempt > 1 {
                    tracing::info!(what, attempt, "Recovered after retries.");
                }
                return Ok(rejected);
            }
            Err(error) if error.retry == Retry::Never => return Err(error),
            Err(error) => error,
        };
        if *shutdown.borrow() {
            return Err(error);
        }
        let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
        tracing::warn!(what, attempt, %error, wait_ms = wait.as_millis() as u64, "Write failed; retrying.");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        attempt += 1;
        retries.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    /// Fails `failures` times with `retry`, then accepts.
    struct FlakySink {
        failures: u32,
        retry: Retry,
        calls: u32,
    }

    #[async_trait]
    impl Sink for FlakySink {
        async fn write(&mut self, _records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
            self.calls += 1;
            if self.calls <= self.failures {
                Err(ConnectorError {
                    connector: "flaky".into(),
                    message: "down".into(),
                    retry: self.retry,
                })
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
            retry: Retry::WithBackoff,
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
            retry: Retry::Never,
            calls: 0,
        };
        assert!(
            write_with_backoff("t", &mut sink, &[], &mut rx, &AtomicU64::new(0))
                .await
                .is_err()
        );
        assert_eq!(sink.calls, 1);
    }

    #[tokio::test]
    async fn shutdown_stops_retrying_and_reports_the_error() {
        let (tx, mut rx) = watch::channel(false);
        tx.send(true).unwrap();
        let mut sink = FlakySink {
            failures: u32::MAX,
            retry: Retry::WithBackoff,
            calls: 0,
        };
        assert!(
            write_with_backoff("t", &mut sink, &[], &mut rx, &AtomicU64::new(0))
                .await
                .is_err()
        );
        assert_eq!(sink.calls, 1);
    }
}
