//! How this process fares as a consumer-group member (rebalances, partitions owned, time spent
//! owning none), so an operator can see whether scaling out or a failover stopped the group.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Live counters of one consumer, updated by its rebalance callbacks.
#[derive(Debug)]
pub struct GroupMetrics {
    rebalances: AtomicU64,
    assigned: AtomicU64,
    revoked: AtomicU64,
    lost: AtomicU64,
    pauses: AtomicU64,
    /// Interval commits the group coordinator refused or never answered (the next one carries
    /// the same offsets).
    commit_failures: AtomicU64,
    /// Partitions moved past records deleted before this member read them.
    deleted_unread: AtomicU64,
    owned: Mutex<Ownership>,
}

#[derive(Debug)]
struct Ownership {
    partitions: u64,
    /// Since when this member owns nothing; `None` while it owns a partition.
    unowned_since: Option<Instant>,
    /// Time without partitions before `unowned_since`.
    unowned_before: Duration,
}

impl Default for GroupMetrics {
    fn default() -> Self {
        GroupMetrics {
            rebalances: AtomicU64::new(0),
            assigned: AtomicU64::new(0),
            revoked: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            deleted_unread: AtomicU64::new(0),
            // A member owns nothing until its first assignment: joining counts.
            owned: Mutex::new(Ownership {
                partitions: 0,
                unowned_since: Some(Instant::now()),
                unowned_before: Duration::ZERO,
            }),
        }
    }
}

/// The counters at one moment, as the status JSON shows them under `kafka`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GroupStatus {
    /// Rebalances this member completed (each ends with an assignment, empty or not).
    pub rebalances: u64,
    /// Partitions this member owns now.
    pub partitions_owned: u64,
    /// Partitions assigned to this member, over its life.
    pub partitions_assigned: u64,
    /// Partitions taken from this member (given up in a rebalance or lost), over its life.
    pub partitions_revoked: u64,
    /// Times the assignment was lost (session timed out, or `max_poll_interval_ms` passed):
    /// its partitions went to others without a drain.
    pub assignments_lost: u64,
    /// Seconds this member owned no partition: while joining, and while the group moved
    /// everything away from it.
    pub unowned_seconds: f64,
    /// Times the pipeline took nothing for long enough that the partitions were paused
    /// (a stalled sink); a pipeline merely slower than Kafka never pauses them.
    pub backpressure_pauses: u64,
    /// Times a partition's position had been deleted from the topic (retention) before this
    /// member read it, so it moved on to where `offset_reset` says: records lost to the pipeline.
    pub resets_past_deleted_records: u64,
}

impl GroupMetrics {
    fn ownership(&self) -> std::sync::MutexGuard<'_, Ownership> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A rebalance assigned `count` more partitions.
    pub fn assigned(&self, count: usize) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        self.assigned.fetch_add(count as u64, Ordering::Relaxed);
        self.change(count as i64);
    }

    /// A rebalance took `count` partitions away; `lost` when they were not given up but lost.
    pub fn revoked(&self, count: usize, lost: bool) {
        self.revoked.fetch_add(count as u64, Ordering::Relaxed);
        if lost {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
        self.change(-(count as i64));
    }

    /// The partitions were paused because the pipeline stopped taking records.
    pub fn paused(&self) {
        self.pauses.fetch_add(1, Ordering::Relaxed);
    }

    /// An interval commit failed (not one a rebalance made moot).
    pub fn commit_failed(&self) {
        self.commit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Interval commits that failed, over the member's life.
    pub fn commit_failures(&self) -> u64 {
        self.commit_failures.load(Ordering::Relaxed)
    }

    /// A partition's position had been deleted (retention) before it was read, and librdkafka
    /// moved it on to where `offset_reset` says.
    pub fn reset_past_deleted(&self) {
        self.deleted_unread.fetch_add(1, Ordering::Relaxed);
    }

    fn change(&self, delta: i64) {
        let mut owned = self.ownership();
        let now = owned.partitions.saturating_add_signed(delta);
        match (owned.partitions, now) {
            (0, n) if n > 0 => {
                if let Some(since) = owned.unowned_since.take() {
                    owned.unowned_before += since.elapsed();
                }
            }
            (p, 0) if p > 0 => owned.unowned_since = Some(Instant::now()),
            _ => {}
        }
        owned.partitions = now;
    }

    /// The counters now.
    pub fn status(&self) -> GroupStatus {
        let owned = self.ownership();
        let unowned =
            owned.unowned_before + owned.unowned_since.map_or(Duration::ZERO, |s| s.elapsed());
        GroupStatus {
            rebalances: self.rebalances.load(Ordering::Relaxed),
            partitions_owned: owned.partitions,
            partitions_assigned: self.assigned.load(Ordering::Relaxed),
            partitions_revoked: self.revoked.load(Ordering::Relaxed),
            assignments_lost: self.lost.load(Ordering::Relaxed),
            unowned_seconds: unowned.as_secs_f64(),
            backpressure_pauses: self.pauses.load(Ordering::Relaxed),
            resets_past_deleted_records: self.deleted_unread.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_and_time_without_partitions_follow_the_rebalances() {
        let metrics = GroupMetrics::default();
        assert_eq!(metrics.status().partitions_owned, 0);
        metrics.assigned(3);
        let owning = metrics.status();
        assert_eq!(owning.partitions_owned, 3);
        assert_eq!(owning.rebalances, 1);
        // Owning partitions, the unowned time stands still.
        assert_eq!(metrics.status().unowned_seconds, owning.unowned_seconds);
        metrics.revoked(1, false);
        metrics.assigned(0);
        metrics.revoked(2, true);
        let status = metrics.status();
        assert_eq!(
            (
                status.partitions_owned,
                status.rebalances,
                status.partitions_assigned,
                status.partitions_revoked,
                status.assignments_lost
            ),
            (0, 2, 3, 3, 1)
        );
        assert!(status.unowned_seconds >= owning.unowned_seconds);
    }
}
