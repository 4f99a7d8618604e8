//! Metadata an extracted entry keeps: owner, mode and modification time.
//! Build tools compare mtimes, so files, symlinks and directories get the
//! archive's. Directories get theirs last, as GNU tar does: writing into a
//! directory changes its mtime, and a read-only directory (a 555 one is
//! common in vendored trees) must stay writable until its contents are in.

use std::io;

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, OFlags, Timespec, Timestamps, UTIME_OMIT};

use super::ExtractError;
use crate::paths;
use crate::tar::Mtime;

/// Who should own extracted entries (the sandbox's host uid and gid).
pub type Owner = Option<(u32, u32)>;

/// The process umask, read from `/proc/self/status` (calling `umask(2)` to
/// read it would change it for every thread for a moment). Unknown → assume
/// it masks everything, so modes are always fixed up explicitly.
pub(super) fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Umask:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

/// Give `name` (never followed if a symlink) to the owner.
pub(super) fn chown_at(dir: &Dir, name: &[u8], owner: Owner) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        rustix::fs::chownat(dir, paths::os(name), Some(uid_of(uid)), Some(gid_of(gid)), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    Ok(())
}

/// Give an open file to the owner.
pub(super) fn chown_fd(fd: impl rustix::fd::AsFd, owner: Owner) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(fd, Some(uid_of(uid)), Some(gid_of(gid)))?;
    }
    Ok(())
}

fn uid_of(uid: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(uid)
}

fn gid_of(gid: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(gid)
}

/// The modification time to set; the access time is left as it is.
fn times(mtime: Mtime) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        last_modification: Timespec { tv_sec: mtime.secs, tv_nsec: i64::from(mtime.nanos) },
    }
}

/// Set an open file's or directory's mtime.
pub(super) fn set_mtime_fd(fd: impl rustix::fd::AsFd, mtime: Mtime) -> io::Result<()> {
    Ok(rustix::fs::futimens(fd, &times(mtime))?)
}

/// Set a symlink's own mtime (GNU tar does; `ls -l` and `find -newer` see it).
pub(super) fn set_link_mtime(dir: &Dir, name: &[u8], mtime: Mtime) -> io::Result<()> {
    Ok(rustix::fs::utimensat(dir, paths::os(name), &times(mtime), AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Directory modes and mtimes, applied once everything is written.
#[derive(Default)]
pub(super) struct DeferredDirs {
    /// (components, mode, mtime) in archive order.
    dirs: Vec<(Vec<Vec<u8>>, u32, Mtime)>,
}

impl DeferredDirs {
    pub fn record(&mut self, parts: &[&[u8]], mode: u32, mtime: Mtime) {
        self.dirs.push((parts.iter().map(|p| p.to_vec()).collect(), mode, mtime));
    }

    /// Deepest first, so a directory made unsearchable (or its mtime set)
    /// is never walked through or written into afterwards; for one path
    /// listed twice the later entry is applied last and wins.
    pub fn apply(mut self, root: &Dir) -> Result<(), ExtractError> {
        self.dirs.sort_by_key(|(parts, _, _)| std::cmp::Reverse(parts.len()));
        let mut cached: Option<(&[Vec<u8>], Dir)> = None;
        for (parts, mode, mtime) in &self.dirs {
            let (name, parents) = parts.split_last().expect("directory entries have a name");
            let shown = || String::from_utf8_lossy(&parts.join(&b'/')).into_owned();
            let failed = |what: &str, e: io::Error| ExtractError::Io(format!("{what} `{}`: {e}", shown()));
            if cached.as_ref().is_none_or(|(p, _)| *p != parents) {
                let refs: Vec<&[u8]> = parents.iter().map(Vec::as_slice).collect();
                let dir = paths::open_parents(root, &refs, false, |_, _| Ok(()))
                    .map_err(|e| failed("opening the parent of", e))?;
                cached = Some((parents, dir));
            }
            let parent = &cached.as_ref().expect("set above").1;
            // Opened for reading (a handle `open_dir_nofollow` gives is
            // O_PATH, which fchmod and futimens refuse), never following a
            // symlink that could have replaced it.
            let dir = rustix::fs::openat(
                parent,
                paths::os(name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| failed("opening", e.into()))?;
            rustix::fs::fchmod(&dir, rustix::fs::Mode::from_raw_mode(*mode))
                .map_err(|e| failed("setting the mode of", e.into()))?;
            set_mtime_fd(&dir, *mtime).map_err(|e| failed("setting the mtime of", e))?;
        }
        Ok(())
    }
}
