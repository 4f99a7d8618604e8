//! A cell: the host side of one sandbox. A workspace (a size-limited tmpfs
//! owned by the cell's own unprivileged uid when we are root, a plain
//! directory otherwise), a cgroup, and a record on disk so a restarted
//! server can find and reap it.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use crate::bwrap::{self, SpecError};
use crate::cgroup::Cgroup;
use crate::export::{self, ExportError};
use crate::extract::{self, Budgets, ExtractError, ExtractOptions, Report};
use crate::host::SandboxHost;
use crate::jail::JailOptions;
use crate::limits::Limits;
use crate::paths;
use crate::process::ProcessTree;
use crate::spec::{Mount, SpawnSpec};
use crate::warm::{self, Standby};

/// Errors of cell operations, by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum CellError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// What is kept on disk about a cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellRecord {
    pub id: String,
    pub owner: String,
    /// Host uid and gid the sandbox runs as (the server's own when not root).
    pub uid: u32,
    pub gid: u32,
    pub limits: Limits,
    pub labels: Vec<(String, String)>,
    pub created_at_ms: u64,
    /// Whether the workspace is a tmpfs we mounted.
    pub tmpfs: bool,
    /// The name of the cell's directory and cgroups when it differs from
    /// `id`: a standby adopted under `id` (the id is a symlink to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir_name: Option<String>,
    /// An unclaimed standby (see [`crate::warm`]): not listed, destroyed
    /// at start-up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
}

impl CellRecord {
    pub(crate) fn read(cell_dir: &Path) -> std::io::Result<CellRecord> {
        let text = std::fs::read_to_string(cell_dir.join("cell.json"))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }
}

/// The handles of a freshly spawned process tree.
pub struct Spawned {
    pub tree: ProcessTree,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    pub stdin: ChildStdin,
}

/// One sandbox's host-side state.
pub struct Cell {
    host: Arc<SandboxHost>,
    rec: CellRecord,
    /// The cell's real directory (not the id symlink of an adopted standby).
    dir: PathBuf,
    cgroup: Option<Cgroup>,
    /// The waiting first process of a standby, until claimed.
    standby: Mutex<Option<Standby>>,
    /// No process has been spawned in this cell by this server yet.
    fresh: AtomicBool,
}

fn validate_id(id: &str) -> Result<(), CellError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(CellError::Invalid(format!("sandbox id `{id}` must be 1 to 64 characters of [a-zA-Z0-9_-]")));
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> CellError {
    CellError::Unavailable(format!("{what}: {e}"))
}

impl Cell {
    pub(crate) fn create(
        host: Arc<SandboxHost>,
        owner: &str,
        id: &str,
        limits: Limits,
        labels: Vec<(String, String)>,
    ) -> Result<Cell, CellError> {
        validate_id(id)?;
        validate_id(owner)?;
        if std::fs::symlink_metadata(host.owner_dir(owner).join(id)).is_ok() {
            return Err(CellError::Invalid(format!("sandbox `{id}` already exists")));
        }
        if let Some(standby) = host.warm.take(&host, owner, &limits) {
            match standby.adopt(id, labels.clone()) {
                Ok(cell) => {
                    tracing::debug!(
                        sandbox_id = id,
                        standby = cell.rec.dir_name.as_deref(),
                        "adopted a standby sandbox"
                    );
                    return Ok(cell);
                }
                Err((standby, e)) => {
                    tracing::warn!(sandbox_id = id, "cannot adopt a standby sandbox, creating one: {e}");
                    let _ = standby.destroy();
                }
            }
        }
        Cell::create_plain(host, owner, id, limits, labels, false)
    }

    fn create_plain(
        host: Arc<SandboxHost>,
        owner: &str,
        id: &str,
        limits: Limits,
        labels: Vec<(String, String)>,
        standby: bool,
    ) -> Result<Cell, CellError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let owner_dir = host.owner_dir(owner);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&owner_dir)
            .map_err(|e| unavailable("create owner dir", e))?;
        let dir = owner_dir.join(id);
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(CellError::Invalid(format!("sandbox `{id}` already exists")));
            }
            Err(e) => return Err(unavailable("create sandbox dir", e)),
        }
        let (uid, gid) = if host.is_root {
            match host.allocate_uid(id, &dir) {
                Ok(uid) => (uid, uid),
                Err(e) => {
                    let _ = std::fs::remove_dir(&dir);
                    return Err(e);
                }
            }
        } else {
            (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
        };
        let rec = CellRecord {
            id: id.into(),
            owner: owner.into(),
            uid,
            gid,
            limits,
            labels,
            created_at_ms: now_ms(),
            tmpfs: host.is_root,
            dir_name: None,
            standby,
        };
        let cell = Cell {
            cgroup: None,
            host: host.clone(),
            rec,
            dir,
            standby: Mutex::new(None),
            fresh: AtomicBool::new(true),
        };
        // From here on, a failure must not leave half a cell behind.
        match cell.finish_create() {
            Ok(cgroup) => Ok(Cell { cgroup, ..cell }),
            Err(e) => {
                let _ = cell.destroy();
                Err(e)
            }
        }
        .inspect(|c| {
            let _ = std::fs::set_permissions(c.workspace(), std::fs::Permissions::from_mode(0o700));
        })
    }

    fn finish_create(&self) -> Result<Option<Cgroup>, CellError> {
        let ws = self.workspace();
        std::fs::create_dir(&ws).map_err(|e| unavailable("create workspace", e))?;
        std::fs::create_dir(self.dir.join("files")).map_err(|e| unavailable("create files dir", e))?;
        if self.rec.tmpfs {
            let size = self.rec.limits.disk_bytes.unwrap_or(1 << 30);
            let data =
                std::ffi::CString::new(format!("size={size},mode=0700,uid={},gid={}", self.rec.uid, self.rec.gid))
                    .expect("no NUL in mount options");
            rustix::mount::mount(
                "tmpfs",
                &ws,
                "tmpfs",
                rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
                Some(data.as_c_str()),
            )
            .map_err(|e| unavailable("mount the workspace tmpfs", e))?;
        }
        self.write_record()?;
        if self.host.layout.unavailable.is_some() {
            return Ok(None);
        }
        let cg = Cgroup::create(&self.host.layout, &self.cgroup_name(), &self.rec.limits).map_err(|e| {
            // The error names host cgroup paths: log them, tell the kind.
            tracing::warn!(sandbox_id = %self.rec.id, "cannot create the sandbox's cgroup: {e}");
            unavailable("create the sandbox's cgroup", e.kind())
        })?;
        Ok(Some(cg))
    }

    pub(crate) fn open(host: Arc<SandboxHost>, owner: &str, id: &str) -> Result<Cell, CellError> {
        let cell = Cell::open_any(host, owner, id)?;
        if cell.rec.standby {
            // Not a sandbox anyone owns yet.
            return Err(CellError::NotFound(format!("no sandbox `{id}`")));
        }
        Ok(cell)
    }

    /// [`Cell::open`], standbys included (to destroy them at start-up).
    pub(crate) fn open_any(host: Arc<SandboxHost>, owner: &str, id: &str) -> Result<Cell, CellError> {
        validate_id(id)?;
        validate_id(owner)?;
        let not_found = || CellError::NotFound(format!("no sandbox `{id}`"));
        let rec = CellRecord::read(&host.owner_dir(owner).join(id)).map_err(|_| not_found())?;
        if rec.id != id {
            // The real directory of an adopted standby is not a name.
            return Err(not_found());
        }
        let name = rec.dir_name.clone().unwrap_or_else(|| rec.id.clone());
        validate_id(&name)?;
        let dir = host.owner_dir(owner).join(&name);
        let cgroup =
            (host.layout.unavailable.is_none()).then(|| Cgroup::open(&host.layout, &format!("{owner}.{name}")));
        if host.is_root {
            host.claim_uid(rec.uid, &dir);
        }
        Ok(Cell { host, rec, dir, cgroup, standby: Mutex::new(None), fresh: AtomicBool::new(false) })
    }

    fn cgroup_name(&self) -> String {
        format!("{}.{}", self.rec.owner, self.rec.dir_name.as_deref().unwrap_or(&self.rec.id))
    }

    fn write_record(&self) -> Result<(), CellError> {
        let json = serde_json::to_string_pretty(&self.rec).map_err(|e| unavailable("encode cell record", e))?;
        let tmp = self.dir.join("cell.json.tmp");
        std::fs::write(&tmp, json).map_err(|e| unavailable("write cell record", e))?;
        std::fs::rename(&tmp, self.dir.join("cell.json")).map_err(|e| unavailable("write cell record", e))
    }

    /// Create a standby cell named `name` and start its waiting process
    /// with the mounts, network and limits of `shape`.
    pub(crate) fn create_standby(
        host: Arc<SandboxHost>,
        owner: &str,
        name: &str,
        limits: Limits,
        shape: &SpawnSpec,
    ) -> Result<Cell, CellError> {
        use std::os::unix::fs::DirBuilderExt;
        let cell = Cell::create_plain(host, owner, name, limits, Vec::new(), true)?;
        let start = cell.dir.join("start");
        let started = std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&start)
            .map_err(|e| unavailable("create the standby's start dir", e))
            .and_then(|()| cell.spawn_cold(&warm::standby_spec(shape, &start)));
        match started {
            Ok(spawned) => {
                *cell.standby.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Standby { spawned, key: warm::shape_key(shape) });
                Ok(cell)
            }
            Err(e) => {
                let _ = cell.destroy();
                Err(e)
            }
        }
    }

    /// Make this standby the cell `id`: a symlink from `id` to its
    /// directory, then its record under the new id. On failure the standby
    /// comes back with the error.
    fn adopt(mut self, id: &str, labels: Vec<(String, String)>) -> Result<Cell, (Cell, CellError)> {
        let name = self.rec.id.clone();
        let link = self.host.owner_dir(&self.rec.owner).join(id);
        match std::os::unix::fs::symlink(&name, &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err((self, CellError::Invalid(format!("sandbox `{id}` already exists"))));
            }
            Err(e) => return Err((self, unavailable("link the sandbox id", e))),
        }
        let before = self.rec.clone();
        self.rec.id = id.to_string();
        self.rec.labels = labels;
        self.rec.created_at_ms = now_ms();
        self.rec.dir_name = Some(name);
        self.rec.standby = false;
        if let Err(e) = self.write_record() {
            let _ = std::fs::remove_file(&link);
            self.rec = before;
            return Err((self, e));
        }
        Ok(self)
    }

    fn take_standby(&self) -> Option<Standby> {
        self.standby.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// How this cell's standby process ended, or `None` while it waits
    /// (or when the cell has no standby process).
    pub(crate) fn standby_outcome(&self) -> Option<crate::process::Outcome> {
        self.standby.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|s| s.spawned.tree.try_wait())
    }

    /// A future of the standby process's outcome, for a watcher task.
    pub(crate) fn standby_ended(
        &self,
    ) -> Option<impl std::future::Future<Output = crate::process::Outcome> + Send + use<>> {
        let standby = self.standby.lock().unwrap_or_else(|e| e.into_inner());
        standby.as_ref().map(|s| s.spawned.tree.ended())
    }

    /// Whether the cell's directory is still there (another process may
    /// have removed it).
    pub(crate) fn dir_exists(&self) -> bool {
        self.dir.join("cell.json").is_file()
    }

    pub fn id(&self) -> &str {
        &self.rec.id
    }

    pub fn record(&self) -> &CellRecord {
        &self.rec
    }

    /// The workspace directory on the host.
    pub fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    fn workspace_dir(&self) -> Result<Dir, CellError> {
        Dir::open_ambient_dir(self.workspace(), ambient_authority()).map_err(|e| unavailable("open workspace", e))
    }

    fn owner(&self) -> extract::Owner {
        self.host.is_root.then_some((self.rec.uid, self.rec.gid))
    }

    /// Extract a `.tar.gz` into `dest` (relative to the workspace root, `""`
    /// for the root itself). Blocking: run it off the async threads.
    pub fn extract(
        &self,
        archive: impl Read,
        dest: &str,
        budgets: Budgets,
        options: ExtractOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Report, CellError> {
        let root = self.workspace_dir()?;
        let target = if dest.trim_matches('/').is_empty() {
            root
        } else {
            let parts = paths::components(dest.as_bytes(), 4096, 64)
                .map_err(|p| CellError::Invalid(format!("destination `{dest}`: {p}")))?;
            let owner = self.owner();
            paths::open_parents(&root, &parts, true, |d, n| {
                if let Some((uid, gid)) = owner {
                    rustix::fs::chownat(
                        d,
                        paths::os(n),
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    )?;
                }
                Ok(())
            })
            .map_err(|e| CellError::Invalid(format!("destination `{dest}`: {e}")))?
        };
        Ok(extract::extract_tar_gz_with(archive, &target, budgets, self.owner(), options, progress)?)
    }

    /// Open a regular file below the workspace for export.
    pub fn open_export(&self, path: &str, max_bytes: u64) -> Result<(cap_std::fs::File, u64), CellError> {
        Ok(export::open_export(&self.workspace_dir()?, path, max_bytes)?)
    }

    /// Create or replace a file below the workspace from `contents`.
    pub fn write_file(&self, path: &str, mut contents: impl Read, mode: u32) -> Result<u64, CellError> {
        let root = self.workspace_dir()?;
        let parts =
            paths::components(path.as_bytes(), 4096, 64).map_err(|p| CellError::Invalid(format!("`{path}`: {p}")))?;
        let (name, parents) = parts.split_last().expect("never empty");
        let dir = paths::open_parents(&root, parents, true, |_, _| Ok(()))
            .map_err(|e| CellError::Invalid(format!("`{path}`: {e}")))?;
        let mut opts = cap_std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        cap_std::fs::OpenOptionsExt::mode(&mut opts, mode & 0o777);
        cap_std::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW);
        let mut file =
            dir.open_with(paths::os(name), &opts).map_err(|e| CellError::Invalid(format!("`{path}`: {e}")))?;
        let n = std::io::copy(&mut contents, &mut file).map_err(|e| unavailable("write file", e))?;
        file.flush().map_err(|e| unavailable("write file", e))?;
        if let Some((uid, gid)) = self.owner() {
            rustix::fs::chownat(
                &dir,
                paths::os(name),
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| unavailable("chown file", e))?;
        }
        Ok(n)
    }

    /// Start a process tree under `spec`: in this cell's standby when it
    /// has one of the same shape, else cold.
    pub fn spawn(&self, spec: &SpawnSpec) -> Result<Spawned, CellError> {
        if spec.argv.is_empty() {
            return Err(CellError::Spec(bwrap::SpecError("empty command".into())));
        }
        if let Some(standby) = self.take_standby() {
            match self.claim(standby, spec) {
                Ok(spawned) => {
                    self.fresh.store(false, Ordering::Relaxed);
                    return Ok(spawned);
                }
                Err(standby) => {
                    tracing::debug!(sandbox_id = self.id(), "the standby cannot run this spec; starting cold");
                    standby.retire();
                }
            }
        }
        let spawned = self.spawn_cold(spec)?;
        if self.fresh.swap(false, Ordering::Relaxed) {
            self.host.warm.learn(&self.host, &self.rec.owner, &self.rec.limits, &self.rec.labels, spec);
        }
        Ok(spawned)
    }

    /// Hand `spec` to the standby's waiting shell; the standby comes back
    /// when it cannot run `spec` exactly as a cold spawn would.
    fn claim(&self, standby: Standby, spec: &SpawnSpec) -> Result<Spawned, Standby> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let Some(script) = warm::claim_script(spec) else { return Err(standby) };
        if standby.key != warm::shape_key(spec) || standby.spawned.tree.try_wait().is_some() {
            return Err(standby);
        }
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(self.dir.join("start").join("exec.sh"))
            .and_then(|mut f| f.write_all(script.as_bytes()));
        if written.is_err() {
            return Err(standby);
        }
        let stdin = std::os::fd::AsFd::as_fd(&standby.spawned.stdin);
        match rustix::io::write(stdin, b"\n") {
            Ok(1) => Ok(standby.spawned),
            _ => Err(standby),
        }
    }

    /// Start a new bubblewrap for `spec`.
    fn spawn_cold(&self, spec: &SpawnSpec) -> Result<Spawned, CellError> {
        let files = self.dir.join("files");
        for (i, m) in spec.mounts.iter().enumerate() {
            if let Mount::File { contents, .. } = m {
                std::fs::write(files.join(i.to_string()), contents)
                    .map_err(|e| unavailable("write sandbox file", e))?;
            }
        }
        let args = bwrap::args(spec, &self.workspace(), &files)?;
        let jail = JailOptions {
            procs_files: self
                .cgroup
                .as_ref()
                .map(|c| c.procs_files().iter().map(|p| p.display().to_string()).collect())
                .unwrap_or_default(),
            uid: self.host.is_root.then_some(self.rec.uid),
            gid: self.host.is_root.then_some(self.rec.gid),
            nofile: spec.open_files.or(self.rec.limits.open_files),
            // bubblewrap's own two processes count too.
            nproc: self.host.is_root.then_some(self.rec.limits.pids.map(|p| p.saturating_add(2))).flatten(),
            batch: self.host.cfg.batch_scheduling,
        };
        let mut cmd = tokio::process::Command::new(&self.host.cfg.helper);
        cmd.args(jail.to_args())
            .arg(&self.host.cfg.bwrap)
            .args(&args)
            .env_clear()
            .current_dir("/")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // The helper's path is the host's business: it goes to the log,
        // not into an error a user reads.
        let mut child = crate::spawner::spawn(cmd).map_err(|e| {
            tracing::warn!(helper = %self.host.cfg.helper.display(), "cannot start the sandbox helper: {e}");
            unavailable("start the sandbox helper", e)
        })?;
        let (stdout, stderr, stdin) = (child.stdout.take(), child.stderr.take(), child.stdin.take());
        // Bigger pipes: fewer wake-ups and reads when a command floods output.
        for fd in [stdout.as_ref().map(|s| s.as_raw_fd()), stderr.as_ref().map(|s| s.as_raw_fd())].into_iter().flatten()
        {
            // SAFETY: fcntl on a pipe fd we own; failure just keeps the default size.
            unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20) };
        }
        let tree = ProcessTree::start(self.rec.id.clone(), child, self.cgroup.clone());
        match (stdout, stderr, stdin) {
            (Some(stdout), Some(stderr), Some(stdin)) => Ok(Spawned { tree, stdout, stderr, stdin }),
            _ => {
                tree.kill_tree();
                Err(CellError::Unavailable("the sandbox's stdio pipes are missing".into()))
            }
        }
    }

    /// Kill every process in the cell.
    pub fn kill_all(&self) {
        if let Some(cg) = &self.cgroup {
            cg.kill_all(Duration::from_secs(5));
        }
    }

    /// Kill everything, unmount and delete the workspace, remove the cgroup
    /// and the record. Idempotent.
    pub fn destroy(&self) -> Result<(), CellError> {
        if let Some(s) = self.take_standby() {
            s.spawned.tree.kill_tree();
        }
        self.kill_all();
        if self.rec.dir_name.is_some() {
            let _ = std::fs::remove_file(self.host.owner_dir(&self.rec.owner).join(&self.rec.id));
        }
        let ws = self.workspace();
        if self.rec.tmpfs && ws.exists() {
            let _ = rustix::mount::unmount(&ws, rustix::mount::UnmountFlags::DETACH);
        }
        // Deleting a big tree is slow on this filesystem; the record goes
        // first so nobody can reopen a half-deleted cell.
        let _ = std::fs::remove_file(self.dir.join("cell.json"));
        let graveyard = self.dir.with_extension(format!("deleted-{}", self.rec.created_at_ms));
        let doomed = if std::fs::rename(&self.dir, &graveyard).is_ok() { graveyard } else { self.dir.clone() };
        std::thread::spawn(move || {
            let _ = std::fs::remove_dir_all(&doomed);
        });
        if let Some(cg) = &self.cgroup {
            cg.remove().map_err(|e| unavailable("remove cgroup", e))?;
        }
        if self.host.is_root {
            self.host.release_uid(self.rec.uid, &self.dir);
        }
        if !self.rec.standby {
            self.host.warm.replenish(&self.host, &self.rec.owner, &self.rec.limits);
        }
        Ok(())
    }
}
