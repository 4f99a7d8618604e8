//! A streaming tar reader that takes every member the way GNU tar's
//! extraction takes it: v7, ustar, star, old GNU, GNU and PAX headers; GNU
//! long names and links (the last of several wins); PAX extended (`x`,
//! the last one before a member wins) and global (`g`, in force until
//! changed) headers, of which path, linkpath, size and mtime are applied;
//! old GNU and PAX 0.0/0.1/1.0 sparse members; octal and base-256 numbers.
//!
//! Framing follows GNU tar, which is not what the size field alone says:
//! directories (also old-style ones, a regular-file type with a name ending
//! in `/`), symlinks, hardlinks and device nodes carry no data whatever
//! their size field says, and the first zero block ends the archive.
//!
//! Why our own reader: the `tar` crate (0.4) refuses a second GNU long name,
//! has no PAX sparse support, and frames old-style directories by their
//! size field, so archives GNU tar extracts correctly came out different.
//! This module only reads; what may be written where is decided by
//! `extract`.

pub mod header;
pub mod pax;
pub mod sparse;

use std::io::{self, BufRead, Read};

use header::{BLOCK, Header};
use pax::{Overrides, Records};
pub use sparse::SparseMap;

/// Extended headers and long names larger than this are refused: real ones
/// are a few hundred bytes (a path is at most 4 KiB; xattrs rarely more).
pub const MAX_META_BYTES: u64 = 1 << 20;

/// A modification time: seconds since the epoch (negative before it) and
/// nanoseconds within the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mtime {
    pub secs: i64,
    pub nanos: u32,
}

/// What a member is, as GNU tar extracts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
    /// A type flag GNU tar does not know (it would extract it as a file).
    Unknown(u8),
}

/// One member, with its extended headers applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits (including setuid, setgid and sticky).
    pub mode: u32,
    pub mtime: Mtime,
    /// Symlink or hardlink target.
    pub link: Vec<u8>,
    /// Bytes of data to read with [`Reader::read_data`]: a regular file's
    /// content, or a sparse file's stored regions, concatenated.
    pub size: u64,
    pub sparse: Option<SparseMap>,
}

/// Why reading stopped.
#[derive(Debug)]
pub enum TarError {
    /// Not a tar archive from here on (bad checksum, bad number, cut short).
    Corrupt(String),
    /// One member cannot be taken as GNU tar would take it.
    Member { entry: Vec<u8>, reason: String },
    /// An extended header or long name over [`MAX_META_BYTES`].
    TooLarge(String),
    /// The underlying stream failed (budgets raise their errors here).
    Io(io::Error),
}

impl From<io::Error> for TarError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return TarError::Corrupt("the archive ends in the middle of a member".into());
        }
        TarError::Io(e)
    }
}

/// Reads members one by one from an uncompressed tar stream.
pub struct Reader<R> {
    src: R,
    /// Data of the current member not read yet, then its block padding.
    left: u64,
    pad: u64,
    /// Records of the global headers seen so far, and what they override.
    globals: Records,
    global_overrides: Overrides,
    /// Bytes consumed, for error messages.
    offset: u64,
    done: bool,
}

impl<R: BufRead> Reader<R> {
    pub fn new(src: R) -> Self {
        Reader {
            src,
            left: 0,
            pad: 0,
            globals: Records::default(),
            global_overrides: Overrides::default(),
            offset: 0,
            done: false,
        }
    }

    /// The next member, or `None` at the end of the archive. Data of the
    /// previous member not read is skipped.
    pub fn next_member(&mut self) -> Result<Option<Member>, TarError> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.left.saturating_add(self.pad))?;
        (self.left, self.pad) = (0, 0);
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut local: Option<Records> = None;
        loop {
            let at = self.offset;
            let Some(block) = self.block()? else {
                self.done = true;
                return Ok(None);
            };
            let h = Header(&block);
            // GNU tar stops at the first zero block (a lone one only gets
            // a warning), and at the end of the stream.
            if h.is_zero() {
                self.done = true;
                return Ok(None);
            }
            if !h.checksum_ok() {
                return Err(TarError::Corrupt(format!("no valid tar header at byte {at}")));
            }
            let size = h.size().map_err(|e| bad_number(&h, e))?;
            let meta = |size: u64, what: &str| {
                if size > MAX_META_BYTES {
                    Err(TarError::TooLarge(format!("{what} of {size} bytes (at most {MAX_META_BYTES})")))
                } else {
                    Ok(())
                }
            };
            match h.typeflag() {
                b'L' => {
                    meta(size, "a long name")?;
                    long_name = Some(cstr(self.meta_data(size)?));
                }
                b'K' => {
                    meta(size, "a long link target")?;
                    long_link = Some(cstr(self.meta_data(size)?));
                }
                // `X`: the Solaris predecessor of `x`, read alike by GNU tar.
                t @ (b'x' | b'X' | b'g') => {
                    meta(size, "an extended header")?;
                    let data = self.meta_data(size)?;
                    let records = Records::parse(&data).map_err(|e| TarError::Member {
                        entry: h.name(),
                        reason: format!("a malformed extended header: {e}"),
                    })?;
                    if t == b'g' {
                        let refuse = |e: String| TarError::Member {
                            entry: h.name(),
                            reason: format!("global extended header: {e}"),
                        };
                        self.globals.merge_global(records).map_err(refuse)?;
                        let mut over = Overrides::default();
                        over.apply(&self.globals).map_err(refuse)?;
                        self.global_overrides = over;
                    } else {
                        local = Some(records);
                    }
                }
                // A volume label names the archive, not a member.
                b'V' => self.skip(padded(size))?,
                _ => return self.member(&h, size, long_name, long_link, local).map(Some),
            }
        }
    }

    fn member(
        &mut self,
        h: &Header,
        size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        local: Option<Records>,
    ) -> Result<Member, TarError> {
        let mut path = long_name.unwrap_or_else(|| h.name());
        let refuse = |path: &[u8], reason: String| TarError::Member { entry: path.to_vec(), reason };
        let mode = h.mode().map_err(|e| bad_number(h, e))?;
        let mut over = self.global_overrides.clone();
        if let Some(local) = &local {
            over.apply(local).map_err(|e| refuse(&path, format!("extended header: {e}")))?;
        }
        if let Some(p) = over.path {
            path = p;
        }
        let link = over.link.or(long_link).unwrap_or_else(|| h.link_name());
        let size = over.size.unwrap_or(size);
        let mtime = match over.mtime {
            Some(t) => t,
            None => h.mtime().map_err(|e| bad_number(h, e))?,
        };
        let typeflag = h.typeflag();
        let kind = match typeflag {
            // Old archives mark directories by a trailing slash alone.
            b'0' | 0 | b'7' if path.last() == Some(&b'/') => Kind::Dir,
            b'0' | 0 | b'7' | b'S' => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' | b'D' => Kind::Dir,
            b'6' => Kind::Fifo,
            other => Kind::Unknown(other),
        };
        // What follows the header: GNU tar reads no data for directories,
        // links and nodes, whatever their size says; an incremental dump's
        // directory (`D`) carries a listing it skips.
        let readable = if matches!(kind, Kind::File | Kind::Unknown(_)) { size } else { 0 };
        let framed = if typeflag == b'D' { size } else { readable };
        (self.left, self.pad) = (readable, padded(framed) - readable);
        let mut member = Member { path, kind, mode, mtime, link, size: 0, sparse: None };
        if kind != Kind::File {
            return Ok(member);
        }
        member.size = readable;
        if typeflag == b'S' {
            member.sparse = Some(self.old_gnu_sparse(h, &member.path)?);
        } else if let Some(form) = local.as_ref().and_then(sparse::pax_form) {
            let local = local.as_ref().expect("checked above");
            if let Some(name) = local.get(b"GNU.sparse.name").filter(|n| !n.is_empty()) {
                member.path = name.to_vec();
            }
            let real_size = sparse::pax_real_size(local).map_err(|e| refuse(&member.path, e))?;
            let regions = match form {
                sparse::PaxSparse::InRecords => sparse::pax_regions(local).map_err(|e| refuse(&member.path, e))?,
                sparse::PaxSparse::InData => {
                    sparse::check_version(local).map_err(|e| refuse(&member.path, e))?;
                    let (regions, used) = self.map_from_data().map_err(|e| match e {
                        TarError::Member { reason, .. } => refuse(&member.path, reason),
                        other => other,
                    })?;
                    member.size = readable - used;
                    regions
                }
            };
            member.sparse = Some(SparseMap { real_size, regions });
        }
        if let Some(map) = &member.sparse {
            map.validate(member.size).map_err(|e| refuse(&member.path, e))?;
        }
        Ok(member)
    }

    /// The map of an old GNU sparse member: four entries in its header,
    /// more in extension blocks (not counted in the member's size).
    fn old_gnu_sparse(&mut self, h: &Header, path: &[u8]) -> Result<SparseMap, TarError> {
        let refuse = |reason: String| TarError::Member { entry: path.to_vec(), reason };
        let header::OldSparse { mut regions, mut extended, real_size } =
            h.gnu_sparse().map_err(|e| refuse(format!("bad {}", e.0)))?;
        while extended {
            let block =
                self.block()?.ok_or_else(|| TarError::Corrupt("the archive ends inside a sparse map".into()))?;
            let (more, again) = header::gnu_sparse_extension(&block).map_err(|e| refuse(format!("bad {}", e.0)))?;
            regions.extend(more);
            if regions.len() > sparse::MAX_REGIONS {
                return Err(refuse("too many sparse regions".into()));
            }
            extended = again;
        }
        Ok(SparseMap { real_size, regions })
    }

    /// The 1.0 sparse map at the start of the data, and the bytes it took.
    fn map_from_data(&mut self) -> Result<(Vec<(u64, u64)>, u64), TarError> {
        let mut failure: Option<TarError> = None;
        let result = sparse::read_map_1_0(|| {
            if self.left < BLOCK as u64 {
                return Err("the sparse map runs past the member's data".into());
            }
            let mut block = [0u8; BLOCK];
            match self.src.read_exact(&mut block) {
                Ok(()) => {
                    self.left -= BLOCK as u64;
                    self.offset += BLOCK as u64;
                    Ok(block)
                }
                Err(e) => {
                    failure = Some(e.into());
                    Err(String::new())
                }
            }
        });
        match (result, failure) {
            (_, Some(e)) => Err(e),
            (Ok(r), None) => Ok(r),
            (Err(reason), None) => Err(TarError::Member { entry: Vec::new(), reason }),
        }
    }

    /// Read the current member's data (see [`Member::size`]); 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.src.read(&mut buf[..want])?;
        if n == 0 {
            return Err(TarError::Corrupt("the archive ends in the middle of a member".into()));
        }
        self.left -= n as u64;
        self.offset += n as u64;
        Ok(n)
    }

    /// Append all of the current member's data to `out`.
    pub fn read_data_to_end(&mut self, out: &mut Vec<u8>) -> Result<(), TarError> {
        let want = self.left;
        let got = (&mut self.src).take(want).read_to_end(out)? as u64;
        self.left -= got;
        self.offset += got;
        if got < want {
            return Err(TarError::Corrupt("the archive ends in the middle of a member".into()));
        }
        Ok(())
    }

    /// The data of a long name or an extended header (with its padding).
    fn meta_data(&mut self, size: u64) -> Result<Vec<u8>, TarError> {
        let mut data = Vec::with_capacity(size as usize);
        (&mut self.src).take(size).read_to_end(&mut data)?;
        if (data.len() as u64) < size {
            return Err(TarError::Corrupt("the archive ends inside an extended header".into()));
        }
        self.offset += size;
        self.skip(padded(size) - size)?;
        Ok(data)
    }

    /// One whole block, or `None` at a clean end of the stream.
    fn block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut block = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            match self.src.read(&mut block[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(TarError::Corrupt("the archive ends inside a header".into())),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.offset += BLOCK as u64;
        Ok(Some(block))
    }

    fn skip(&mut self, mut n: u64) -> Result<(), TarError> {
        while n > 0 {
            let avail = self.src.fill_buf()?;
            if avail.is_empty() {
                return Err(TarError::Corrupt("the archive ends in the middle of a member".into()));
            }
            let take = avail.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            self.src.consume(take);
            n -= take as u64;
            self.offset += take as u64;
        }
        Ok(())
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64)
}

fn cstr(data: Vec<u8>) -> Vec<u8> {
    let mut data = data;
    if let Some(n) = data.iter().position(|b| *b == 0) {
        data.truncate(n);
    }
    data
}

fn bad_number(h: &Header, e: header::BadNumber) -> TarError {
    TarError::Corrupt(format!("bad {} field in the header of `{}`", e.0, String::from_utf8_lossy(&h.name())))
}

#[cfg(test)]
mod tests;
