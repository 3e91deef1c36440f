//! Printing a command's output to stdout without panicking when its reader goes away.
//! `println!` panics on a closed pipe, so `weir replay --dry-run | head` ended in a panic
//! message and status 101; [`outln!`] returns the error instead, and `main` ends a command
//! whose stdout was closed quietly, as `head`'s writers are expected to.

use std::io::Write;

/// Why a line could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum StdoutError {
    /// The reader closed the pipe: nobody is left to print for.
    #[error("stdout was closed by its reader")]
    Closed,
    /// Any other write error (a full disk under a redirected stdout).
    #[error("cannot write to stdout: {0}")]
    Write(#[source] std::io::Error),
}

/// Writes `args` and a newline to stdout.
pub fn line(args: std::fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => StdoutError::Closed,
            _ => StdoutError::Write(e),
        })
}

/// Whether `error` comes from a stdout its reader closed.
pub fn was_closed(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| matches!(cause.downcast_ref(), Some(StdoutError::Closed)))
}

/// `println!` that returns a [`StdoutError`] instead of panicking.
macro_rules! outln {
    () => {
        $crate::cli::stdout::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::stdout::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_stdout_is_told_from_other_errors_anywhere_in_the_chain() {
        let closed = anyhow::Error::new(StdoutError::Closed).context("printing the entries");
        assert!(was_closed(&closed));
        let full = anyhow::Error::new(StdoutError::Write(std::io::Error::from_raw_os_error(28)));
        assert!(!was_closed(&full));
        // A broken pipe elsewhere (a socket) is not a closed stdout.
        let socket = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(!was_closed(&socket));
    }
}
