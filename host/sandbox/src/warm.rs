//! Standby cells: sandboxes created and started ahead of time, so that a
//! new sandbox's first command does not wait for bubblewrap to build its
//! namespaces (~5–7 ms of a short run).
//!
//! A standby is a complete cell (workspace, cgroup, uid, record) whose
//! bubblewrap is already running with the mounts, network and limits of a
//! spawn seen before, and whose first process is a shell waiting on its
//! stdin: `read -r _ && . /.crownest/exec.sh`. Claiming it writes
//! `exec.sh` (change to the requested directory, set exactly the requested
//! environment, `exec` the requested argv) into a host directory that is
//! bind-mounted read-only at `/.crownest`, then writes one newline to the
//! shell's stdin. The command then runs as it would have cold: same
//! namespaces, seccomp filter, cgroup, uid and rlimits, same pid, same
//! stdio pipes; the only difference a command can see is the read-only
//! `/.crownest` directory.
//!
//! Shapes are learned: the first cold spawn in a fresh cell records the
//! spec (minus argv, environment and directory) for the cell's owner and
//! limits, and the pool keeps `warm_standby` standbys of it. A new cell
//! with the same owner and limits adopts a standby under its own id (a
//! symlink from the id to the standby's directory; nothing a running
//! bubblewrap has resolved is renamed). A spawn whose spec does not match
//! the standby's falls back to a cold spawn after the standby is gone.
//! Standbys die with the server (`--die-with-parent`); their cells are
//! destroyed at the next start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cell::{Cell, Spawned};
use crate::host::SandboxHost;
use crate::limits::Limits;
use crate::spec::{Mount, SpawnSpec};

/// Where the claim script is mounted inside a standby sandbox.
pub(crate) const START_DIR: &str = "/.crownest";
/// The standby's first process.
const WAITER: &str = "read -r _ && . /.crownest/exec.sh";
/// Shapes remembered at most (the oldest is dropped, with its standbys).
const MAX_SHAPES: usize = 8;

/// A started standby process and the shape it was started for.
pub(crate) struct Standby {
    pub spawned: Spawned,
    pub key: String,
}

impl Standby {
    /// Kill this unclaimed standby and wait until it is gone: its reaper
    /// drains the cgroup, so a cold spawn in the same cell must come after.
    pub(crate) fn retire(self) {
        self.spawned.tree.kill_tree();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.spawned.tree.try_wait().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(250));
        }
    }
}

/// What must match between a standby and a spawn: everything bubblewrap
/// sets up before the first process starts.
pub(crate) fn shape_key(spec: &SpawnSpec) -> String {
    serde_json::to_string(&(&spec.mounts, spec.network, &spec.hostname, spec.open_files)).unwrap_or_default()
}

/// The spec a standby is started with: the learned shape, an empty
/// environment, `/` as directory, the claim directory mounted, and the
/// waiting shell as the process.
pub(crate) fn standby_spec(shape: &SpawnSpec, start_dir: &std::path::Path) -> SpawnSpec {
    let mut mounts = shape.mounts.clone();
    mounts.push(Mount::RoBind {
        source: start_dir.display().to_string(),
        target: START_DIR.to_string(),
        optional: false,
    });
    SpawnSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), WAITER.into()],
        env: Vec::new(),
        cwd: "/".into(),
        mounts,
        network: shape.network,
        hostname: shape.hostname.clone(),
        open_files: shape.open_files,
    }
}

fn is_shell_name(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c.is_ascii_alphanumeric())
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The claim script for `spec`, or `None` when a shell cannot reproduce
/// the cold spawn exactly (then the spawn goes cold).
pub(crate) fn claim_script(spec: &SpawnSpec) -> Option<String> {
    let argv0 = spec.argv.first()?;
    if argv0.starts_with('-') || spec.env.iter().any(|(k, _)| !is_shell_name(k)) {
        return None;
    }
    // dash exports PWD and OLDPWD once it has changed directory; bubblewrap
    // sets neither, so they go unless the spec sets them itself.
    let mut s = format!("cd {} || exit 127\nunset OLDPWD PWD\n", quote(&spec.cwd));
    for (k, v) in &spec.env {
        s.push_str(&format!("export {}\n", quote(&format!("{k}={v}"))));
    }
    s.push_str("exec");
    for a in &spec.argv {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s.push('\n');
    Some(s)
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    owner: String,
    limits: String,
}

struct Shape {
    spec: SpawnSpec,
    limits: Limits,
    ready: Vec<Cell>,
    filling: usize,
    used: Instant,
    /// A standby of this shape died before it was claimed: stop making them.
    broken: bool,
}

/// The standby cells of one sandbox host.
pub(crate) struct WarmPool {
    per_shape: usize,
    shapes: Mutex<HashMap<PoolKey, Shape>>,
    /// Set at shutdown: no more standbys are made or kept.
    closed: std::sync::atomic::AtomicBool,
}

fn key(owner: &str, limits: &Limits) -> PoolKey {
    PoolKey { owner: owner.to_string(), limits: serde_json::to_string(limits).unwrap_or_default() }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn standby_id() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    format!("warm-{}-{t}-{n}", std::process::id())
}

impl WarmPool {
    pub(crate) fn new(per_shape: usize) -> WarmPool {
        WarmPool { per_shape, shapes: Mutex::new(HashMap::new()), closed: Default::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Shape>> {
        self.shapes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ready standby for `owner` and `limits`, if there is one.
    pub(crate) fn take(&self, owner: &str, limits: &Limits) -> Option<Cell> {
        let k = key(owner, limits);
        let (cell, dead) = {
            let mut shapes = self.lock();
            let shape = shapes.get_mut(&k)?;
            shape.used = Instant::now();
            let mut dead = Vec::new();
            let mut found = None;
            while let Some(c) = shape.ready.pop() {
                if c.standby_alive() {
                    found = Some(c);
                    break;
                }
                shape.broken = true;
                dead.push(c);
            }
            (found, dead)
        };
        for c in dead {
            tracing::warn!(
                sandbox_id = c.id(),
                "a standby sandbox died before it was used; no more standbys of its shape"
            );
            let _ = c.destroy();
        }
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
    pub(crate) fn learn(&self, host: &Arc<SandboxHost>, owner: &str, limits: &Limits, spec: &SpawnSpec) {
        if self.per_shape == 0 || self.closed.load(Ordering::Relaxed) || claim_script(spec).is_none() {
            return;
        }
        let k = key(owner, limits);
        let evicted = {
            let mut shapes = self.lock();
            let mut evicted = Vec::new();
            match shapes.get_mut(&k) {
                Some(s) if shape_key(&s.spec) == shape_key(spec) => s.used = Instant::now(),
                Some(s) => {
                    // The latest shape wins: standbys of the old one go.
                    s.spec = spec.clone();
                    s.broken = false;
                    evicted.append(&mut s.ready);
                }
                None => {
                    if shapes.len() >= MAX_SHAPES {
                        if let Some(oldest) = shapes.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| k.clone()) {
                            if let Some(mut s) = shapes.remove(&oldest) {
                                evicted.append(&mut s.ready);
                            }
                        }
                    }
                    shapes.insert(
                        k.clone(),
                        Shape {
                            spec: spec.clone(),
                            limits: *limits,
                            ready: Vec::new(),
                            filling: 0,
                            used: Instant::now(),
                            broken: false,
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

    /// Start standbys until the shape has `per_shape` ready or filling.
    fn refill(&self, host: &Arc<SandboxHost>, k: PoolKey) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        loop {
            let (spec, limits) = {
                let mut shapes = self.lock();
                let Some(s) = shapes.get_mut(&k) else { return };
                if self.closed.load(Ordering::Relaxed) || s.broken || s.ready.len() + s.filling >= self.per_shape {
                    return;
                }
                s.filling += 1;
                (s.spec.clone(), s.limits)
            };
            let (host, k) = (host.clone(), k.clone());
            rt.spawn_blocking(move || {
                let made = Cell::create_standby(host.clone(), &k.owner, &standby_id(), limits, &spec);
                let leftover = {
                    let mut shapes = host.warm.lock();
                    match (shapes.get_mut(&k), made) {
                        (Some(s), Ok(cell))
                            if shape_key(&s.spec) == shape_key(&spec) && !host.warm.closed.load(Ordering::Relaxed) =>
                        {
                            s.filling -= 1;
                            s.ready.push(cell);
                            None
                        }
                        (Some(s), made) => {
                            s.filling -= 1;
                            if let Err(e) = &made {
                                tracing::warn!("cannot prepare a standby sandbox: {e}");
                                s.broken = true;
                            }
                            made.ok()
                        }
                        (None, made) => made.ok(),
                    }
                };
                if let Some(c) = leftover {
                    let _ = c.destroy();
                }
            });
        }
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
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
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
    use crate::spec::Network;

    fn spec() -> SpawnSpec {
        SpawnSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), "echo 'hi' \"$X\"".into()],
            env: vec![("PATH".into(), "/usr/bin".into()), ("X".into(), "a'b\nc".into())],
            cwd: "/workspace".into(),
            mounts: vec![Mount::Workspace { target: "/workspace".into() }],
            network: Network::None,
            hostname: "sandbox".into(),
            open_files: Some(64),
        }
    }

    /// The script reproduces argv, environment and directory exactly, even
    /// with quotes and newlines, when run by dash as the standby runs it.
    #[test]
    fn the_claim_script_reproduces_the_spawn() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec();
        s.cwd = dir.path().display().to_string();
        s.argv = vec!["/usr/bin/env".into(), "-0".into()];
        let script = claim_script(&s).unwrap();
        let path = dir.path().join("exec.sh");
        std::fs::write(&path, script).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &format!("read -r _ && . {}", path.display())])
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"\n")?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let mut vars: Vec<&str> = text.split('\0').filter(|v| !v.is_empty()).collect();
        vars.sort();
        assert_eq!(vars, ["PATH=/usr/bin", "X=a'b\nc"]);
    }

    #[test]
    fn specs_a_shell_cannot_reproduce_go_cold() {
        let mut s = spec();
        s.env.push(("NOT-A-NAME".into(), "x".into()));
        assert!(claim_script(&s).is_none());
        let mut s = spec();
        s.argv = vec!["-x".into()];
        assert!(claim_script(&s).is_none());
        assert!(claim_script(&spec()).is_some());
    }

    #[test]
    fn the_shape_ignores_what_the_claim_sets() {
        let a = spec();
        let mut b = spec();
        b.argv = vec!["true".into()];
        b.env.clear();
        b.cwd = "/".into();
        assert_eq!(shape_key(&a), shape_key(&b));
        b.hostname = "other".into();
        assert_ne!(shape_key(&a), shape_key(&b));
    }
}
