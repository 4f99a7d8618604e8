//! The standby pool: learned shapes, their ready standbys, and how a shape
//! recovers when its standbys die or cannot be started.
//!
//! Every ready standby has a watcher task waiting for its process tree to
//! end. A standby that ends while it is still in the pool died unused: the
//! watcher takes it out, logs what ended it, destroys its cell and starts a
//! replacement after a back-off (0.5 s, doubling with each failure in a row
//! of that shape, at most a minute). A standby that is adopted leaves the
//! pool first, so its end (the command's end) is not a failure; the next
//! adoption resets the back-off.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::status::{Failure, PoolStatus, ShapeStatus};
use super::{claim_script, shape_key};
use crate::cell::Cell;
use crate::host::SandboxHost;
use crate::limits::Limits;
use crate::process::{ExitStatus, Outcome};
use crate::spec::SpawnSpec;

/// Shapes remembered at most (the oldest is dropped, with its standbys).
const MAX_SHAPES: usize = 8;
/// Back-off after the first failure in a row, and its ceiling.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// The label a runtime provider puts the template name in (shown only).
const TEMPLATE_LABEL: &str = "crownest.template";

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    owner: String,
    limits: String,
}

struct Shape {
    spec: SpawnSpec,
    limits: Limits,
    template: Option<String>,
    ready: Vec<Cell>,
    filling: usize,
    used: Instant,
    failures_total: u64,
    failures_in_a_row: u32,
    last_failure: Option<Failure>,
    /// No standby is started before this (backing off after failures).
    retry_at: Option<Instant>,
    /// A task is already waiting for `retry_at`.
    retry_scheduled: bool,
}

impl Shape {
    /// Count a failure and set the back-off; returns the delay.
    fn fail(&mut self, reason: String) -> Duration {
        self.failures_total += 1;
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        self.last_failure = Some(Failure { at_ms: now_ms(), reason });
        let delay = FIRST_RETRY.saturating_mul(1 << (self.failures_in_a_row - 1).min(16)).min(MAX_RETRY);
        self.retry_at = Some(Instant::now() + delay);
        delay
    }
}

/// The standby cells of one sandbox host.
pub(crate) struct WarmPool {
    per_shape: usize,
    shapes: Mutex<HashMap<PoolKey, Shape>>,
    /// Set at shutdown: no more standbys are made or kept.
    closed: AtomicBool,
    /// Where the pool's state is written for `crownest doctor`.
    status_file: Option<PathBuf>,
}

fn key(owner: &str, limits: &Limits) -> PoolKey {
    PoolKey { owner: owner.to_string(), limits: serde_json::to_string(limits).unwrap_or_default() }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn standby_id() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    format!("warm-{}-{t}-{n}", std::process::id())
}

fn signal_name(n: u8) -> &'static str {
    match i32::from(n) {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

/// What ended a standby, for people: the outcome, and whether something
/// outside this server removed its cell.
fn describe_death(outcome: &Outcome, cell_present: bool) -> String {
    let mut s = if outcome.oom_killed {
        "killed by the kernel's OOM killer (the shape's memory limit)".to_string()
    } else {
        match outcome.status {
            ExitStatus::Signaled(n) => format!("killed by signal {n} ({}) from outside this server", signal_name(n)),
            ExitStatus::Exited(c) => format!("its waiting shell exited with code {c}"),
        }
    };
    if !cell_present {
        s.push_str("; its cell directory had been removed by another process");
    }
    s
}

impl WarmPool {
    pub(crate) fn new(per_shape: usize, status_file: Option<PathBuf>) -> WarmPool {
        WarmPool { per_shape, shapes: Mutex::new(HashMap::new()), closed: Default::default(), status_file }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PoolKey, Shape>> {
        self.shapes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool as `crownest doctor` shows it.
    pub(crate) fn status(&self) -> PoolStatus {
        let now = Instant::now();
        let shapes = self
            .lock()
            .iter()
            .map(|(k, s)| ShapeStatus {
                owner: k.owner.clone(),
                template: s.template.clone(),
                limits: s.limits,
                ready: s.ready.len(),
                starting: s.filling,
                failures_total: s.failures_total,
                failures_in_a_row: s.failures_in_a_row,
                last_failure: s.last_failure.clone(),
                retry_in_ms: s.retry_at.filter(|t| *t > now).map(|t| (t - now).as_millis() as u64),
            })
            .collect();
        PoolStatus { pid: std::process::id(), updated_at_ms: now_ms(), per_shape: self.per_shape, shapes }
    }

    fn publish(&self) {
        if let Some(path) = &self.status_file {
            self.status().write(path);
        }
    }

    /// A ready standby for `owner` and `limits`, if there is one.
    pub(crate) fn take(&self, host: &Arc<SandboxHost>, owner: &str, limits: &Limits) -> Option<Cell> {
        let k = key(owner, limits);
        let (cell, dead) = {
            let mut shapes = self.lock();
            let shape = shapes.get_mut(&k)?;
            shape.used = Instant::now();
            let mut dead = Vec::new();
            let mut found = None;
            while let Some(c) = shape.ready.pop() {
                match c.standby_outcome() {
                    None => {
                        found = Some(c);
                        break;
                    }
                    // Its watcher has not run yet: count the death here.
                    Some(o) => dead.push((describe_death(&o, c.dir_exists()), c)),
                }
            }
            for (reason, _) in &dead {
                shape.fail(reason.clone());
            }
            if found.is_some() {
                shape.failures_in_a_row = 0;
                shape.retry_at = None;
            }
            (found, dead)
        };
        let had_dead = !dead.is_empty();
        for (reason, c) in dead {
            tracing::warn!(standby = c.id(), owner, "a standby sandbox died before it was used: {reason}");
            let _ = c.destroy();
        }
        if had_dead {
            self.refill(host, k);
        }
        self.publish();
        cell
    }

    /// A cell of `owner` with `limits` is gone: make up for the standby it
    /// may have taken. Refilling here rather than when the standby is
    /// taken keeps the work of starting the next bubblewrap off the
    /// critical path of the run that took it.
    pub(crate) fn replenish(&self, host: &Arc<SandboxHost>, owner: &str, limits: &Limits) {
        if self.per_shape > 0 {
            self.refill(host, key(owner, limits));
        }
    }

    /// Remember the shape of a cold first spawn and keep standbys of it.
    pub(crate) fn learn(
        &self,
        host: &Arc<SandboxHost>,
        owner: &str,
        limits: &Limits,
        labels: &[(String, String)],
        spec: &SpawnSpec,
    ) {
        if self.per_shape == 0 || self.closed.load(Ordering::Relaxed) || claim_script(spec).is_none() {
            return;
        }
        let k = key(owner, limits);
        let template = labels.iter().find(|(n, _)| n == TEMPLATE_LABEL).map(|(_, v)| v.clone());
        let evicted = {
            let mut shapes = self.lock();
            let mut evicted = Vec::new();
            match shapes.get_mut(&k) {
                Some(s) if shape_key(&s.spec) == shape_key(spec) => s.used = Instant::now(),
                Some(s) => {
                    // The latest shape wins: standbys of the old one go.
                    s.spec = spec.clone();
                    s.template = template;
                    s.failures_in_a_row = 0;
                    s.retry_at = None;
                    evicted.append(&mut s.ready);
                }
                None => {
                    if shapes.len() >= MAX_SHAPES
                        && let Some(oldest) = shapes.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| k.clone())
                        && let Some(mut s) = shapes.remove(&oldest)
                    {
                        evicted.append(&mut s.ready);
                    }
                    shapes.insert(
                        k.clone(),
                        Shape {
                            spec: spec.clone(),
                            limits: *limits,
                            template,
                            ready: Vec::new(),
                            filling: 0,
                            used: Instant::now(),
                            failures_total: 0,
                            failures_in_a_row: 0,
                            last_failure: None,
                            retry_at: None,
                            retry_scheduled: false,
                        },
                    );
                }
            }
            evicted
        };
        for c in evicted {
            let _ = c.destroy();
        }
        self.refill(host, k);
    }

    /// Start standbys until the shape has `per_shape` ready or starting,
    /// unless it is backing off (then once the back-off has passed).
    fn refill(&self, host: &Arc<SandboxHost>, k: PoolKey) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        loop {
            let (spec, limits) = {
                let mut shapes = self.lock();
                let Some(s) = shapes.get_mut(&k) else { return };
                if self.closed.load(Ordering::Relaxed) || s.ready.len() + s.filling >= self.per_shape {
                    return;
                }
                if let Some(at) = s.retry_at.filter(|at| *at > Instant::now()) {
                    if !s.retry_scheduled {
                        s.retry_scheduled = true;
                        let (host, k) = (host.clone(), k.clone());
                        rt.spawn(async move {
                            tokio::time::sleep_until(at.into()).await;
                            if let Some(s) = host.warm.lock().get_mut(&k) {
                                s.retry_scheduled = false;
                            }
                            host.warm.refill(&host, k);
                        });
                    }
                    return;
                }
                s.filling += 1;
                (s.spec.clone(), s.limits)
            };
            let (host, k) = (host.clone(), k.clone());
            rt.spawn_blocking(move || {
                let made = Cell::create_standby(host.clone(), &k.owner, &standby_id(), limits, &spec);
                host.warm.started(&host, k, &spec, made);
            });
        }
    }

    /// A standby start finished: keep it and watch it, or count the failure.
    fn started(&self, host: &Arc<SandboxHost>, k: PoolKey, spec: &SpawnSpec, made: Result<Cell, crate::CellError>) {
        let (leftover, retry) = {
            let mut shapes = self.lock();
            match (shapes.get_mut(&k), made) {
                (Some(s), Ok(cell))
                    if shape_key(&s.spec) == shape_key(spec) && !self.closed.load(Ordering::Relaxed) =>
                {
                    s.filling -= 1;
                    if let Some(ended) = cell.standby_ended() {
                        let (host, k, name) = (host.clone(), k.clone(), cell.id().to_string());
                        tokio::spawn(async move {
                            let outcome = ended.await;
                            host.warm.ended(&host, k, &name, outcome);
                        });
                    }
                    s.ready.push(cell);
                    (None, false)
                }
                (Some(s), made) => {
                    s.filling -= 1;
                    match made {
                        Ok(cell) => (Some(cell), false),
                        Err(e) => {
                            let delay = s.fail(format!("could not be started: {e}"));
                            tracing::warn!(
                                owner = k.owner,
                                retry_in_ms = delay.as_millis() as u64,
                                "cannot prepare a standby sandbox: {e}"
                            );
                            (None, true)
                        }
                    }
                }
                (None, made) => (made.ok(), false),
            }
        };
        if let Some(c) = leftover {
            let _ = c.destroy();
        }
        if retry {
            self.refill(host, k);
        }
        self.publish();
    }

    /// The process of standby `name` ended. If the standby is still in the
    /// pool it died unused: replace it after the back-off.
    fn ended(&self, host: &Arc<SandboxHost>, k: PoolKey, name: &str, outcome: Outcome) {
        let cell = {
            let mut shapes = self.lock();
            let Some(s) = shapes.get_mut(&k) else { return };
            let Some(i) = s.ready.iter().position(|c| c.id() == name) else { return };
            let cell = s.ready.swap_remove(i);
            let reason = describe_death(&outcome, cell.dir_exists());
            let delay = s.fail(reason.clone());
            tracing::warn!(
                standby = name,
                owner = k.owner,
                template = s.template.as_deref(),
                failures_in_a_row = s.failures_in_a_row,
                retry_in_ms = delay.as_millis() as u64,
                "a standby sandbox died before it was used: {reason}; replacing it after the back-off"
            );
            cell
        };
        let host = host.clone();
        tokio::task::spawn_blocking(move || {
            let _ = cell.destroy();
            host.warm.refill(&host, k);
            host.warm.publish();
        });
    }

    /// Destroy every standby and make no more (server shutdown): waits up
    /// to `within` for standbys being made.
    pub(crate) fn close(&self, within: Duration) {
        self.closed.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + within;
        loop {
            let (cells, filling): (Vec<Cell>, usize) = {
                let mut shapes = self.lock();
                let filling = shapes.values().map(|s| s.filling).sum();
                (shapes.values_mut().flat_map(|s| s.ready.drain(..)).collect(), filling)
            };
            for c in cells {
                let _ = c.destroy();
            }
            if filling == 0 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(path) = &self.status_file {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Standbys ready to be adopted.
    pub(crate) fn ready(&self) -> usize {
        self.lock().values().map(|s| s.ready.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_are_described_with_what_ended_them() {
        let killed = Outcome { status: ExitStatus::Signaled(9), oom_killed: false };
        assert_eq!(describe_death(&killed, true), "killed by signal 9 (SIGKILL) from outside this server");
        let reaped = describe_death(&killed, false);
        assert!(reaped.ends_with("its cell directory had been removed by another process"), "{reaped}");
        let oom = Outcome { status: ExitStatus::Signaled(9), oom_killed: true };
        assert!(describe_death(&oom, true).contains("OOM"));
        let exited = Outcome { status: ExitStatus::Exited(1), oom_killed: false };
        assert_eq!(describe_death(&exited, true), "its waiting shell exited with code 1");
    }

    #[test]
    fn the_back_off_doubles_and_is_capped() {
        let mut s = Shape {
            spec: SpawnSpec {
                argv: vec![],
                env: vec![],
                cwd: "/".into(),
                mounts: vec![],
                network: crate::spec::Network::None,
                hostname: "h".into(),
                open_files: None,
            },
            limits: Limits::default(),
            template: None,
            ready: vec![],
            filling: 0,
            used: Instant::now(),
            failures_total: 0,
            failures_in_a_row: 0,
            last_failure: None,
            retry_at: None,
            retry_scheduled: false,
        };
        let delays: Vec<Duration> = (0..10).map(|i| s.fail(format!("death {i}"))).collect();
        assert_eq!(delays[0], Duration::from_millis(500));
        assert_eq!(delays[1], Duration::from_secs(1));
        assert_eq!(delays[2], Duration::from_secs(2));
        assert_eq!(delays[9], MAX_RETRY);
        assert_eq!((s.failures_total, s.failures_in_a_row), (10, 10));
        assert_eq!(s.last_failure.unwrap().reason, "death 9");
    }
}
