//! Following a run's events to the end, through server restarts and
//! signals.
//!
//! The event stream resumes after the last seq seen when the connection
//! drops; while the server cannot be reached it keeps trying for
//! `--server-wait` seconds (then exit 69). A server that comes back has
//! marked the run `failed` with `host_restarted`, which arrives as its
//! terminal event (exit 125).
//!
//! Signals (`run-archive` only): without a terminal (CI, an agent), SIGINT
//! or SIGTERM cancels the run and the CLI exits once it is canceled (130).
//! On a terminal, Ctrl-C asks first: a second Ctrl-C within
//! [`CONFIRM_WINDOW`] cancels; otherwise the CLI leaves the run running
//! and exits 75. SIGTERM always cancels; a signal after the cancel was
//! sent exits 130 at once, without waiting for the run to end.

use std::process::ExitCode;
use std::time::Duration;

use crownest_client::{Client, ClientError, Outage};
use reqwest::Method;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

use super::events::Renderer;
use crate::display::safe;
use crate::{errln, exit};

/// How long a first Ctrl-C on a terminal waits for a second one.
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(3);

pub struct Options {
    pub json: bool,
    pub server_wait: Duration,
    /// Watch SIGINT/SIGTERM (`Some(interactive)`), or leave them alone.
    pub signals: Option<bool>,
}

/// How following ended.
pub enum Followed {
    /// The run's terminal event came; what was rendered.
    Ended(Renderer),
    /// Ctrl-C on a terminal, not confirmed: the run keeps running.
    Left,
    /// A signal after the cancel was sent: not waiting for the run.
    Interrupted,
}

/// What a signal asks for.
enum Action {
    Ask,
    Cancel(&'static str),
    Leave,
    Quit,
}

/// SIGINT and SIGTERM, and what each one means now.
struct Signals {
    int: Signal,
    term: Signal,
    interactive: bool,
    asked_at: Option<Instant>,
    canceling: bool,
}

impl Signals {
    fn new(interactive: bool) -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            interactive,
            asked_at: None,
            canceling: false,
        })
    }

    /// The next thing a signal (or an unanswered question) asks for.
    /// Cancel-safe: only `recv` and a sleep are awaited.
    async fn next(&mut self) -> Action {
        let deadline = self.asked_at.map(|at| at + CONFIRM_WINDOW);
        tokio::select! {
            _ = self.int.recv() => {
                if self.canceling {
                    Action::Quit
                } else if !self.interactive {
                    Action::Cancel("interrupted")
                } else if self.asked_at.take().is_some() {
                    Action::Cancel("confirmed")
                } else {
                    self.asked_at = Some(Instant::now());
                    Action::Ask
                }
            }
            _ = self.term.recv() => if self.canceling { Action::Quit } else { Action::Cancel("terminated") },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                self.asked_at = None;
                Action::Leave
            }
        }
    }
}

/// Wait for signals only when there are any to wait for.
async fn next_action(signals: &mut Option<Signals>) -> Action {
    match signals {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Stream the events of `run_id` after `after` until its terminal event.
pub async fn follow(client: &Client, run_id: &str, after: u64, opts: Options) -> Result<Followed, ClientError> {
    let mut events = client.events(run_id, after).outage_wait(opts.server_wait).on_outage(|o| match o {
        Outage::Lost { error, wait } => errln!(
            "crownest: lost the server ({}); reconnecting for up to {} s (--server-wait)",
            safe(&error.to_string()),
            wait.as_secs()
        ),
        Outage::Back { after } => {
            errln!("crownest: reconnected after {:.1} s; resuming after the last event received", after.as_secs_f64())
        }
    });
    let mut signals = match opts.signals {
        Some(interactive) => {
            Some(Signals::new(interactive).map_err(|e| ClientError::Other(format!("cannot watch for Ctrl-C: {e}")))?)
        }
        None => None,
    };
    let mut r = Renderer::new(run_id, opts.json);
    let id = safe(run_id).into_owned();
    loop {
        tokio::select! {
            biased;
            action = next_action(&mut signals) => match action {
                Action::Ask => errln!(
                    "\ncrownest: cancel the run {id}? (it keeps running otherwise) Press Ctrl-C again within {} s to cancel it.",
                    CONFIRM_WINDOW.as_secs()
                ),
                Action::Cancel(why) => {
                    errln!("crownest: {why}: canceling run {id}");
                    if let Some(s) = signals.as_mut() {
                        s.canceling = true;
                    }
                    let path = format!("/v1/workspace-runs/{run_id}/cancel");
                    if let Err(e) = client.call(Method::POST, &path, None, None).await {
                        errln!("crownest: could not cancel run {id}: {}", safe(&e.to_string()));
                    }
                }
                Action::Leave => {
                    errln!(
                        "crownest: left run {id} running: `crownest workspace-runs logs {id} --after-seq {}` follows it, \
                         `crownest workspace-runs cancel {id}` cancels it",
                        events.last_seq()
                    );
                    return Ok(Followed::Left);
                }
                Action::Quit => {
                    errln!("crownest: not waiting for run {id} to end (its cancel was sent)");
                    return Ok(Followed::Interrupted);
                }
            },
            event = events.next() => match event? {
                Some(e) => r.event(&e),
                None => return Ok(Followed::Ended(r)),
            },
        }
    }
}

/// The exit code for a stream that failed: 69 with what to do when the
/// server stayed unreachable, else the error's own.
pub fn unreachable_or(e: &ClientError, run_id: &str) -> ExitCode {
    let code = exit::client_error(e);
    if e.is_unreachable() {
        let id = safe(run_id);
        errln!(
            "crownest: run {id} may still be running; once the server is back, \
             `crownest workspace-runs logs {id}` follows it and `crownest workspace-runs status {id}` shows it"
        );
    }
    code
}
