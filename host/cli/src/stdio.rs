//! Writing to stdout and stderr without panicking.
//!
//! `println!` panics when stdout is a pipe whose reader has gone
//! (`crownest workspace-runs list --json | head -1`): Rust ignores SIGPIPE,
//! so the write fails with EPIPE instead of ending the process. Everything
//! the CLI prints goes through here instead, and a closed pipe ends the
//! process quietly the way it ends `cat`: by SIGPIPE (status 141 in a
//! shell). The client executable also restores SIGPIPE's default action
//! at start ([`restore_sigpipe`]); the host executable keeps ignoring it
//! (its sockets and the pipes to sandboxes must never kill the server) and
//! relies on this module alone.

use std::fmt;
use std::io::{self, Write};

/// Print a line to stdout (`format!` arguments).
#[macro_export]
macro_rules! outln {
    () => { $crate::stdio::out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdio::out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Print a line to stderr (`format!` arguments).
#[macro_export]
macro_rules! errln {
    () => { $crate::stdio::err(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdio::err(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Write formatted text to stdout.
pub fn out(args: fmt::Arguments<'_>) {
    let mut lock = io::stdout().lock();
    checked_out(lock.write_fmt(args));
}

/// Write formatted text to stderr.
pub fn err(args: fmt::Arguments<'_>) {
    let mut lock = io::stderr().lock();
    checked_err(lock.write_fmt(args));
}

/// Write bytes to stdout and flush them (streamed command output).
pub fn out_bytes(out: &mut impl Write, bytes: &[u8]) {
    checked_out(out.write_all(bytes).and_then(|()| out.flush()));
}

/// Write bytes to stderr (streamed command output).
pub fn err_bytes(bytes: &[u8]) {
    checked_err(io::stderr().lock().write_all(bytes));
}

/// The outcome of a write to stdout: a closed pipe ends the process
/// quietly; any other failure (a full disk behind a redirection) ends it
/// with a message and status 1, since the output is incomplete.
pub fn checked_out(result: io::Result<()>) {
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => closed_pipe(),
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// The outcome of a write to stderr: a closed pipe ends the process
/// quietly; other failures are dropped (there is nowhere left to say so).
pub fn checked_err(result: io::Result<()>) {
    if let Err(e) = result
        && e.kind() == io::ErrorKind::BrokenPipe
    {
        closed_pipe()
    }
}

/// The reader of our output has gone: end as a process killed by SIGPIPE
/// does (the status a shell shows as 141), without a word.
pub fn closed_pipe() -> ! {
    // SAFETY: restoring a signal's default action and raising it in our
    // own process; nothing else is touched.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Only reached if the signal is blocked: the same status by hand.
    std::process::exit(128 + libc::SIGPIPE)
}

/// Let SIGPIPE end the process again (Rust's runtime ignores it): for the
/// client executable, which writes only to its own stdout and stderr and to
/// sockets (which never raise it), so any write into a closed pipe ends it
/// like `cat`, including output of a library that does not go through here.
pub fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition in our own process, before any
    // other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
