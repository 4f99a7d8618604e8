//! Safe, streaming extraction of `.tar.gz` archives into a workspace.
//!
//! Every byte of an archive is hostile. In one pass the stream is counted,
//! inflated (zlib-rs) and unpacked entry by entry through a `cap_std::Dir`:
//!
//! - allowed: regular files, directories, and symlinks whose target resolves
//!   lexically inside the workspace;
//! - refused, naming the entry: absolute paths (we do not re-root them: a
//!   well-formed repo archive never needs it), `..` components, hardlinks,
//!   device, FIFO and socket nodes, names over the limits, entries that would
//!   pass through a symlink, absolute symlink targets;
//! - masked: setuid, setgid and sticky bits (counted in the report);
//! - budgets, enforced while streaming on decompressed bytes: total size,
//!   entry count, depth, path length, compression ratio.
//!
//! The `tar` crate's own `unpack` silently skips `../` entries; it is not used.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::fs::PermissionsExt as _;
use cap_std::fs::{Dir, OpenOptions, Permissions};
use tar::EntryType;

use crate::paths::{self, PathProblem};

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

/// Totals of a successful extraction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub archive_bytes: u64,
    pub content_bytes: u64,
    pub entries: u64,
    pub masked_modes: u64,
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

/// Counts bytes read through it into a shared counter.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Marker error raised from inside a read when a budget is blown, so the
/// real reason survives the `tar` and `io::copy` layers.
#[derive(Debug)]
struct BudgetBlown(String);

impl std::fmt::Display for BudgetBlown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BudgetBlown {}

/// Decompressed side: counts and enforces size and ratio budgets per read.
struct Inflated<R> {
    inner: R,
    out: u64,
    compressed: Arc<AtomicU64>,
    budgets: Budgets,
}

impl<R: Read> Read for Inflated<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        // Tar framing adds at most ~1 KiB per entry on top of content, so the
        // content budget plus a margin bounds the decompressed stream.
        let cap = self
            .budgets
            .max_total_bytes
            .saturating_add(self.budgets.max_entries.saturating_mul(1536))
            .saturating_add(1 << 20);
        if self.out > cap {
            return Err(io::Error::other(BudgetBlown(format!(
                "more than {} bytes of content",
                self.budgets.max_total_bytes
            ))));
        }
        let compressed = self.compressed.load(Ordering::Relaxed).max(1);
        if self.out > (1 << 20) && self.out / compressed > u64::from(self.budgets.max_compression_ratio) {
            return Err(io::Error::other(BudgetBlown(format!(
                "compression ratio above {}:1 (a decompression bomb?)",
                self.budgets.max_compression_ratio
            ))));
        }
        Ok(n)
    }
}

/// An error while *reading* the archive: a blown budget, or else the archive
/// is not a valid `.tar.gz` (gzip, deflate and tar parse errors all arrive
/// as plain I/O errors). Write failures are classified where they happen.
fn io_to_extract(e: io::Error, what: &str) -> ExtractError {
    if let Some(b) = e.get_ref().and_then(|inner| inner.downcast_ref::<BudgetBlown>()) {
        return ExtractError::Budget(b.0.clone());
    }
    ExtractError::Corrupt(format!("{what}: {e}"))
}

/// The process umask, read from `/proc/self/status` (calling `umask(2)` to
/// read it would change it for every thread for a moment). Unknown → assume
/// it masks everything, so modes are always fixed up explicitly.
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Umask:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

/// Who should own extracted entries (the sandbox's host uid and gid).
pub type Owner = Option<(u32, u32)>;

fn chown(dir: &Dir, name: &[u8], owner: Owner) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        rustix::fs::chownat(
            dir,
            paths::os(name),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(())
}

/// Whether `target`, relative to the directory holding the link at depth
/// `link_parent_depth`, stays inside the workspace root.
fn symlink_stays_inside(link_parents: &[&[u8]], target: &[u8]) -> Result<(), String> {
    if target.is_empty() {
        return Err("empty symlink target".into());
    }
    if target.first() == Some(&b'/') {
        return Err("absolute symlink targets are not allowed".into());
    }
    let mut depth = link_parents.len() as i64;
    for c in target.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return Err("symlink target points outside the workspace".into());
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Regular files up to this size are handed to the writer thread whole.
const HANDOFF_MAX: u64 = 256 * 1024;
/// Files queued for the writer at most (bounds memory: 64 × 256 KiB).
const QUEUE: usize = 64;

/// Work for the writer thread, in archive order.
enum Job {
    File {
        dir: Arc<Dir>,
        name: Vec<u8>,
        shown: String,
        mode: u32,
        data: Vec<u8>,
    },
    /// Reply once everything before this is written.
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Create one regular file with its content, mode and owner.
fn write_file(
    dir: &Dir,
    name: &[u8],
    shown: &str,
    mode: u32,
    umask: u32,
    owner: Owner,
    content: &mut dyn FnMut(&mut cap_std::fs::File) -> Result<(), ExtractError>,
) -> Result<(), ExtractError> {
    let refuse = |reason: &str| ExtractError::Refused { entry: shown.to_string(), reason: reason.to_string() };
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    // Created with its final mode when the umask cannot alter it (saves an
    // fchmod per file); fixed up below otherwise.
    cap_std::fs::OpenOptionsExt::mode(&mut opts, if mode & umask == 0 { mode } else { 0o600 });
    cap_std::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW);
    let opened_err = |e: io::Error| match e.raw_os_error() {
        Some(libc::ELOOP) => refuse("a symlink of that name already exists"),
        Some(libc::EISDIR) => refuse("a directory of that name already exists"),
        _ => ExtractError::Io(format!("creating `{shown}`: {e}")),
    };
    // A path that appears twice in an archive: the later entry replaces
    // the file, content and mode (an open of an existing file would keep
    // the first entry's mode).
    let (mut file, replaced) = match dir.open_with(paths::os(name), &opts) {
        Ok(f) => (f, false),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let mut again = OpenOptions::new();
            again.write(true).truncate(true);
            cap_std::fs::OpenOptionsExt::custom_flags(&mut again, libc::O_NOFOLLOW);
            (dir.open_with(paths::os(name), &again).map_err(opened_err)?, true)
        }
        Err(e) => return Err(opened_err(e)),
    };
    content(&mut file)?;
    if mode & umask != 0 || replaced {
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| ExtractError::Io(format!("setting the mode of `{shown}`: {e}")))?;
    }
    drop(file);
    chown(dir, name, owner).map_err(|e| ExtractError::Io(format!("chown `{shown}`: {e}")))
}

fn write_error(shown: &str, e: io::Error) -> ExtractError {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            ExtractError::Budget(format!("the workspace is full while writing `{shown}`"))
        }
        _ => ExtractError::Io(format!("writing `{shown}`: {e}")),
    }
}

/// Extract the `.tar.gz` read from `archive` into `root`. `progress` gets
/// (content bytes, entries) after every entry.
///
/// Two threads share the work: this one inflates, parses and checks every
/// entry and creates directories and symlinks; a writer thread creates the
/// small regular files (most of a repository), in archive order. An entry
/// whose path meets a file still queued waits for the writer first, so the
/// result (and every refusal) is the same as writing one entry at a time.
pub fn extract_tar_gz(
    archive: impl Read,
    root: &Dir,
    budgets: Budgets,
    owner: Owner,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, ExtractError> {
    let umask = current_umask();
    let failed: std::sync::Mutex<Option<ExtractError>> = std::sync::Mutex::new(None);
    let has_failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let writer = scope.spawn(|| {
            for job in rx {
                match job {
                    Job::Flush(done) => {
                        let _ = done.send(());
                    }
                    Job::File { .. } if has_failed.load(Ordering::Relaxed) => {}
                    Job::File { dir, name, shown, mode, data } => {
                        let r = write_file(&dir, &name, &shown, mode, umask, owner, &mut |f| {
                            f.write_all(&data).map_err(|e| write_error(&shown, e))
                        });
                        if let Err(e) = r {
                            failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                            has_failed.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        let result = extract_entries(archive, root, budgets, owner, umask, progress, &tx, &has_failed);
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

#[allow(clippy::too_many_arguments)]
fn extract_entries(
    archive: impl Read,
    root: &Dir,
    budgets: Budgets,
    owner: Owner,
    umask: u32,
    progress: &mut dyn FnMut(u64, u64),
    writer: &std::sync::mpsc::SyncSender<Job>,
    writer_failed: &std::sync::atomic::AtomicBool,
) -> Result<Report, ExtractError> {
    let compressed = Arc::new(AtomicU64::new(0));
    let counted = Counted { inner: archive, count: compressed.clone() };
    let gz = flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(256 * 1024, counted));
    let inflated = Inflated { inner: gz, out: 0, compressed: compressed.clone(), budgets };
    let mut tar = tar::Archive::new(inflated);
    let mut report = Report::default();
    let entries = tar.entries().map_err(|e| io_to_extract(e, "reading the archive"))?;
    let mut buf = vec![0u8; 256 * 1024];
    // Archives list files directory by directory: keep the last parent open
    // instead of walking (and opening) every component for every entry.
    let mut cached_parent: Option<(Vec<Vec<u8>>, Arc<Dir>)> = None;
    // Paths of files handed to the writer since it was last flushed.
    let mut queued: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    let flush = |queued: &mut std::collections::HashSet<Vec<u8>>| -> Result<(), ExtractError> {
        if queued.is_empty() {
            return Ok(());
        }
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        writer.send(Job::Flush(done_tx)).map_err(|_| ExtractError::Io("the writer thread stopped".into()))?;
        done_rx.recv().map_err(|_| ExtractError::Io("the writer thread stopped".into()))?;
        queued.clear();
        Ok(())
    };
    for entry in entries {
        if writer_failed.load(Ordering::Relaxed) {
            return Err(ExtractError::Io("an earlier entry failed".into()));
        }
        let mut entry = entry.map_err(|e| io_to_extract(e, "reading the next entry"))?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let refuse = |reason: String| ExtractError::Refused { entry: shown.clone(), reason };
        let kind = entry.header().entry_type();
        report.entries += 1;
        if report.entries > budgets.max_entries {
            return Err(ExtractError::Budget(format!("more than {} entries", budgets.max_entries)));
        }
        let parts = match paths::components(&raw_path, budgets.max_path_bytes as usize, budgets.max_depth as usize) {
            Ok(p) => p,
            // A bare `./` directory entry is the archive root itself.
            Err(PathProblem::Empty) if kind == EntryType::Directory => continue,
            Err(p) => return Err(refuse(p.to_string())),
        };
        // This path, or a directory on the way to it, is a file still
        // queued: let the writer catch up so the order is the archive's.
        if !queued.is_empty() {
            let mut prefix: Vec<u8> = Vec::with_capacity(raw_path.len());
            let mut meets = false;
            for (i, c) in parts.iter().enumerate() {
                if i > 0 {
                    prefix.push(b'/');
                }
                prefix.extend_from_slice(c);
                if queued.contains(&prefix) {
                    meets = true;
                    break;
                }
            }
            if meets {
                flush(&mut queued)?;
            }
        }
        let (name, parents) = parts.split_last().expect("components are never empty");
        let hit = cached_parent.as_ref().is_some_and(|(p, _)| p.iter().map(Vec::as_slice).eq(parents.iter().copied()));
        if !hit {
            let created = |d: &Dir, n: &[u8]| chown(d, n, owner);
            let dir = paths::open_parents(root, parents, true, created).map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
                    refuse("a parent directory is a symlink or a file".into())
                } else {
                    ExtractError::Io(format!("creating the parents of `{shown}`: {e}"))
                }
            })?;
            cached_parent = Some((parents.iter().map(|p| p.to_vec()).collect(), Arc::new(dir)));
        }
        let dir = cached_parent.as_ref().expect("set above").1.clone();
        let mode = entry.header().mode().unwrap_or(0o644);
        if mode & 0o7000 != 0 {
            report.masked_modes += 1;
        }
        let mode = mode & 0o777;
        let name_os = paths::os(name);
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.header().size().map_err(|e| io_to_extract(e, "reading an entry size"))?;
                if report.content_bytes + size > budgets.max_total_bytes {
                    return Err(ExtractError::Budget(format!(
                        "more than {} bytes of content",
                        budgets.max_total_bytes
                    )));
                }
                if size <= HANDOFF_MAX {
                    let mut data = Vec::with_capacity(size as usize);
                    (&mut entry)
                        .take(HANDOFF_MAX + 1)
                        .read_to_end(&mut data)
                        .map_err(|e| io_to_extract(e, &format!("reading `{shown}`")))?;
                    report.content_bytes += data.len() as u64;
                    let path = parts.join(&b'/');
                    writer
                        .send(Job::File { dir, name: name.to_vec(), shown: shown.clone(), mode, data })
                        .map_err(|_| ExtractError::Io("the writer thread stopped".into()))?;
                    queued.insert(path);
                } else {
                    flush(&mut queued)?;
                    let mut written = 0u64;
                    write_file(&dir, name, &shown, mode, umask, owner, &mut |file| {
                        loop {
                            let n =
                                entry.read(&mut buf).map_err(|e| io_to_extract(e, &format!("reading `{shown}`")))?;
                            if n == 0 {
                                return Ok(());
                            }
                            file.write_all(&buf[..n]).map_err(|e| write_error(&shown, e))?;
                            written += n as u64;
                        }
                    })?;
                    report.content_bytes += written;
                }
            }
            EntryType::Directory => {
                match dir.create_dir(name_os) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let meta = dir.symlink_metadata(name_os).map_err(|e| ExtractError::Io(e.to_string()))?;
                        if !meta.is_dir() {
                            return Err(refuse("a file or symlink of that name already exists".into()));
                        }
                    }
                    Err(e) => return Err(ExtractError::Io(format!("creating `{shown}`: {e}"))),
                }
                // Keep directories writable by their owner so later entries fit.
                dir.set_permissions(name_os, Permissions::from_mode(mode | 0o700))
                    .map_err(|e| ExtractError::Io(format!("setting the mode of `{shown}`: {e}")))?;
                chown(&dir, name, owner).map_err(|e| ExtractError::Io(format!("chown `{shown}`: {e}")))?;
            }
            EntryType::Symlink => {
                let target =
                    entry.link_name_bytes().ok_or_else(|| refuse("symlink without a target".into()))?.into_owned();
                symlink_stays_inside(parents, &target).map_err(refuse)?;
                dir.symlink(paths::os(&target), name_os).map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => refuse("an entry of that name already exists".into()),
                    _ => ExtractError::Io(format!("creating symlink `{shown}`: {e}")),
                })?;
                chown(&dir, name, owner).map_err(|e| ExtractError::Io(format!("chown `{shown}`: {e}")))?;
            }
            EntryType::Link => return Err(refuse("hardlinks are not allowed".into())),
            EntryType::Char | EntryType::Block => return Err(refuse("device nodes are not allowed".into())),
            EntryType::Fifo => return Err(refuse("FIFOs are not allowed".into())),
            other => return Err(refuse(format!("entry type {other:?} is not allowed"))),
        }
        progress(report.content_bytes, report.entries);
    }
    flush(&mut queued)?;
    report.archive_bytes = compressed.load(Ordering::Relaxed);
    Ok(report)
}
