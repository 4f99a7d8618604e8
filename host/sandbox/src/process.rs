//! A running sandbox process tree: wait, signal, kill, and its outcome.
//!
//! The tree lives in the cell's cgroup and in bubblewrap's pid namespace, so
//! a kill reaches everything, including daemons that double-forked or called
//! `setsid`: `cgroup.kill` (or the v1 freezer) where cgroups are available,
//! and in any case the death of the namespace's init, which makes the kernel
//! kill every process left in the namespace.

use std::sync::Arc;
use std::time::Duration;

use tokio::process::Child;
use tokio::sync::{Notify, watch};

use crate::cgroup::Cgroup;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(u8),
    Signaled(u8),
}

/// The final state of a process tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: ExitStatus,
    pub oom_killed: bool,
}

/// A started process tree.
pub struct ProcessTree {
    id: String,
    outer_pid: Option<u32>,
    cgroup: Option<Cgroup>,
    outcome: watch::Receiver<Option<Outcome>>,
    /// Asks the waiter task (which owns the child) to SIGKILL bubblewrap;
    /// going through the owner avoids signalling a recycled pid.
    kill: Arc<Notify>,
}

/// bubblewrap reports a command killed by signal N as exit code 128+N; we
/// report it as that signal (a command that itself exits with 129-192 is
/// indistinguishable and reads as signaled).
fn decode(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) if (129..=192).contains(&c) => ExitStatus::Signaled((c - 128) as u8),
        (Some(c), _) => ExitStatus::Exited(c as u8),
        (None, Some(s)) => ExitStatus::Signaled(s as u8),
        (None, None) => ExitStatus::Signaled(9),
    }
}

impl ProcessTree {
    pub(crate) fn start(id: String, mut child: Child, cgroup: Option<Cgroup>) -> ProcessTree {
        let outer_pid = child.id();
        let (tx, rx) = watch::channel(None);
        let cg = cgroup.clone();
        let kill = Arc::new(Notify::new());
        let kill_rx = kill.clone();
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    s = child.wait() => break s,
                    _ = kill_rx.notified() => { let _ = child.start_kill(); }
                }
            };
            // The namespace goes with its init; make sure nothing else in
            // the cgroup outlives the main process. Usually nothing is left
            // alive by now: one look, here; waiting is for the blocking pool.
            let oom = cg.as_ref().is_some_and(Cgroup::oom_killed);
            if let Some(cg) = cg
                && !cg.kill_all_live(Duration::ZERO)
            {
                let _ = tokio::task::spawn_blocking(move || cg.kill_all_live(Duration::from_secs(5))).await;
            }
            let status = match status {
                Ok(s) => decode(s),
                Err(_) => ExitStatus::Signaled(9),
            };
            let _ = tx.send(Some(Outcome { status, oom_killed: oom }));
        });
        ProcessTree { id, outer_pid, cgroup, outcome: rx, kill }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The outcome, if the tree has ended.
    pub fn try_wait(&self) -> Option<Outcome> {
        *self.outcome.borrow()
    }

    /// Wait until the tree has ended.
    pub async fn wait(&self) -> Outcome {
        self.ended().await
    }

    /// A future of the tree's outcome that does not borrow the tree (for a
    /// task that watches a process it does not own).
    pub fn ended(&self) -> impl std::future::Future<Output = Outcome> + Send + use<> {
        let mut rx = self.outcome.clone();
        async move {
            loop {
                if let Some(o) = *rx.borrow_and_update() {
                    return o;
                }
                if rx.changed().await.is_err() {
                    return rx.borrow().unwrap_or(Outcome { status: ExitStatus::Signaled(9), oom_killed: false });
                }
            }
        }
    }

    /// The pids of bubblewrap itself (outer process and namespace init),
    /// which must not receive forwarded signals: killing the init would
    /// SIGKILL the whole tree and skip its grace period.
    fn bwrap_pids(&self) -> Vec<i32> {
        let Some(outer) = self.outer_pid else { return Vec::new() };
        let mut pids = vec![outer as i32];
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")) {
            pids.extend(children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
        pids
    }

    /// Send `signal` to every process of the command's tree.
    pub fn signal_tree(&self, signal: i32) {
        if self.try_wait().is_some() {
            return;
        }
        match &self.cgroup {
            Some(cg) => {
                let skip = self.bwrap_pids();
                for pid in cg.pids() {
                    if !skip.contains(&pid) {
                        // SAFETY: kill(2) on a pid read from the sandbox's cgroup.
                        unsafe { libc::kill(pid, signal) };
                    }
                }
            }
            None if signal == libc::SIGKILL => self.kill_tree(),
            None => {
                // Without a cgroup, reach the command through the init's children.
                for init in self.bwrap_pids().into_iter().skip(1) {
                    if let Ok(children) = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")) {
                        for pid in children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                            // SAFETY: kill(2) on a child of the sandbox's init.
                            unsafe { libc::kill(pid, signal) };
                        }
                    }
                }
            }
        }
    }

    /// SIGKILL every process of the tree. Idempotent; returns at once (the
    /// outcome follows when the kernel has reaped the tree).
    pub fn kill_tree(&self) {
        if let Some(cg) = &self.cgroup {
            cg.kill_all(Duration::from_millis(0));
        }
        self.kill.notify_one();
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL everything. Returns the outcome.
    pub async fn terminate(&self, grace: Duration) -> Outcome {
        self.signal_tree(libc::SIGTERM);
        if let Ok(o) = tokio::time::timeout(grace, self.wait()).await {
            return o;
        }
        self.kill_tree();
        self.wait().await
    }
}
