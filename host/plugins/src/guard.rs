//! Every plugin call goes through here: arm the call clock, run, and turn a
//! trap, a blown deadline or a refused memory growth into a clear
//! [`PluginError`] naming the plugin and what to do.

use std::fmt;

use crownest_core::{ErrorKind, FaultKind, PluginError};
use wasmtime::{Store, UpdateDeadline};

use crate::bindings::WitError;
use crate::state::PluginState;

/// Raised from the epoch callback when a call runs out of time.
#[derive(Debug)]
pub struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("call deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Make `store` check its call clock on every epoch tick.
pub fn install_deadline(store: &mut Store<PluginState>) {
    store.epoch_deadline_callback(|ctx| {
        if ctx.data().clock.expired() {
            return Err(wasmtime::Error::new(DeadlineExceeded));
        }
        Ok(UpdateDeadline::Yield(1))
    });
}

/// Run `fut` to completion with this thread's runtime duties handed to
/// another thread while it runs (`block_in_place`), so blocking calls
/// inside it (a plugin's filesystem calls in [`crate::state::FsMode::Inline`])
/// stall no other task. On a current-thread runtime it is simply awaited.
///
/// Everything `fut` waits for must be driven by other tasks: the calling
/// task itself is not polled meanwhile (a request body, read by the
/// connection task that runs the handler, must go through a task of its
/// own first).
pub async fn off_runtime<F: std::future::Future>(fut: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| h.block_on(fut)),
        _ => fut.await,
    }
}

/// Start the clock of a call.
pub fn arm(store: &mut Store<PluginState>) {
    store.data_mut().clock.start();
    store.set_epoch_deadline(1);
}

/// Stop the clock and classify a failure.
pub fn finish<T>(store: &mut Store<PluginState>, what: &str, result: wasmtime::Result<T>) -> Result<T, PluginError> {
    let state = store.data_mut();
    let expired = state.clock.expired();
    state.clock.stop();
    result.map_err(|e| classify(state, what, e, expired))
}

fn who(state: &PluginState) -> String {
    format!("plugin `{}` ({})", state.env.ident.name, state.env.ident.kind)
}

fn classify(state: &PluginState, what: &str, err: wasmtime::Error, expired: bool) -> PluginError {
    let who = who(state);
    let key = state.env.ident.kind.config_key();
    if expired || err.downcast_ref::<DeadlineExceeded>().is_some() {
        return PluginError::fault(
            FaultKind::Deadline,
            format!(
                "{who} exceeded its {} ms deadline in `{what}`; if it legitimately needs longer, raise \
                 `call_timeout_ms` under [plugins.{key}]",
                state.env.call_timeout.as_millis()
            ),
        );
    }
    if state.memory.refused {
        return PluginError::fault(
            FaultKind::MemoryCap,
            format!(
                "{who} exceeded its memory cap of {} MiB in `{what}`; if it legitimately needs more, raise \
                 `memory_limit_mib` under [plugins.{key}]",
                state.env.memory_limit / (1024 * 1024)
            ),
        );
    }
    let detail = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    let first_line = detail.lines().next().unwrap_or("").to_string();
    PluginError::fault(FaultKind::Trap, format!("{who} trapped in `{what}`: {first_line}; this is a bug in the plugin"))
}

/// A contract violation in a value the plugin returned.
pub fn malformed(store: &Store<PluginState>, what: &str, problem: impl fmt::Display) -> PluginError {
    PluginError::fault(
        FaultKind::Malformed,
        format!("{} returned a malformed value from `{what}`: {problem}", who(store.data())),
    )
}

/// Longest error message kept from a plugin.
const MAX_MESSAGE: usize = 2048;

/// A WIT error from the plugin as a core error, message length capped.
pub fn from_wit(e: WitError) -> PluginError {
    let (kind, mut message) = match e {
        WitError::Invalid(m) => (ErrorKind::Invalid, m),
        WitError::NotFound(m) => (ErrorKind::NotFound, m),
        WitError::Denied(m) => (ErrorKind::Denied, m),
        WitError::QuotaExceeded(m) => (ErrorKind::QuotaExceeded, m),
        WitError::Unavailable(m) => (ErrorKind::Unavailable, m),
        WitError::Internal(m) => (ErrorKind::Internal, m),
    };
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    PluginError::new(kind, message)
}

/// Whether `s` is a lowercase hex SHA-256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Run one export call under the plugin's deadline and memory cap.
pub async fn call<R>(
    store: &mut Store<PluginState>,
    what: &str,
    f: impl AsyncFnOnce(&mut Store<PluginState>) -> wasmtime::Result<R>,
) -> Result<R, PluginError> {
    arm(store);
    let started = std::time::Instant::now();
    let result = f(store).await;
    let result = finish(store, what, result);
    let ident = &store.data().env.ident;
    let fault = match &result {
        Err(e) => match e.kind {
            ErrorKind::Fault(kind) => Some(format!("{kind:?}").to_ascii_lowercase()),
            _ => None,
        },
        Ok(_) => None,
    };
    crownest_core::metrics::record::plugin_call(&ident.name, what, started.elapsed(), fault.as_deref());
    if result.is_err() && ident.kind == crownest_core::PluginKind::ArtifactStore {
        crownest_core::metrics::record::artifact_store_error(what);
    }
    result
}
