//! The CLI's exit codes, and how an error becomes one.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the API refused the request (its code and message are printed), or another failure |
//! | 2 | wrong usage: an argument or setting the CLI refuses before sending anything |
//! | 69 | the server could not be reached (`run-archive`/`logs`: not within `--server-wait`) |
//! | 75 | `run-archive` left the run running (Ctrl-C on a terminal, not confirmed) |
//! | 124, 125, 130 | `run-archive`: timed out, could not run the command, canceled |
//!
//! `run-archive` otherwise exits with the command's own code, so these
//! can also be the command's; its stderr says which.

use std::fmt;
use std::process::ExitCode;

use crownest_client::ClientError;

use crate::display::safe;
use crate::errln;

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
/// `EX_UNAVAILABLE` of sysexits.h.
pub const UNREACHABLE: u8 = 69;
/// `EX_TEMPFAIL` of sysexits.h: the outcome is not known yet.
pub const LEFT_RUNNING: u8 = 75;
pub const TIMED_OUT: u8 = 124;
pub const NOT_RUN: u8 = 125;
pub const CANCELED: u8 = 130;

/// Wrong usage: an argument or `CROWNEST_*` setting the CLI refuses before
/// sending a request (exit 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A [`UsageError`] as an `anyhow::Error`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// Print a failed API call and return its exit code: the API's code and
/// message (1), or why the server could not be reached (69).
pub fn client_error(e: &ClientError) -> ExitCode {
    match e {
        ClientError::Api { code, message, request_id, .. } => {
            let request = request_id.as_ref().map(|r| format!(" (request {})", safe(r))).unwrap_or_default();
            errln!("error: {}: {}{request}", safe(code), safe(message));
            ExitCode::from(FAILURE)
        }
        ClientError::Transport { url, message, refused } => {
            errln!("error: cannot reach CrowNest at {}: {}", safe(url), safe(message));
            if *refused {
                errln!(
                    "hint: nothing listens there. Start a server with `crownest serve`, or point CROWNEST_API_URL \
                     (or --data-dir) at the one you mean"
                );
            }
            ExitCode::from(UNREACHABLE)
        }
        ClientError::Other(m) => {
            errln!("error: {}", safe(m));
            ExitCode::from(FAILURE)
        }
    }
}

/// Print any error of a command and return its exit code.
pub fn error(e: &anyhow::Error) -> ExitCode {
    if let Some(c) = e.downcast_ref::<ClientError>() {
        return client_error(c);
    }
    let text = format!("{e:#}");
    if crate::logging::is_json() {
        tracing::error!(target: "crownest", "{text}");
    } else {
        errln!("error: {}", safe(&text));
    }
    ExitCode::from(if e.downcast_ref::<UsageError>().is_some() { USAGE } else { FAILURE })
}
