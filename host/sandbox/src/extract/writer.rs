//! Creating regular files: one function used for every file, and the
//! writer thread that creates the small ones (most of a repository) while
//! the reading thread inflates and checks the next entries.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};

use cap_std::fs::PermissionsExt as _;
use cap_std::fs::{Dir, OpenOptions, Permissions};

use super::ExtractError;
use super::meta::{self, Owner};
use crate::paths;
use crate::tar::Mtime;

/// Regular files up to this size are handed to the writer thread whole.
pub(super) const HANDOFF_MAX: u64 = 256 * 1024;
/// Files queued for the writer at most (bounds memory: 64 × 256 KiB).
pub(super) const QUEUE: usize = 64;

/// Work for the writer thread, in archive order.
pub(super) enum Job {
    File(NewFile, Vec<u8>),
    /// Reply once everything before this is written.
    Flush(SyncSender<()>),
}

/// A regular file to create: where, and with what metadata.
pub(super) struct NewFile {
    pub dir: Arc<Dir>,
    pub name: Vec<u8>,
    pub shown: String,
    pub mode: u32,
    pub mtime: Mtime,
}

/// The writer thread's loop: write each queued file; after a failure,
/// note the first error and drop the rest (the reader stops soon after).
pub(super) fn run(
    jobs: Receiver<Job>,
    umask: u32,
    owner: Owner,
    failed: &std::sync::Mutex<Option<ExtractError>>,
    has_failed: &AtomicBool,
) {
    for job in jobs {
        match job {
            Job::Flush(done) => {
                let _ = done.send(());
            }
            Job::File(..) if has_failed.load(Ordering::Relaxed) => {}
            Job::File(file, data) => {
                let r = write_file(&file, umask, owner, &mut |f| {
                    f.write_all(&data).map_err(|e| write_error(&file.shown, e))
                });
                if let Err(e) = r {
                    failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    has_failed.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Create one regular file with its content, mode, owner and mtime. A
/// file already there is replaced by a new one, as GNU tar does (unlinked,
/// not truncated: a hardlink to it keeps the old content); a directory or
/// symlink of that name is refused.
pub(super) fn write_file(
    file: &NewFile,
    umask: u32,
    owner: Owner,
    content: &mut dyn FnMut(&mut cap_std::fs::File) -> Result<(), ExtractError>,
) -> Result<(), ExtractError> {
    let NewFile { dir, name, shown, mode, mtime } = file;
    let refuse = |reason: &str| ExtractError::Refused { entry: shown.to_string(), reason: reason.to_string() };
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    // Created with its final mode when the umask cannot alter it (saves an
    // fchmod per file); fixed up below otherwise.
    cap_std::fs::OpenOptionsExt::mode(&mut opts, if mode & umask == 0 { *mode } else { 0o600 });
    cap_std::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW);
    let created_err = |e: io::Error| ExtractError::Io(format!("creating `{shown}`: {e}"));
    let name_os = paths::os(name);
    let mut f = match dir.open_with(name_os, &opts) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let existing = dir.symlink_metadata(name_os).map_err(created_err)?;
            if existing.is_dir() {
                return Err(refuse("a directory of that name already exists"));
            }
            if existing.file_type().is_symlink() {
                return Err(refuse("a symlink of that name already exists"));
            }
            dir.remove_file(name_os).map_err(created_err)?;
            dir.open_with(name_os, &opts).map_err(created_err)?
        }
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
            return Err(refuse("a directory of that name already exists"));
        }
        Err(e) => return Err(created_err(e)),
    };
    content(&mut f)?;
    if mode & umask != 0 {
        f.set_permissions(Permissions::from_mode(*mode))
            .map_err(|e| ExtractError::Io(format!("setting the mode of `{shown}`: {e}")))?;
    }
    meta::chown_fd(&f, owner).map_err(|e| ExtractError::Io(format!("chown `{shown}`: {e}")))?;
    // After the last write, which would move it.
    meta::set_mtime_fd(&f, *mtime).map_err(|e| ExtractError::Io(format!("setting the mtime of `{shown}`: {e}")))
}

pub(super) fn write_error(shown: &str, e: io::Error) -> ExtractError {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            ExtractError::Budget(format!("the workspace is full while writing `{shown}`"))
        }
        _ => ExtractError::Io(format!("writing `{shown}`: {e}")),
    }
}
