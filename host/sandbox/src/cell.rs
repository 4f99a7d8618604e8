//! A cell: the host side of one sandbox. A workspace (a size-limited tmpfs
//! owned by the cell's own unprivileged uid when we are root, a plain
//! directory otherwise), a cgroup, and a record on disk so a restarted
//! server can find and reap it.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use crate::bwrap::{self, SpecError};
use crate::cgroup::Cgroup;
use crate::export::{self, ExportError};
use crate::extract::{self, Budgets, ExtractError, Report};
use crate::host::SandboxHost;
use crate::jail::JailOptions;
use crate::limits::Limits;
use crate::paths;
use crate::process::ProcessTree;
use crate::spec::{Mount, SpawnSpec};

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
    dir: PathBuf,
    cgroup: Option<Cgroup>,
}

fn validate_id(id: &str) -> Result<(), CellError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(CellError::Invalid(format!("sandbox id `{id}` must be 1 to 64 characters of [a-zA-Z0-9_-]")));
    }
    Ok(())
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
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        validate_id(id)?;
        validate_id(owner)?;
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
            let uid = host.allocate_uid(id);
            (uid, uid)
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
            created_at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            tmpfs: host.is_root,
        };
        let cell = Cell { cgroup: None, host: host.clone(), rec, dir };
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
        let json = serde_json::to_string_pretty(&self.rec).map_err(|e| unavailable("encode cell record", e))?;
        std::fs::write(self.dir.join("cell.json"), json).map_err(|e| unavailable("write cell record", e))?;
        if self.host.layout.unavailable.is_some() {
            return Ok(None);
        }
        let cg = Cgroup::create(&self.host.layout, &self.cgroup_name(), &self.rec.limits)
            .map_err(|e| unavailable("create cgroup", e))?;
        Ok(Some(cg))
    }

    pub(crate) fn open(host: Arc<SandboxHost>, owner: &str, id: &str) -> Result<Cell, CellError> {
        validate_id(id)?;
        validate_id(owner)?;
        let dir = host.owner_dir(owner).join(id);
        let rec = CellRecord::read(&dir).map_err(|_| CellError::NotFound(format!("no sandbox `{id}`")))?;
        let cgroup = (host.layout.unavailable.is_none()).then(|| Cgroup::open(&host.layout, &format!("{owner}.{id}")));
        host.uids.lock().unwrap().insert(rec.uid);
        Ok(Cell { host, rec, dir, cgroup })
    }

    fn cgroup_name(&self) -> String {
        format!("{}.{}", self.rec.owner, self.rec.id)
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
        Ok(extract::extract_tar_gz(archive, &target, budgets, self.owner(), progress)?)
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

    /// Start a process tree under `spec`.
    pub fn spawn(&self, spec: &SpawnSpec) -> Result<Spawned, CellError> {
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
        let mut child = cmd
            .spawn()
            .map_err(|e| unavailable(&format!("start the sandbox helper {}", self.host.cfg.helper.display()), e))?;
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
        self.kill_all();
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
            self.host.release_uid(self.rec.uid);
        }
        Ok(())
    }
}
