//! The shape of a latency run's tail: whether its slow records came in one stall or in many,
//! and when. A p99 over the goal can be one long stop of a store or many short ones, and the
//! run's first records may wait for what a steady stream never does; the quantiles alone
//! cannot tell these apart.

use std::time::Duration;

/// Slow records whose creation times lie within this of each other belong to one stall.
pub const STALL_GAP: Duration = Duration::from_millis(200);

/// One record's trip: when it was created (milliseconds since the Unix epoch, the source's
/// record timestamp) and how long after that its sink acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trip {
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Creation to acknowledgement.
    pub latency: Duration,
}

/// A run of slow records created close together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// When its first slow record was created, milliseconds since the Unix epoch: to find the
    /// stall in the stores' logs.
    pub created_ms: i64,
    /// How many of its records were slow.
    pub records: usize,
    /// Its slowest record's latency.
    pub worst: Duration,
}

/// The slow records of a run, grouped into stalls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    /// What counted as slow.
    pub threshold: Duration,
    /// All records of the run.
    pub records: usize,
    /// When the run's first record was created, milliseconds since the Unix epoch.
    pub first_created_ms: i64,
    /// The stalls, in the order they began.
    pub stalls: Vec<Stall>,
}

impl Tail {
    /// Groups the records of `trips` slower than `threshold` into stalls: slow records whose
    /// creation times are within [`STALL_GAP`] of the previous slow one join its stall.
    pub fn of(trips: &[Trip], threshold: Duration) -> Tail {
        let first_created = trips.iter().map(|t| t.created_ms).min().unwrap_or_default();
        let mut slow: Vec<&Trip> = trips.iter().filter(|t| t.latency > threshold).collect();
        slow.sort_by_key(|t| t.created_ms);
        let gap = STALL_GAP.as_millis() as i64;
        let mut stalls: Vec<Stall> = Vec::new();
        let mut last_created = i64::MIN;
        for trip in slow {
            match stalls.last_mut() {
                Some(stall) if trip.created_ms - last_created <= gap => {
                    stall.records += 1;
                    stall.worst = stall.worst.max(trip.latency);
                }
                _ => stalls.push(Stall {
                    created_ms: trip.created_ms,
                    records: 1,
                    worst: trip.latency,
                }),
            }
            last_created = trip.created_ms;
        }
        Tail {
            threshold,
            records: trips.len(),
            first_created_ms: first_created,
            stalls,
        }
    }

    /// How long after the run's first record `stall` began.
    pub fn starts_after(&self, stall: &Stall) -> Duration {
        Duration::from_millis((stall.created_ms - self.first_created_ms).max(0) as u64)
    }

    /// How many records were slow.
    pub fn slow_records(&self) -> usize {
        self.stalls.iter().map(|s| s.records).sum()
    }

    /// How many slow records were created within `window` of the run's first record.
    pub fn slow_within(&self, window: Duration) -> usize {
        self.stalls
            .iter()
            .filter(|s| self.starts_after(s) <= window)
            .map(|s| s.records)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trip(created_ms: i64, latency_ms: u64) -> Trip {
        Trip {
            created_ms,
            latency: Duration::from_millis(latency_ms),
        }
    }

    #[test]
    fn slow_records_close_together_make_one_stall_and_distant_ones_another() {
        let trips = [
            trip(1_000, 40), // the run's first record, slow: a stall at the start
            trip(1_005, 35),
            trip(1_010, 2),
            trip(1_150, 20), // within 200 ms of the last slow one: the same stall
            trip(2_000, 3),
            trip(5_000, 16), // a second stall, 4 s in
            trip(5_100, 90),
            trip(5_101, 15), // not over the threshold
        ];
        let tail = Tail::of(&trips, Duration::from_millis(15));
        assert_eq!(tail.records, 8);
        assert_eq!(
            tail.stalls,
            vec![
                Stall {
                    created_ms: 1_000,
                    records: 3,
                    worst: Duration::from_millis(40),
                },
                Stall {
                    created_ms: 5_000,
                    records: 2,
                    worst: Duration::from_millis(90),
                },
            ]
        );
        assert_eq!(tail.starts_after(&tail.stalls[0]), Duration::ZERO);
        assert_eq!(
            tail.starts_after(&tail.stalls[1]),
            Duration::from_millis(4_000)
        );
        assert_eq!(tail.slow_records(), 5);
        assert_eq!(tail.slow_within(Duration::from_secs(1)), 3);
    }

    #[test]
    fn records_out_of_order_are_grouped_by_creation_time() {
        // Acknowledged out of creation order (two partitions): the stall is still one.
        let trips = [
            trip(3_300, 30),
            trip(3_000, 1),
            trip(3_100, 25),
            trip(3_250, 50),
        ];
        let tail = Tail::of(&trips, Duration::from_millis(15));
        assert_eq!(tail.stalls.len(), 1);
        assert_eq!(tail.stalls[0].records, 3);
        assert_eq!(
            tail.starts_after(&tail.stalls[0]),
            Duration::from_millis(100)
        );
        assert_eq!(tail.stalls[0].created_ms, 3_100);
        assert_eq!(tail.stalls[0].worst, Duration::from_millis(50));
    }

    #[test]
    fn a_run_without_slow_records_has_no_stall() {
        let tail = Tail::of(&[trip(1, 3), trip(2, 4)], Duration::from_millis(15));
        assert!(tail.stalls.is_empty());
        assert_eq!(Tail::of(&[], Duration::from_millis(15)).records, 0);
    }
}
