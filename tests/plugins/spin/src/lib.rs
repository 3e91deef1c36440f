//! A hostile test plugin: loops forever on any record whose value contains `spin`, so tests can
//! prove that the host's deadline interrupts it. A record whose JSON value has `"slow_ms": N`
//! keeps it busy for N ms of the monotonic clock and then passes, so tests can prove that a slow
//! but fine plugin is not cut short; that needs the `clock` grant (with the frozen clock it never
//! ends, like `spin`). A record whose value contains `sleep` sleeps for a century in the host
//! (WASI's monotonic clock), so tests can prove a deadline also ends a plugin blocked outside
//! its own code. Other records pass through. With `spin_in_init = true` in its config, `init`
//! itself loops forever, and with `sleep_in_init = true` it sleeps, so tests can prove that
//! instantiation has a deadline too. A record whose value contains `entropy` reads random bytes
//! through wasi-libc's `getentropy`, whose import result the host places with `cabi_realloc` and
//! C's `free` releases; the plugin opts into the SDK's arena, so tests can prove such results do
//! not land in it.

use std::time::{Duration, Instant};

use weir_plugin::{Config, Error, Plugin, Record};

/// Spins on demand.
pub struct Spinner;

impl Plugin for Spinner {
    const ARENA: bool = true;

    fn init(config: &Config) -> Result<Self, Error> {
        if config.get("spin_in_init") == Some(&serde_json::Value::Bool(true)) {
            spin_forever();
        }
        if config.get("sleep_in_init") == Some(&serde_json::Value::Bool(true)) {
            sleep_a_century();
        }
        Ok(Spinner)
    }

    fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
        if record.value.windows(4).any(|w| w == b"spin") {
            spin_forever();
        }
        if record.value.windows(5).any(|w| w == b"sleep") {
            sleep_a_century();
        }
        if record.value.windows(7).any(|w| w == b"entropy") {
            return Ok(vec![Record::new(format!("{:?}", random_bytes()))]);
        }
        if let Some(millis) = slow_ms(&record.value) {
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(millis) {
                std::hint::black_box(started);
            }
        }
        Ok(vec![record])
    }
}

/// 16 bytes from wasi-libc's `getentropy`, asked for in many small reads while Rust
/// allocations go to the arena.
#[cfg(target_arch = "wasm32")]
fn random_bytes() -> Vec<u8> {
    unsafe extern "C" {
        fn getentropy(buffer: *mut u8, length: usize) -> i32;
    }
    let mut bytes = vec![0u8; 16];
    for _ in 0..64 {
        let kept: Vec<u8> = bytes.clone();
        // SAFETY: the buffer holds `length` bytes.
        let status = unsafe { getentropy(bytes.as_mut_ptr(), bytes.len()) };
        assert_eq!(status, 0, "getentropy failed");
        std::hint::black_box(kept);
    }
    bytes
}

/// Natively there is no arena to test.
#[cfg(not(target_arch = "wasm32"))]
fn random_bytes() -> Vec<u8> {
    vec![0; 16]
}

/// Loops until the host interrupts it.
fn spin_forever() -> ! {
    let mut counter = 0u64;
    // black_box keeps the optimiser from proving the loop useless and removing it.
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

/// Blocks in the host, not in guest code, for a hundred years.
fn sleep_a_century() {
    std::thread::sleep(Duration::from_secs(100 * 365 * 24 * 3600));
}

/// The `slow_ms` field of a JSON object value, if any.
fn slow_ms(value: &[u8]) -> Option<u64> {
    if !value.windows(7).any(|w| w == b"slow_ms") {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(value)
        .ok()?
        .get("slow_ms")?
        .as_u64()
}

#[cfg(target_arch = "wasm32")]
weir_plugin::export_plugin!(Spinner);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_records_pass_through() {
        let record = Record::new("calm");
        assert_eq!(Spinner.transform(record.clone()).unwrap(), vec![record]);
    }

    #[test]
    fn a_slow_record_passes_after_its_time() {
        let record = Record::new(r#"{"n":1,"slow_ms":2}"#);
        assert_eq!(slow_ms(&record.value), Some(2));
        assert_eq!(Spinner.transform(record.clone()).unwrap(), vec![record]);
        assert_eq!(slow_ms(br#"{"slow_ms":"x"}"#), None);
        assert_eq!(slow_ms(br#"{"n":1}"#), None);
    }
}
