//! Logging and metric counters through the host: the only way a plugin reports what it does.

use crate::bindings::weir::plugin::host;

pub use host::Level;

/// Writes a line to the host's log, tagged with this plugin's name and version.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// Adds `delta` to this plugin's counter `name`.
pub fn counter_add(name: &str, delta: u64) {
    host::counter_add(name, delta);
}
