//! The sandbox host: what this machine can enforce, detected once at
//! start-up, and the factory for cells.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cell::{Cell, CellError, CellRecord};
use crate::cgroup::{self, Layout};
use crate::limits::Limits;
use crate::uids::UidLeases;
use crate::warm::WarmPool;
use crate::warm::status::{self, PoolStatus};

/// Where things are.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Directory shared by every installation on the host: each keeps its
    /// cells in `<root>/<installation>/<owner>/<cell>`. It must be
    /// traversable by the sandbox uids (mode 0711 is applied), so it lives
    /// outside the private data directory (default
    /// `/var/lib/crownest-sandboxes` as root).
    pub root: PathBuf,
    /// The installation these sandboxes belong to (made at its first start
    /// and kept in its data directory). Cells, cgroups and standbys are
    /// namespaced by it: a host only ever lists, reaps or destroys its own
    /// installation's.
    pub installation: String,
    /// The host-wide uid lease table ([`crate::uids`]), shared by every
    /// installation on the host (default `/run/crownest/uid-leases`).
    pub uid_lease_dir: PathBuf,
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
            installation: "local".into(),
            uid_lease_dir: PathBuf::from(DEFAULT_UID_LEASE_DIR),
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

/// The default host-wide uid lease table: `/run` is emptied at boot, when
/// no sandbox is alive.
pub const DEFAULT_UID_LEASE_DIR: &str = "/run/crownest/uid-leases";

/// The sandbox mechanisms of this host, for one installation.
pub struct SandboxHost {
    pub(crate) cfg: SandboxConfig,
    /// `<root>/<installation>`: this installation's cells, by owner.
    cells_root: PathBuf,
    pub(crate) layout: Layout,
    pub(crate) is_root: bool,
    report: HostReport,
    /// Host uids, leased host-wide (only when root: otherwise sandboxes
    /// run as the server's own user).
    uids: Option<UidLeases>,
    pub(crate) warm: WarmPool,
}

/// Whether `id` can name an installation (it becomes a directory and a
/// cgroup name).
pub fn valid_installation_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 40 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn bwrap_version(bwrap: &Path) -> Option<String> {
    let out = std::process::Command::new(bwrap).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("bubblewrap ").to_string())
}

impl SandboxHost {
    /// Detect what this host can do and prepare the installation's cells
    /// directory. Touches no existing cell: reaping is [`Self::reap_standbys`],
    /// for the one process that serves the installation.
    pub fn new(cfg: SandboxConfig) -> Result<Arc<SandboxHost>, String> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !valid_installation_id(&cfg.installation) {
            return Err(format!("installation id `{}` must be 1 to 40 characters of [a-zA-Z0-9_-]", cfg.installation));
        }
        if cfg.uid_count == 0 || cfg.uid_base.checked_add(cfg.uid_count - 1).is_none() {
            return Err(format!(
                "sandbox.uid_base {} + sandbox.uid_count {} passes the largest uid (4294967295)",
                cfg.uid_base, cfg.uid_count
            ));
        }
        let cells_root = cfg.root.join(&cfg.installation);
        for dir in [&cfg.root, &cells_root] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(dir)
                .map_err(|e| format!("cannot create the sandbox directory {}: {e}", dir.display()))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711));
        }
        let is_root = rustix::process::geteuid().is_root();
        let layout = if is_root {
            cgroup::detect(&cfg.cgroup_mount, &cfg.installation)
        } else {
            Layout { unavailable: Some("not running as root: cgroups cannot be created".into()), ..Layout::default() }
        };
        let uids = if is_root {
            Some(
                UidLeases::open(&cfg.uid_lease_dir, cfg.uid_base, cfg.uid_count)
                    .map_err(|e| format!("cannot open the uid lease table {}: {e}", cfg.uid_lease_dir.display()))?,
            )
        } else {
            None
        };
        let bwrap = bwrap_version(&cfg.bwrap);
        let report = Self::build_report(&layout, is_root, bwrap.as_deref());
        let status_file = (cfg.warm_standby > 0).then(|| status::path(&cells_root));
        let warm = WarmPool::new(cfg.warm_standby, status_file);
        Ok(Arc::new(SandboxHost { cfg, cells_root, layout, is_root, report, uids, warm }))
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
            add(
                "uid",
                true,
                "a separate unprivileged host uid per sandbox, leased host-wide across installations".into(),
            );
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

    /// This installation's cells directory (`<root>/<installation>`).
    pub fn cells_root(&self) -> &Path {
        &self.cells_root
    }

    /// Where this installation's sandbox cgroups are made, per hierarchy.
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        self.layout.parents()
    }

    /// The host-wide uid lease table, when sandboxes get uids of their own.
    pub fn uid_leases(&self) -> Option<&UidLeases> {
        self.uids.as_ref()
    }

    pub(crate) fn owner_dir(&self, owner: &str) -> PathBuf {
        self.cells_root.join(owner)
    }

    /// Every cell record of this installation.
    pub fn records(&self) -> Vec<CellRecord> {
        let mut out = Vec::new();
        let Ok(owners) = std::fs::read_dir(&self.cells_root) else { return out };
        for owner in owners.flatten() {
            let Ok(cells) = std::fs::read_dir(owner.path()) else { continue };
            for cell in cells.flatten() {
                if cell.file_type().is_ok_and(|t| t.is_symlink()) {
                    continue;
                }
                if let Ok(rec) = CellRecord::read(&cell.path()) {
                    out.push(rec);
                }
            }
        }
        out
    }

    /// At the start of the process that serves this installation: the
    /// standbys of its previous process died with it, so destroy their
    /// cells, and drop id links left dangling by a crash mid-adoption.
    /// Only this installation's cells are looked at.
    pub fn reap_standbys(self: &Arc<Self>) {
        let Ok(owners) = std::fs::read_dir(&self.cells_root) else { return };
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

    /// This process's standby pool.
    pub fn standby_status(&self) -> PoolStatus {
        self.warm.status()
    }

    /// The standby pool of the live process serving this installation, as
    /// it last wrote it (`None` when no server keeps one).
    pub fn served_standby_status(&self) -> Option<PoolStatus> {
        PoolStatus::read_live(&status::path(&self.cells_root))
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

    /// Lease a host uid no live sandbox on this host holds, for the new
    /// cell in `cell_dir`.
    pub(crate) fn allocate_uid(&self, id: &str, cell_dir: &Path) -> Result<u32, CellError> {
        let leases = self.uids.as_ref().ok_or_else(|| CellError::Unavailable("no uid lease table".into()))?;
        leases.allocate(id, cell_dir).map_err(|e| CellError::Unavailable(format!("cannot lease a host uid: {e}")))
    }

    /// A re-opened cell holds its uid (its lease may predate the table).
    pub(crate) fn claim_uid(&self, uid: u32, cell_dir: &Path) {
        if let Some(leases) = &self.uids
            && let Ok(false) = leases.claim(uid, cell_dir)
        {
            tracing::warn!(uid, cell = %cell_dir.display(), "another live sandbox holds this cell's host uid");
        }
    }

    pub(crate) fn release_uid(&self, uid: u32, cell_dir: &Path) {
        if let Some(leases) = &self.uids
            && let Err(e) = leases.release(uid, cell_dir)
        {
            tracing::warn!(uid, "cannot release a host uid lease: {e}");
        }
    }
}
