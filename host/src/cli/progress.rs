//! How long commands show their progress: an `indicatif` bar (or spinner, when the amount of
//! work is unknown) with counts and rate on a terminal, and plain lines when stderr is a file or
//! a pipe, where redrawn bars would only leave control characters in a log.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use weir::progress::{Reporter, Task};

/// Shortest time between two plain progress lines of one task.
const LINE_EVERY: Duration = Duration::from_secs(2);
/// A task of unknown size that counted nothing and ended sooner than this (a compiled-cache
/// hit) leaves no line.
const QUIET_BELOW: Duration = Duration::from_millis(500);

/// Installs the reporter for this process: bars on a terminal, plain lines otherwise. With
/// `terminal_only`, nothing is reported off a terminal (`weir run`, whose stderr carries logs a
/// collector may parse).
pub fn install(terminal_only: bool) {
    let terminal = std::io::stderr().is_terminal();
    if terminal || !terminal_only {
        weir::progress::install(Box::new(Stderr { terminal }));
    }
}

struct Stderr {
    terminal: bool,
}

impl Reporter for Stderr {
    fn start(&self, label: &str, total: Option<u64>, unit: &'static str) -> Box<dyn Task> {
        if self.terminal {
            Box::new(Bar::new(label, total, unit))
        } else {
            Box::new(Lines {
                label: label.to_owned(),
                total,
                unit,
                started: Instant::now(),
                state: Mutex::new((0, None)),
            })
        }
    }
}

struct Bar {
    bar: ProgressBar,
    unit: &'static str,
}

impl Bar {
    fn new(label: &str, total: Option<u64>, unit: &'static str) -> Self {
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} ({per_sec}, {elapsed})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {prefix} {pos} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_prefix(label.to_owned());
        bar.set_message(unit);
        bar.enable_steady_tick(Duration::from_millis(120));
        Bar { bar, unit }
    }
}

impl Task for Bar {
    fn advance(&self, steps: u64, message: &str) {
        self.bar.inc(steps);
        self.bar.set_message(if message.is_empty() {
            self.unit.to_owned()
        } else {
            format!("{} · {message}", self.unit)
        });
    }

    fn println(&self, line: &str) {
        self.bar.println(line);
    }

    fn finish(&self, summary: &str) {
        let elapsed = self.bar.elapsed();
        self.bar.finish_and_clear();
        // A quick spinner (a cache hit) leaves nothing behind; a real piece of work a line.
        if self.bar.length().is_some() || self.bar.position() > 0 || elapsed >= QUIET_BELOW {
            eprintln!(
                "{}: {summary} ({})",
                self.bar.prefix(),
                describe(self.bar.position(), self.unit, elapsed)
            );
        }
    }
}

/// Plain lines: one when a known amount of work starts, then at most one every
/// [`LINE_EVERY`] as it advances, and one at the end.
struct Lines {
    label: String,
    total: Option<u64>,
    unit: &'static str,
    started: Instant,
    /// Steps done, and when the last line was printed.
    state: Mutex<(u64, Option<Instant>)>,
}

impl Task for Lines {
    fn advance(&self, steps: u64, message: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += steps;
        let done = state.0;
        let due = state.1.is_none_or(|at| at.elapsed() >= LINE_EVERY);
        if due || Some(done) == self.total {
            state.1 = Some(Instant::now());
            let count = match self.total {
                Some(total) => format!("{done}/{total}"),
                None => done.to_string(),
            };
            let pace = pace(done, self.started.elapsed());
            let message = if message.is_empty() {
                String::new()
            } else {
                format!(" · {message}")
            };
            eprintln!("{}: {count} {} ({pace}){message}", self.label, self.unit);
        }
    }

    fn println(&self, line: &str) {
        eprintln!("{line}");
    }

    fn finish(&self, summary: &str) {
        let elapsed = self.started.elapsed();
        let done = self.state.lock().unwrap_or_else(|p| p.into_inner()).0;
        if self.total.is_none() && done == 0 && elapsed < QUIET_BELOW {
            return;
        }
        eprintln!(
            "{}: {summary} ({})",
            self.label,
            describe(done, self.unit, elapsed)
        );
    }
}

/// `12 crates in 3.4 s, 3.5/s`, or only the time when nothing was counted.
fn describe(done: u64, unit: &str, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if done == 0 || unit.is_empty() {
        format!("{seconds:.1} s")
    } else {
        format!("{done} {unit} in {seconds:.1} s, {}", pace(done, elapsed))
    }
}

/// How fast `done` steps went: `3.5/s`, or `43.1 s each` when a step takes longer than a
/// second (a rate of `0.0/s` says nothing).
fn pace(done: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let rate = done as f64 / seconds;
    if rate >= 1.0 || done == 0 {
        format!("{rate:.1}/s")
    } else {
        format!("{:.1} s each", seconds / done as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_step_is_told_as_seconds_each_and_a_fast_one_as_a_rate() {
        assert_eq!(pace(7, Duration::from_secs(2)), "3.5/s");
        assert_eq!(pace(3, Duration::from_secs_f64(129.3)), "43.1 s each");
        assert_eq!(
            describe(3, "batch sizes", Duration::from_secs_f64(129.3)),
            "3 batch sizes in 129.3 s, 43.1 s each"
        );
        assert_eq!(describe(0, "rows", Duration::from_secs(2)), "2.0 s");
    }
}
