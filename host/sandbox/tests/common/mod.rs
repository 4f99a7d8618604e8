//! Shared setup: a sandbox host in a temp directory using this crate's jail
//! helper binary, and a spec resembling the `base` template.

#![allow(dead_code)]

use std::sync::Arc;

use crownest_sandbox::{Cell, Limits, Mount, Network, SandboxConfig, SandboxHost, SpawnSpec};
use tokio::io::AsyncReadExt;

pub struct Env {
    pub host: Arc<SandboxHost>,
    pub root: tempfile::TempDir,
}

impl Drop for Env {
    /// Destroy whatever a test left behind (a panicking test never reaches
    /// its own `destroy`), so no tmpfs mount or cgroup outlives it.
    fn drop(&mut self) {
        self.host.close_standbys();
        for id in self.host.list_cells("test") {
            if let Ok(cell) = self.host.open_cell("test", &id) {
                let _ = cell.destroy();
            }
        }
        // A destroyed cell's directory is removed by a background thread;
        // removing the temp dir alongside it races it and fails (silently,
        // leaving `/tmp/crownest-sbx-*` behind). Let the removals finish.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let cells = self.host.cells_root().to_path_buf();
        while std::time::Instant::now() < deadline && graveyards(&cells) > 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Cell directories under `cells` still being removed.
fn graveyards(cells: &std::path::Path) -> usize {
    let entries = |d: &std::path::Path| std::fs::read_dir(d).into_iter().flatten().flatten();
    entries(cells)
        .flat_map(|owner| entries(&owner.path()).collect::<Vec<_>>())
        .filter(|e| e.file_name().to_string_lossy().contains(".deleted-"))
        .count()
}

pub fn env() -> Env {
    env_with(|_| {})
}

/// A host with the defaults as changed by `adjust`.
pub fn env_with(adjust: impl FnOnce(&mut SandboxConfig)) -> Env {
    let root = tempfile::Builder::new().prefix("crownest-sbx-").tempdir_in("/tmp").unwrap();
    let mut cfg = SandboxConfig::defaults(env!("CARGO_BIN_EXE_crownest-sandbox-jail").into());
    cfg.root = root.path().join("cells");
    adjust(&mut cfg);
    Env { host: SandboxHost::new(cfg).unwrap(), root }
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn limits() -> Limits {
    Limits {
        memory_bytes: Some(256 << 20),
        pids: Some(64),
        cpu_millicores: Some(1000),
        disk_bytes: Some(64 << 20),
        open_files: Some(256),
    }
}

pub fn spec(cmd: &str) -> SpawnSpec {
    let mut mounts = vec![Mount::RoBind { source: "/usr".into(), target: "/usr".into(), optional: false }];
    for (t, l) in [("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64")] {
        mounts.push(Mount::Symlink { target: t.into(), link: l.into() });
    }
    mounts.extend([
        Mount::RoBind { source: "/etc/ld.so.cache".into(), target: "/etc/ld.so.cache".into(), optional: true },
        Mount::Proc { target: "/proc".into() },
        Mount::Dev { target: "/dev".into() },
        Mount::Tmpfs { target: "/tmp".into(), size_bytes: 16 << 20 },
        Mount::Workspace { target: "/workspace".into() },
        Mount::File { target: "/etc/passwd".into(), contents: "sandbox:x:1000:1000::/workspace:/bin/sh\n".into() },
    ]);
    SpawnSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("HOME".into(), "/workspace".into())],
        cwd: "/workspace".into(),
        mounts,
        network: Network::None,
        hostname: "sandbox".into(),
        open_files: None,
    }
}

/// Run `cmd` in `cell`: (exit status, stdout, stderr).
pub async fn run(cell: &Cell, cmd: &str) -> (crownest_sandbox::Outcome, String, String) {
    run_spec(cell, &spec(cmd)).await
}

pub async fn run_spec(cell: &Cell, spec: &SpawnSpec) -> (crownest_sandbox::Outcome, String, String) {
    run_with_stdin(cell, spec, b"").await
}

/// Run `spec` in `cell` with `input` on its stdin.
pub async fn run_with_stdin(
    cell: &Cell,
    spec: &SpawnSpec,
    input: &[u8],
) -> (crownest_sandbox::Outcome, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = cell.spawn(spec).unwrap();
    if !input.is_empty() {
        s.stdin.write_all(input).await.unwrap();
    }
    drop(s.stdin);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (a, b) = tokio::join!(s.stdout.read_to_end(&mut out), s.stderr.read_to_end(&mut err));
    a.unwrap();
    b.unwrap();
    let o = s.tree.wait().await;
    (o, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
}
