//! The CPU time of the calling thread, so that a plugin's cost can be counted as CPU spent in
//! its calls rather than as wall time, which on a busy machine also holds the time other
//! threads had the core.

use std::time::Duration;

/// CPU time (user + system) the calling thread has used so far, from
/// `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`; zero where the clock cannot be read, so a
/// difference of two readings is then zero, never a wrong value.
pub fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec, and CLOCK_THREAD_CPUTIME_ID needs nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_threads_work_and_not_its_sleep() {
        let before = thread_cpu();
        // Work until the clock has moved by at least a millisecond (a condition, not a time
        // limit: on a loaded machine this simply takes longer).
        let mut spins = 0u64;
        while thread_cpu().saturating_sub(before) < Duration::from_millis(1) {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        let worked = thread_cpu();
        assert!(worked > before);
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu().saturating_sub(worked);
        assert!(
            slept < Duration::from_millis(25),
            "50 ms asleep counted as {slept:?} of CPU"
        );
        // Another thread's work is not this thread's.
        let mine = thread_cpu();
        std::thread::spawn(|| {
            let start = thread_cpu();
            while thread_cpu().saturating_sub(start) < Duration::from_millis(20) {}
        })
        .join()
        .unwrap();
        assert!(thread_cpu().saturating_sub(mine) < Duration::from_millis(20));
    }
}
