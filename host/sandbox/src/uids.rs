//! Host uids for sandboxes, leased so that no two live sandboxes on this
//! host ever share one, whichever installation or server process made
//! them: the kernel counts some limits per uid (`RLIMIT_NPROC`), and a
//! shared uid would also let one sandbox signal or ptrace another's
//! processes if both escaped their namespaces.
//!
//! The table is a directory of lease files, one per uid in use
//! (`<dir>/<uid>`, holding the path of the cell directory that holds it),
//! guarded by an `flock` on `<dir>/.lock` for every allocation and release.
//! It lives in `/run` by default: a tmpfs that starts empty at boot, when
//! no sandbox is alive. A lease whose cell directory no longer exists is
//! stale (its server crashed and the cell was destroyed since, or the
//! installation was removed) and may be taken over; a release removes a
//! lease only when it is still the releasing cell's.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The host-wide uid lease table.
#[derive(Debug, Clone)]
pub struct UidLeases {
    dir: PathBuf,
    base: u32,
    count: u32,
}

/// An exclusive hold on the table, released when dropped (with the file).
struct Locked(#[allow(dead_code)] File);

impl UidLeases {
    /// The table in `dir` for uids `base .. base + count`. Creates `dir`
    /// (mode 0700: only root reads who holds what).
    pub fn open(dir: &Path, base: u32, count: u32) -> io::Result<UidLeases> {
        if count == 0 || base.checked_add(count - 1).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("uid range {base} + {count} does not fit in 32 bits"),
            ));
        }
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        Ok(UidLeases { dir: dir.to_path_buf(), base, count })
    }

    /// Where the leases live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> io::Result<Locked> {
        let f = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(self.dir.join(".lock"))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(Locked(f))
    }

    fn lease_path(&self, uid: u32) -> PathBuf {
        self.dir.join(uid.to_string())
    }

    /// The cell directory a lease names, if the lease exists.
    fn holder(&self, uid: u32) -> Option<PathBuf> {
        std::fs::read_to_string(self.lease_path(uid)).ok().map(|t| PathBuf::from(t.trim_end_matches('\n')))
    }

    /// Lease a free uid for the cell in `cell_dir` (which must exist), trying
    /// uids from a hash of `hint` on, so a cell's uid is rarely its
    /// predecessor's. Fails when every uid of the range is leased.
    pub fn allocate(&self, hint: &str, cell_dir: &Path) -> io::Result<u32> {
        let _lock = self.lock()?;
        let mut h: u32 = 2166136261;
        for b in hint.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(16777619);
        }
        for i in 0..self.count {
            let uid = self.base + (h.wrapping_add(i) % self.count);
            let taken = match self.holder(uid) {
                None => false,
                Some(holder) => holder.is_dir(),
            };
            if !taken {
                self.write_lease(uid, cell_dir)?;
                return Ok(uid);
            }
        }
        Err(io::Error::other(format!(
            "every host uid from {} to {} is held by a live sandbox (sandbox.uid_base, sandbox.uid_count)",
            self.base,
            u64::from(self.base) + u64::from(self.count) - 1
        )))
    }

    fn write_lease(&self, uid: u32, cell_dir: &Path) -> io::Result<()> {
        let tmp = self.dir.join(format!(".{uid}.tmp"));
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(format!("{}\n", cell_dir.display()).as_bytes())?;
        std::fs::rename(&tmp, self.lease_path(uid))
    }

    /// Record that the cell in `cell_dir` holds `uid` (a cell re-opened
    /// after a restart, whose lease may predate the table). Leaves a lease
    /// held by another live cell alone and says so.
    pub fn claim(&self, uid: u32, cell_dir: &Path) -> io::Result<bool> {
        let _lock = self.lock()?;
        match self.holder(uid) {
            Some(h) if h == cell_dir => Ok(true),
            Some(h) if h.is_dir() => Ok(false),
            _ => self.write_lease(uid, cell_dir).map(|()| true),
        }
    }

    /// Give `uid` back if the cell in `cell_dir` still holds it.
    pub fn release(&self, uid: u32, cell_dir: &Path) -> io::Result<()> {
        let _lock = self.lock()?;
        if self.holder(uid).is_some_and(|h| h == cell_dir) {
            std::fs::remove_file(self.lease_path(uid))?;
        }
        Ok(())
    }

    /// Every lease: (uid, cell directory).
    pub fn list(&self) -> Vec<(u32, PathBuf)> {
        let mut out: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|uid| Some((uid, self.holder(uid)?)))
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_tables_on_one_directory_never_hand_out_one_uid_twice() {
        let t = tempfile::tempdir().unwrap();
        let a = UidLeases::open(&t.path().join("leases"), 5000, 8).unwrap();
        let b = UidLeases::open(&t.path().join("leases"), 5000, 8).unwrap();
        let mut got = Vec::new();
        for i in 0..8 {
            let cell = t.path().join(format!("cell{i}"));
            std::fs::create_dir(&cell).unwrap();
            // The same hint every time: collisions are the point.
            let table = if i % 2 == 0 { &a } else { &b };
            got.push(table.allocate("same", &cell).unwrap());
        }
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 8, "{got:?}");
        let cell = t.path().join("cell8");
        std::fs::create_dir(&cell).unwrap();
        let err = a.allocate("x", &cell).unwrap_err();
        assert!(err.to_string().contains("sandbox.uid_base"), "{err}");
    }

    #[test]
    fn a_stale_lease_is_taken_over_and_its_late_release_keeps_the_new_one() {
        let t = tempfile::tempdir().unwrap();
        let leases = UidLeases::open(&t.path().join("leases"), 7000, 1).unwrap();
        let old = t.path().join("old");
        std::fs::create_dir(&old).unwrap();
        assert_eq!(leases.allocate("a", &old).unwrap(), 7000);
        let new = t.path().join("new");
        std::fs::create_dir(&new).unwrap();
        assert!(leases.allocate("b", &new).is_err(), "a live cell keeps its uid");
        std::fs::remove_dir(&old).unwrap();
        assert_eq!(leases.allocate("b", &new).unwrap(), 7000);
        leases.release(7000, &old).unwrap();
        assert_eq!(leases.list(), vec![(7000, new.clone())]);
        leases.release(7000, &new).unwrap();
        assert!(leases.list().is_empty());
    }

    #[test]
    fn a_range_past_u32_is_refused() {
        let t = tempfile::tempdir().unwrap();
        assert!(UidLeases::open(t.path(), u32::MAX - 10, 65536).is_err());
        assert!(UidLeases::open(t.path(), u32::MAX - 10, 11).is_ok());
    }
}
