//! The sandbox host: what this machine can enforce, detected once at
//! start-up, and the factory for cells.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::cell::{Cell, CellError, CellRecord};
use crate::cgroup::{self, Layout};
use crate::limits::Limits;
use crate::warm::WarmPool;

/// Where things are.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Directory holding one directory per cell. It must be traversable by
    /// the sandbox uids (mode 0711 is applied), so it lives outside the
    /// private data directory (default `/var/lib/crownest-sandboxes` as root).
    pub root: PathBuf,
    /// bubblewrap.
    pub bwrap: PathBuf,
    /// The executable that implements the jail helper (normally `crownest`
    /// itself, see `jail::run_if_invoked`).
    pub helper: PathBuf,
    /// Where cgroup hierarchies are mounted.
    pub cgroup_mount: PathBuf,
    /// First host uid for sandboxes (each cell gets its own).
    pub uid_base: u32,
    pub uid_count: u32,
    /// Standby sandboxes kept per learned shape (see [`crate::warm`]); 0
    /// turns them off.
    pub warm_standby: usize,
    /// Run every sandboxed process under `SCHED_BATCH`: it shares CPU
    /// fairly but never preempts another task when it wakes up, so the
    /// server stays responsive and a sandboxed pipeline does not switch
    /// processes at every pipe buffer. `false` leaves the normal policy
    /// (`SCHED_OTHER`), whose wake-up preemption suits latency-sensitive
    /// interactive work on a busy host.
    pub batch_scheduling: bool,
}

impl SandboxConfig {
    pub fn defaults(helper: PathBuf) -> SandboxConfig {
        SandboxConfig {
            root: PathBuf::from("/var/lib/crownest-sandboxes"),
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            helper,
            cgroup_mount: PathBuf::from("/sys/fs/cgroup"),
            uid_base: 2_000_000,
            uid_count: 65_536,
            warm_standby: 1,
            batch_scheduling: true,
        }
    }

    /// How sandboxed processes are scheduled, as `serve` and `doctor` say it.
    pub fn scheduling_note(&self) -> &'static str {
        if self.batch_scheduling {
            "SCHED_BATCH: sandboxed processes never preempt on wake-up (sandbox.scheduling)"
        } else {
            "SCHED_OTHER: sandboxed processes may preempt on wake-up (sandbox.scheduling = \"normal\")"
        }
    }
}

/// One mechanism or limit and whether it is really enforced here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcement {
    pub name: String,
    pub enforced: bool,
    pub detail: String,
}

/// What this host enforces, as `crownest doctor` prints it.
#[derive(Debug, Clone)]
pub struct HostReport {
    pub cgroup_mode: String,
    pub bwrap_version: String,
    pub enforcement: Vec<Enforcement>,
}

/// The sandbox mechanisms of this host.
pub struct SandboxHost {
    pub(crate) cfg: SandboxConfig,
    pub(crate) layout: Layout,
    pub(crate) is_root: bool,
    report: HostReport,
    pub(crate) uids: Mutex<HashSet<u32>>,
    pub(crate) warm: WarmPool,
}

fn bwrap_version(bwrap: &Path) -> Option<String> {
    let out = std::process::Command::new(bwrap).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("bubblewrap ").to_string())
}

impl SandboxHost {
    /// Detect what this host can do and prepare the cells directory.
    pub fn new(cfg: SandboxConfig) -> Result<Arc<SandboxHost>, String> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&cfg.root)
            .map_err(|e| format!("cannot create the sandbox directory {}: {e}", cfg.root.display()))?;
        let _ = std::fs::set_permissions(&cfg.root, std::fs::Permissions::from_mode(0o711));
        let is_root = rustix::process::geteuid().is_root();
        let layout = if is_root {
            cgroup::detect(&cfg.cgroup_mount)
        } else {
            Layout { unavailable: Some("not running as root: cgroups cannot be created".into()), ..Layout::default() }
        };
        let bwrap = bwrap_version(&cfg.bwrap);
        let report = Self::build_report(&layout, is_root, bwrap.as_deref());
        let warm = WarmPool::new(cfg.warm_standby);
        let host = SandboxHost { cfg, layout, is_root, report, uids: Mutex::new(HashSet::new()), warm };
        let used: HashSet<u32> = host.all_records().into_iter().map(|r| r.uid).collect();
        *host.uids.lock().unwrap() = used;
        let host = Arc::new(host);
        host.clear_standbys();
        Ok(host)
    }

    fn build_report(layout: &Layout, is_root: bool, bwrap: Option<&str>) -> HostReport {
        let mut e = Vec::new();
        let mut add =
            |name: &str, enforced: bool, detail: String| e.push(Enforcement { name: name.into(), enforced, detail });
        match bwrap {
            Some(v) => {
                add(
                    "namespaces",
                    true,
                    format!("bubblewrap {v}: user, mount, pid, ipc, uts, cgroup namespaces; read-only root"),
                );
                add(
                    "network",
                    true,
                    "private network namespace with loopback only, unless a template allows egress".into(),
                );
                add("seccomp", true, "deny-list BPF filter on every sandboxed process".into());
            }
            None => {
                add("namespaces", false, "bubblewrap not found: install the `bubblewrap` package".into());
                add("network", false, "needs bubblewrap".into());
                add("seccomp", false, "needs bubblewrap".into());
            }
        }
        let why = layout.unavailable.clone().unwrap_or_else(|| "controller not available".into());
        for limit in ["memory", "pids", "cpu"] {
            match (layout.mechanism(limit), limit == "pids" && is_root) {
                (Some(m), true) => add(limit, true, format!("{m}, plus RLIMIT_NPROC on the sandbox's own uid")),
                (Some(m), false) => add(limit, true, m),
                (None, true) => add(limit, true, format!("RLIMIT_NPROC on the sandbox's own uid only ({why})")),
                (None, false) => add(limit, false, why.clone()),
            }
        }
        add("kill-tree", true, layout.kill_mechanism());
        if is_root {
            add("disk", true, "size-limited tmpfs per workspace".into());
            add("uid", true, "a separate unprivileged host uid per sandbox".into());
        } else {
            add("disk", false, "mounting a size-limited tmpfs needs root".into());
            add("uid", false, "switching to a per-sandbox uid needs root; sandboxes run as the server's user".into());
        }
        add("open-files", true, "RLIMIT_NOFILE".into());
        HostReport {
            cgroup_mode: layout.mode().to_string(),
            bwrap_version: bwrap.unwrap_or("none").to_string(),
            enforcement: e,
        }
    }

    pub fn report(&self) -> &HostReport {
        &self.report
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    pub(crate) fn owner_dir(&self, owner: &str) -> PathBuf {
        self.cfg.root.join(owner)
    }

    fn all_records(&self) -> Vec<CellRecord> {
        let mut out = Vec::new();
        let Ok(owners) = std::fs::read_dir(&self.cfg.root) else { return out };
        for owner in owners.flatten() {
            let Ok(cells) = std::fs::read_dir(owner.path()) else { continue };
            for cell in cells.flatten() {
                if let Ok(rec) = CellRecord::read(&cell.path()) {
                    out.push(rec);
                }
            }
        }
        out
    }

    /// Standbys of a previous run of the server died with it: destroy their
    /// cells, and drop id links left dangling by a crash mid-adoption.
    fn clear_standbys(self: &Arc<Self>) {
        let Ok(owners) = std::fs::read_dir(&self.cfg.root) else { return };
        for owner in owners.flatten() {
            let Some(owner_name) = owner.file_name().to_str().map(str::to_string) else { continue };
            let Ok(cells) = std::fs::read_dir(owner.path()) else { continue };
            for entry in cells.flatten() {
                let path = entry.path();
                let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
                match CellRecord::read(&path) {
                    Ok(rec) if rec.standby && !is_link => {
                        if let Ok(cell) = Cell::open_any(self.clone(), &owner_name, &rec.id) {
                            let _ = cell.destroy();
                        }
                    }
                    Err(_) if is_link => {
                        let _ = std::fs::remove_file(&path);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Create a cell for `owner` (the plugin's namespace).
    pub fn create_cell(
        self: &Arc<Self>,
        owner: &str,
        id: &str,
        limits: Limits,
        labels: Vec<(String, String)>,
    ) -> Result<Cell, CellError> {
        Cell::create(self.clone(), owner, id, limits, labels)
    }

    /// Destroy the standby sandboxes and make no more (at shutdown; they
    /// would die with the server anyway, this also frees their workspaces
    /// and cgroups now).
    pub fn close_standbys(&self) {
        self.warm.close(std::time::Duration::from_secs(5));
    }

    /// Standby sandboxes ready to be adopted right now.
    pub fn standbys_ready(&self) -> usize {
        self.warm.ready()
    }

    /// Re-open an existing cell.
    pub fn open_cell(self: &Arc<Self>, owner: &str, id: &str) -> Result<Cell, CellError> {
        Cell::open(self.clone(), owner, id)
    }

    /// Ids of `owner`'s cells.
    pub fn list_cells(&self, owner: &str) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.owner_dir(owner))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| CellRecord::read(&e.path()).ok().map(|r| (e.file_name(), r)))
                    // Standbys are not sandboxes yet; an adopted standby's
                    // own directory is reached through its id.
                    .filter(|(name, r)| !r.standby && name.to_str() == Some(r.id.as_str()))
                    .map(|(_, r)| r.id)
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Which of `paths` exist on this host (templates use it to say whether
    /// they are usable).
    pub fn probe_paths(&self, paths: &[String]) -> Vec<bool> {
        paths.iter().map(|p| Path::new(p).exists()).collect()
    }

    /// Take a free host uid for a new cell.
    pub(crate) fn allocate_uid(&self, id: &str) -> u32 {
        let mut used = self.uids.lock().unwrap();
        let mut h: u32 = 2166136261;
        for b in id.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(16777619);
        }
        for i in 0..self.cfg.uid_count {
            let uid = self.cfg.uid_base + (h.wrapping_add(i) % self.cfg.uid_count);
            if used.insert(uid) {
                return uid;
            }
        }
        // Every uid in the range is taken: share one rather than fail.
        self.cfg.uid_base
    }

    pub(crate) fn release_uid(&self, uid: u32) {
        self.uids.lock().unwrap().remove(&uid);
    }
}
