//! Progress of long work (benchmarks, plugin builds, first compilations of a component) for
//! whoever watches. The library only says what advanced; the CLI installs a [`Reporter`] that
//! draws a bar on a terminal and prints plain lines otherwise. Without one (a library user, a
//! test, `weir run` logging to a collector) progress costs nothing and prints nothing.

use std::sync::OnceLock;

/// Shows tasks as they advance.
pub trait Reporter: Send + Sync {
    /// A task named `label` of `total` steps of `unit` (`None`: unknown, a spinner).
    fn start(&self, label: &str, total: Option<u64>, unit: &'static str) -> Box<dyn Task>;
}

/// One long piece of work being shown.
pub trait Task: Send + Sync {
    /// `steps` more are done; `message` says what the last one was.
    fn advance(&self, steps: u64, message: &str);
    /// A line of output produced meanwhile (a compiler's), printed without breaking the bar.
    fn println(&self, line: &str);
    /// The work ended; `summary` says how.
    fn finish(&self, summary: &str);
}

static REPORTER: OnceLock<Box<dyn Reporter>> = OnceLock::new();

/// Installs the process's reporter; `false` if one was installed already.
pub fn install(reporter: Box<dyn Reporter>) -> bool {
    REPORTER.set(reporter).is_ok()
}

/// Starts showing a task, if a reporter is installed.
pub fn start(label: &str, total: Option<u64>, unit: &'static str) -> Box<dyn Task> {
    match REPORTER.get() {
        Some(reporter) => reporter.start(label, total, unit),
        None => Box::new(Unwatched),
    }
}

/// Whether a reporter is installed (someone watches).
pub fn watched() -> bool {
    REPORTER.get().is_some()
}

struct Unwatched;

impl Task for Unwatched {
    fn advance(&self, _: u64, _: &str) {}
    fn println(&self, line: &str) {
        eprintln!("{line}");
    }
    fn finish(&self, _: &str) {}
}
