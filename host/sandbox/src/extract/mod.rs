//! Safe, streaming extraction of `.tar.gz` archives into a workspace.
//!
//! Every byte of an archive is hostile. In one pass the stream is counted,
//! inflated (zlib-rs), read member by member by our own tar reader
//! ([`crate::tar`], which takes every member the way GNU tar does) and
//! unpacked through a `cap_std::Dir`. Each member is either extracted as
//! GNU tar extracts it, skipped with a recorded reason, or the archive is
//! refused naming it: never silently different.
//!
//! - extracted: regular files (sparse ones with their holes), directories,
//!   symlinks whose target resolves lexically inside the workspace, and
//!   hardlinks to a regular file already extracted; with the archive's
//!   mtimes and permission bits (directories' applied last);
//! - skipped with a warning (refused in strict mode): symlinks pointing
//!   outside the workspace or to an absolute path;
//! - refused, naming the entry: absolute paths (we do not re-root them: a
//!   well-formed repo archive never needs it), `..` components, hardlinks to
//!   anything else, device, FIFO and unknown nodes, names over the limits,
//!   entries that would pass through a symlink or replace one;
//! - masked: setuid, setgid and sticky bits (counted in the report);
//! - budgets, enforced while streaming on decompressed bytes: total size,
//!   entry count, depth, path length, compression ratio.

mod budget;
mod links;
mod meta;
mod writer;

use std::collections::HashSet;
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use cap_std::fs::PermissionsExt as _;
use cap_std::fs::{Dir, Permissions};

pub use meta::Owner;

use crate::paths::{self, PathProblem};
use crate::tar::{self, Kind, Member, TarError};
use budget::{Counted, Inflated, read_error};
use links::LinkError;
use writer::{HANDOFF_MAX, Job, NewFile, QUEUE, write_error, write_file};

/// Limits on what one archive may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub max_total_bytes: u64,
    pub max_entries: u64,
    pub max_depth: u32,
    pub max_path_bytes: u32,
    pub max_compression_ratio: u32,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            max_total_bytes: 4 << 30,
            max_entries: 200_000,
            max_depth: 64,
            max_path_bytes: 4096,
            max_compression_ratio: 250,
        }
    }
}

/// How to treat entries that can be left out without harm to the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Refuse the archive for an entry that would otherwise be skipped
    /// with a warning (a symlink pointing outside the workspace).
    pub strict: bool,
}

/// An entry left out of a non-strict extraction, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub entry: String,
    pub reason: String,
}

/// Totals of a successful extraction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub archive_bytes: u64,
    pub content_bytes: u64,
    pub entries: u64,
    pub masked_modes: u64,
    pub skipped: Vec<Skipped>,
}

/// Why an extraction stopped. Nothing is written outside the workspace in
/// any case; what was extracted before the error stays (the caller destroys
/// the workspace).
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("archive entry `{entry}` refused: {reason}")]
    Refused { entry: String, reason: String },
    #[error("archive exceeds its budget: {0}")]
    Budget(String),
    #[error("archive is not a valid .tar.gz: {0}")]
    Corrupt(String),
    #[error("extraction failed: {0}")]
    Io(String),
}

/// A path as shown in reports: lossy UTF-8, cut short if absurdly long.
fn display(path: &[u8]) -> String {
    const MAX: usize = 1024;
    let s = String::from_utf8_lossy(&path[..path.len().min(MAX)]).into_owned();
    if path.len() > MAX { s + "…" } else { s }
}

fn tar_error(e: TarError) -> ExtractError {
    match e {
        TarError::Corrupt(m) => ExtractError::Corrupt(m),
        TarError::Member { entry, reason } => ExtractError::Refused { entry: display(&entry), reason },
        TarError::TooLarge(m) => ExtractError::Budget(m),
        TarError::Io(e) => read_error(e, "reading the archive"),
    }
}

/// Extract the `.tar.gz` read from `archive` into `root`, skipping (with
/// a warning in the report) what can be skipped. `progress` gets (content
/// bytes, entries) after every entry.
pub fn extract_tar_gz(
    archive: impl io::Read,
    root: &Dir,
    budgets: Budgets,
    owner: Owner,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, ExtractError> {
    extract_tar_gz_with(archive, root, budgets, owner, ExtractOptions::default(), progress)
}

/// [`extract_tar_gz`] with options.
///
/// Two threads share the work: this one inflates, parses and checks every
/// entry and creates directories, links and large files; a writer thread
/// creates the small regular files (most of a repository), in archive
/// order. An entry whose path meets a file still queued waits for the
/// writer first, so the result (and every refusal) is the same as writing
/// one entry at a time.
pub fn extract_tar_gz_with(
    archive: impl io::Read,
    root: &Dir,
    budgets: Budgets,
    owner: Owner,
    options: ExtractOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, ExtractError> {
    let umask = meta::current_umask();
    let failed: Mutex<Option<ExtractError>> = Mutex::new(None);
    let has_failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let writer = scope.spawn(|| writer::run(rx, umask, owner, &failed, &has_failed));
        let mut run = Extraction {
            root,
            budgets,
            options,
            owner,
            umask,
            writer: &tx,
            writer_failed: &has_failed,
            report: Report::default(),
            queued: HashSet::new(),
            cached_parent: None,
            dirs: meta::DeferredDirs::default(),
        };
        let result = run.all(archive, progress);
        drop(tx);
        let _ = writer.join();
        let written = failed.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (result, written) {
            // The writer's error is the earlier entry's.
            (_, Some(e)) => Err(e),
            (r, None) => r,
        }
    })
}

/// The state of one extraction on the reading thread.
struct Extraction<'a> {
    root: &'a Dir,
    budgets: Budgets,
    options: ExtractOptions,
    owner: Owner,
    umask: u32,
    writer: &'a SyncSender<Job>,
    writer_failed: &'a AtomicBool,
    report: Report,
    /// Paths of files handed to the writer since it was last flushed.
    queued: HashSet<Vec<u8>>,
    /// Archives list files directory by directory: the last parent stays
    /// open instead of walking (and opening) every component per entry.
    cached_parent: Option<(Vec<Vec<u8>>, Arc<Dir>)>,
    dirs: meta::DeferredDirs,
}

impl Extraction<'_> {
    fn all(&mut self, archive: impl io::Read, progress: &mut dyn FnMut(u64, u64)) -> Result<Report, ExtractError> {
        let compressed = Arc::new(AtomicU64::new(0));
        let counted = Counted { inner: archive, count: compressed.clone() };
        let gz = flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(256 * 1024, counted));
        let inflated = Inflated { inner: gz, out: 0, compressed: compressed.clone(), budgets: self.budgets };
        // Headers and small files are copied out of this buffer; large
        // reads go past it.
        let mut tar = tar::Reader::new(BufReader::with_capacity(256 * 1024, inflated));
        let mut buf = vec![0u8; 256 * 1024];
        while let Some(member) = tar.next_member().map_err(tar_error)? {
            if self.writer_failed.load(Ordering::Relaxed) {
                return Err(ExtractError::Io("an earlier entry failed".into()));
            }
            self.report.entries += 1;
            if self.report.entries > self.budgets.max_entries {
                return Err(ExtractError::Budget(format!("more than {} entries", self.budgets.max_entries)));
            }
            self.one(member, &mut tar, &mut buf)?;
            progress(self.report.content_bytes, self.report.entries);
        }
        self.flush()?;
        std::mem::take(&mut self.dirs).apply(self.root)?;
        self.report.archive_bytes = compressed.load(Ordering::Relaxed);
        Ok(std::mem::take(&mut self.report))
    }

    /// Extract, skip or refuse one member.
    fn one<R: io::BufRead>(
        &mut self,
        member: Member,
        tar: &mut tar::Reader<R>,
        buf: &mut [u8],
    ) -> Result<(), ExtractError> {
        let shown = display(&member.path);
        let refuse = |reason: String| ExtractError::Refused { entry: shown.clone(), reason };
        let parts = match paths::components(
            &member.path,
            self.budgets.max_path_bytes as usize,
            self.budgets.max_depth as usize,
        ) {
            Ok(p) => p,
            // A bare `./` directory entry is the workspace root itself,
            // whose mode and mtime are the host's, not the archive's.
            Err(PathProblem::Empty) if member.kind == Kind::Dir => return Ok(()),
            Err(p) => return Err(refuse(p.to_string())),
        };
        self.wait_for_queued(&parts)?;
        let (name, parents) = parts.split_last().expect("components are never empty");
        let dir = self.parent(parents, &refuse)?;
        if member.mode & 0o7000 != 0 {
            self.report.masked_modes += 1;
        }
        let mode = member.mode & 0o777;
        let file = |shown: &str| NewFile {
            dir: dir.clone(),
            name: name.to_vec(),
            shown: shown.to_string(),
            mode,
            mtime: member.mtime,
        };
        match member.kind {
            Kind::File => {
                let apparent = member.sparse.as_ref().map_or(member.size, |s| s.real_size);
                if self.report.content_bytes.saturating_add(apparent) > self.budgets.max_total_bytes {
                    return Err(ExtractError::Budget(format!(
                        "more than {} bytes of content",
                        self.budgets.max_total_bytes
                    )));
                }
                if let Some(map) = &member.sparse {
                    self.flush()?;
                    write_file(&file(&shown), self.umask, self.owner, &mut |f| {
                        for &(offset, len) in &map.regions {
                            f.seek(SeekFrom::Start(offset)).map_err(|e| write_error(&shown, e))?;
                            copy_data(tar, f, len, buf, &shown)?;
                        }
                        f.set_len(map.real_size).map_err(|e| write_error(&shown, e))
                    })?;
                } else if member.size <= HANDOFF_MAX {
                    let mut data = Vec::with_capacity(member.size as usize);
                    tar.read_data_to_end(&mut data).map_err(tar_error)?;
                    self.writer
                        .send(Job::File(file(&shown), data))
                        .map_err(|_| ExtractError::Io("the writer thread stopped".into()))?;
                    self.queued.insert(parts.join(&b'/'));
                } else {
                    self.flush()?;
                    write_file(&file(&shown), self.umask, self.owner, &mut |f| {
                        copy_data(tar, f, member.size, buf, &shown)
                    })?;
                }
                self.report.content_bytes += apparent;
            }
            Kind::Dir => {
                let name_os = paths::os(name);
                match dir.create_dir(name_os) {
                    Ok(()) => {
                        meta::chown_at(&dir, name, self.owner)
                            .map_err(|e| ExtractError::Io(format!("chown `{shown}`: {e}")))?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let meta = dir.symlink_metadata(name_os).map_err(|e| ExtractError::Io(e.to_string()))?;
                        if !meta.is_dir() {
                            return Err(refuse("a file or symlink of that name already exists".into()));
                        }
                    }
                    Err(e) => return Err(ExtractError::Io(format!("creating `{shown}`: {e}"))),
                }
                // While extracting: the archive's mode for group and others
                // (a 700 directory stays private from the start), writable
                // by its owner so its contents fit. The exact mode comes last.
                dir.set_permissions(name_os, Permissions::from_mode(mode | 0o700))
                    .map_err(|e| ExtractError::Io(format!("setting the mode of `{shown}`: {e}")))?;
                self.dirs.record(&parts, mode, member.mtime);
            }
            Kind::Symlink => {
                if member.link.is_empty() {
                    return Err(refuse("symlink without a target".into()));
                }
                if let Err(reason) = links::symlink_stays_inside(parents, &member.link) {
                    if self.options.strict {
                        return Err(refuse(reason));
                    }
                    self.report.skipped.push(Skipped { entry: shown, reason });
                    return Ok(());
                }
                dir.symlink(paths::os(&member.link), paths::os(name)).map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => refuse("an entry of that name already exists".into()),
                    _ => ExtractError::Io(format!("creating symlink `{shown}`: {e}")),
                })?;
                meta::chown_at(&dir, name, self.owner)
                    .map_err(|e| ExtractError::Io(format!("chown `{shown}`: {e}")))?;
                meta::set_link_mtime(&dir, name, member.mtime)
                    .map_err(|e| ExtractError::Io(format!("setting the mtime of `{shown}`: {e}")))?;
            }
            Kind::Hardlink => {
                let target = paths::components(
                    &member.link,
                    self.budgets.max_path_bytes as usize,
                    self.budgets.max_depth as usize,
                )
                .map_err(|p| refuse(format!("hardlink target `{}`: {p}", display(&member.link))))?;
                if target == parts {
                    return Err(refuse("a hardlink to itself".into()));
                }
                self.wait_for_queued(&target)?;
                links::hardlink(self.root, &target, &dir, name).map_err(|e| match e {
                    LinkError::Refused(reason) => refuse(reason),
                    LinkError::Io(e) => ExtractError::Io(format!("linking `{shown}`: {e}")),
                })?;
            }
            Kind::CharDevice | Kind::BlockDevice => return Err(refuse("device nodes are not allowed".into())),
            Kind::Fifo => return Err(refuse("FIFOs are not allowed".into())),
            Kind::Unknown(t) => {
                return Err(refuse(format!("entry type {:?} is not supported", char::from(t))));
            }
        }
        Ok(())
    }

    /// The open directory holding an entry, created (owned by the sandbox)
    /// where missing.
    fn parent(&mut self, parents: &[&[u8]], refuse: &dyn Fn(String) -> ExtractError) -> Result<Arc<Dir>, ExtractError> {
        let hit =
            self.cached_parent.as_ref().is_some_and(|(p, _)| p.iter().map(Vec::as_slice).eq(parents.iter().copied()));
        if !hit {
            let owner = self.owner;
            let created = |d: &Dir, n: &[u8]| meta::chown_at(d, n, owner);
            let dir = paths::open_parents(self.root, parents, true, created).map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
                    refuse("a parent directory is a symlink or a file".into())
                } else {
                    ExtractError::Io(format!("creating the parents of an entry: {e}"))
                }
            })?;
            self.cached_parent = Some((parents.iter().map(|p| p.to_vec()).collect(), Arc::new(dir)));
        }
        Ok(self.cached_parent.as_ref().expect("set above").1.clone())
    }

    /// If this path, or a directory on the way to it, is a file still
    /// queued, let the writer catch up so the order is the archive's.
    fn wait_for_queued(&mut self, parts: &[&[u8]]) -> Result<(), ExtractError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let mut prefix: Vec<u8> = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for (i, c) in parts.iter().enumerate() {
            if i > 0 {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(c);
            if self.queued.contains(&prefix) {
                return self.flush();
            }
        }
        Ok(())
    }

    /// Wait until the writer has written everything queued.
    fn flush(&mut self) -> Result<(), ExtractError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let stopped = || ExtractError::Io("the writer thread stopped".into());
        let (done_tx, done_rx) = sync_channel(1);
        self.writer.send(Job::Flush(done_tx)).map_err(|_| stopped())?;
        done_rx.recv().map_err(|_| stopped())?;
        self.queued.clear();
        Ok(())
    }
}

/// Copy exactly `len` bytes of the current member's data into `out`.
fn copy_data<R: io::BufRead>(
    tar: &mut tar::Reader<R>,
    out: &mut impl Write,
    mut len: u64,
    buf: &mut [u8],
    shown: &str,
) -> Result<(), ExtractError> {
    while len > 0 {
        let want = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        let n = tar.read_data(&mut buf[..want]).map_err(tar_error)?;
        if n == 0 {
            return Err(ExtractError::Corrupt(format!("the data of `{shown}` ends early")));
        }
        out.write_all(&buf[..n]).map_err(|e| write_error(shown, e))?;
        len -= n as u64;
    }
    Ok(())
}
