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
//! destroyed at the next start of the same installation.
//!
//! A standby that dies before it is used (killed from outside, out of
//! memory, its cell removed) is noticed at once, logged with what ended it,
//! and replaced after a back-off that doubles with each consecutive failure
//! of its shape (see [`pool`]); the pool's state is written to a status
//! file that `crownest doctor` reads ([`status`]).

mod pool;
pub mod status;

use std::time::{Duration, Instant};

pub(crate) use pool::WarmPool;

use crate::cell::Spawned;
use crate::spec::{Mount, SpawnSpec};

/// Where the claim script is mounted inside a standby sandbox.
pub(crate) const START_DIR: &str = "/.crownest";
/// The standby's first process.
const WAITER: &str = "read -r _ && . /.crownest/exec.sh";

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
