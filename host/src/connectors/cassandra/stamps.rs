//! Write timestamps for the sink's rows, fixed when a batch first starts writing: with several
//! batches in flight, and retries, a key's rows may reach Cassandra out of order, and its
//! last-write-wins by timestamp then still keeps the row of the later record. A write the
//! client gave up on (a timeout, a lost connection) that reaches the server late carries the
//! same or an older timestamp than every write of that key after it, so it cannot overwrite them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Hands out ranges of microsecond timestamps, each later than every one handed out before in
/// this process, and never behind the wall clock.
#[derive(Debug, Default)]
pub(super) struct Stamps {
    last: AtomicI64,
}

impl Stamps {
    /// Reserves `count` consecutive timestamps and returns the first.
    pub(super) fn reserve(&self, count: usize) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
            });
        let count = i64::try_from(count.max(1)).unwrap_or(i64::MAX);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let first = now.max(last.saturating_add(1));
            let through = first.saturating_add(count - 1);
            match self.last.compare_exchange_weak(
                last,
                through,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return first,
                Err(current) => last = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_never_overlap_and_always_increase() {
        let stamps = Stamps::default();
        let first = stamps.reserve(100);
        let second = stamps.reserve(1);
        let third = stamps.reserve(0);
        assert!(second >= first + 100, "{first} then {second}");
        assert!(third > second);
        // Ahead of a clock that went back: still later.
        stamps.last.store(i64::MAX / 2, Ordering::Relaxed);
        assert_eq!(stamps.reserve(5), i64::MAX / 2 + 1);
    }
}
