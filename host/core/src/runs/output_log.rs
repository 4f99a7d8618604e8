//! A run's output log on disk: append-only, durable after every append, and
//! written and read with `O_DIRECT` where the filesystem allows it.
//!
//! Why direct I/O: a log is written once and read back a chunk at a time by
//! event readers, so the page cache buys nothing, and filling it is the most
//! expensive step of storing output (on the VMs we measured, a buffered
//! write into fresh page-cache pages runs at ~420 MB/s, a direct write at
//! ~2 GB/s with little CPU). Direct I/O wants block-aligned offsets, lengths
//! and buffers, so the writer keeps the log's last partial block in memory
//! and rewrites it, padded with zeros, together with the next append; the
//! file is cut to its exact length when the writer finishes. A crash can
//! leave zero padding after the last append: readers go by the offsets and
//! lengths in the events, never by the file's length. Filesystems without
//! `O_DIRECT` (tmpfs on older kernels, some overlays) get ordinary writes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Block size direct I/O is aligned to: a multiple of every logical block
/// size in use (512 and 4096).
const BLOCK: usize = 4096;

/// Space reserved ahead with `fallocate`, so appends do not allocate blocks
/// one write at a time.
const PREALLOCATE: u64 = 64 << 20;

fn round_up(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

/// A heap buffer whose usable part starts on a block boundary.
#[derive(Default)]
struct AlignedBuf {
    raw: Vec<u8>,
}

impl AlignedBuf {
    /// A block-aligned slice of exactly `len` bytes (a multiple of
    /// [`BLOCK`]), reusing the allocation when it is large enough.
    fn slice(&mut self, len: usize) -> &mut [u8] {
        if self.raw.len() < len + BLOCK {
            self.raw = vec![0u8; len + BLOCK];
        }
        let start = self.raw.as_ptr().align_offset(BLOCK);
        &mut self.raw[start..start + len]
    }
}

/// A buffer for one chunk of output that starts on a block boundary, so a
/// [`LogWriter`] can write it with direct I/O straight from where it was
/// read, without copying it into an aligned buffer first.
pub struct ChunkBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
    capacity: usize,
}

impl Default for ChunkBuf {
    /// No room at all, and no allocation.
    fn default() -> ChunkBuf {
        ChunkBuf { raw: Vec::new(), start: 0, len: 0, capacity: 0 }
    }
}

impl ChunkBuf {
    /// An empty buffer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> ChunkBuf {
        let raw = vec![0u8; capacity + BLOCK];
        let start = raw.as_ptr().align_offset(BLOCK);
        ChunkBuf { raw, start, len: 0, capacity }
    }

    /// The bytes held.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The free room after the bytes held, to read into.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start + self.len..self.start + self.capacity]
    }

    /// Count `n` more bytes of the free room as held.
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.capacity - self.len, "advanced past the buffer's room");
        self.len += n;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl AsRef<[u8]> for ChunkBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl super::recycle::Reusable for ChunkBuf {
    fn clear(&mut self) {
        ChunkBuf::clear(self)
    }
    fn room(&self) -> usize {
        self.capacity
    }
}

/// The writing end of one output log.
pub struct LogWriter {
    file: File,
    direct: bool,
    /// Bytes appended so far (the log's logical length).
    len: u64,
    /// The bytes of the last, partial block (`len % BLOCK` of them).
    tail: Vec<u8>,
    reserved: u64,
    buf: AlignedBuf,
}

fn open(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).write(true).truncate(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

impl LogWriter {
    /// Create (or truncate) the log at `path`.
    pub fn create(path: &Path) -> io::Result<LogWriter> {
        LogWriter::create_with(path, true)
    }

    fn create_with(path: &Path, try_direct: bool) -> io::Result<LogWriter> {
        let (file, direct) = match open(path, try_direct) {
            Ok(f) => (f, try_direct),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(path, false)?, false),
            Err(e) => return Err(e),
        };
        Ok(LogWriter { file, direct, len: 0, tail: Vec::new(), reserved: 0, buf: AlignedBuf::default() })
    }

    /// Whether appends bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The log's logical length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `bytes` and make them durable before returning.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let end = self.len + bytes.len() as u64;
        if end > self.reserved {
            let want = end.max(self.reserved + PREALLOCATE);
            // KEEP_SIZE: the reserved tail is not part of the file's length.
            let _ = rustix::fs::fallocate(
                &self.file,
                rustix::fs::FallocateFlags::KEEP_SIZE,
                self.reserved,
                want - self.reserved,
            );
            self.reserved = want;
        }
        if self.direct {
            match self.append_direct(bytes) {
                Ok(()) => {}
                // Some filesystems accept O_DIRECT at open and refuse the
                // write; they get ordinary writes from here on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct = false;
                    self.file.write_all_at(bytes, self.len)?;
                }
                Err(e) => return Err(e),
            }
        } else {
            self.file.write_all_at(bytes, self.len)?;
        }
        self.file.sync_data()?;
        self.len = end;
        if self.direct {
            let keep = (end % BLOCK as u64) as usize;
            let mut tail = std::mem::take(&mut self.tail);
            let total = tail.len() + bytes.len();
            // The new tail: the last `keep` bytes of old tail + bytes.
            let from_bytes = keep.min(bytes.len());
            let from_tail = keep - from_bytes;
            let old = tail.len();
            tail.drain(..old - from_tail);
            tail.extend_from_slice(&bytes[bytes.len() - from_bytes..]);
            debug_assert_eq!(total % BLOCK, tail.len());
            self.tail = tail;
        }
        Ok(())
    }

    fn append_direct(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut start = self.len - self.tail.len() as u64;
        let mut bytes = bytes;
        // Whole blocks of a block-aligned buffer (a `ChunkBuf`) following a
        // block boundary in the log are written from where they are.
        if self.tail.is_empty() && (bytes.as_ptr() as usize).is_multiple_of(BLOCK) {
            let whole = bytes.len() / BLOCK * BLOCK;
            write_all_at(&self.file, &bytes[..whole], start)?;
            start += whole as u64;
            bytes = &bytes[whole..];
            if bytes.is_empty() {
                return Ok(());
            }
        }
        let data = self.tail.len() + bytes.len();
        let padded = round_up(data);
        let tail_len = self.tail.len();
        let buf = self.buf.slice(padded);
        buf[..tail_len].copy_from_slice(&self.tail);
        buf[tail_len..data].copy_from_slice(bytes);
        buf[data..].fill(0);
        write_all_at(&self.file, buf, start)
    }

    /// Cut the file to its logical length (drops the zero padding of the
    /// last block) and make that durable.
    pub fn finish(self) -> io::Result<()> {
        if self.file.metadata()?.len() != self.len {
            self.file.set_len(self.len)?;
            self.file.sync_data()?;
        }
        Ok(())
    }
}

fn write_all_at(file: &File, buf: &[u8], at: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.write_at(&buf[done..], at + done as u64)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "output log write wrote nothing"));
        }
        done += n;
    }
    Ok(())
}

/// A reusable buffer for reading a log a chunk at a time: block-aligned for
/// direct I/O, and kept between reads so a reader streaming a run's output
/// does not allocate (and fault in) a fresh chunk-sized buffer per event.
#[derive(Default)]
pub struct ReadBuf {
    buf: AlignedBuf,
}

/// Read `len` bytes at `offset` of the log at `path` into `buf`, bypassing
/// the page cache where the filesystem allows it; returns the bytes read.
pub fn read_into<'a>(path: &Path, offset: u64, len: u64, buf: &'a mut ReadBuf) -> io::Result<&'a [u8]> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let direct = match OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => match read_direct(&f, offset, len, &mut buf.buf) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
            Err(e) => return Err(e),
            Ok(()) => true,
        },
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
        Err(e) => return Err(e),
    };
    if direct {
        let skip = (offset % BLOCK as u64) as usize;
        return Ok(&buf.buf.slice(round_up(skip + len))[skip..skip + len]);
    }
    let f = File::open(path)?;
    let out = &mut buf.buf.slice(round_up(len))[..len];
    f.read_exact_at(out, offset)?;
    Ok(out)
}

fn read_direct(f: &File, offset: u64, len: usize, buf: &mut AlignedBuf) -> io::Result<()> {
    let start = offset - offset % BLOCK as u64;
    let skip = (offset - start) as usize;
    let want = round_up(skip + len);
    let slice = buf.slice(want);
    let mut got = 0;
    while got < skip + len {
        let n = f.read_at(&mut slice[got..], start + got as u64)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "output log is shorter than its events say"));
        }
        got += n;
        // A direct read past a short final block returns what there is;
        // the next read must start on a block boundary again.
        if got % BLOCK != 0 && got < skip + len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "output log is shorter than its events say"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_at(path: &Path, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        read_into(path, offset, len, &mut ReadBuf::default()).map(<[u8]>::to_vec)
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Appends of awkward sizes read back exactly, at any offset, and the
    /// finished file has the exact length (on a filesystem with O_DIRECT;
    /// the test's temp dir may also exercise the fallback).
    #[test]
    fn appends_read_back_exactly() {
        for direct in [true, false] {
            appends_read_back_exactly_with(direct);
        }
    }

    fn appends_read_back_exactly_with(try_direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut w = LogWriter::create_with(&path, try_direct).unwrap();
        if !try_direct {
            assert!(!w.is_direct());
        }
        let mut all = Vec::new();
        for (i, n) in [1usize, 4095, 2, 4096, 10_000, 3, 65_536, 1_000_001].into_iter().enumerate() {
            let chunk = pattern(n, i as u8);
            let offset = all.len() as u64;
            w.append(&chunk).unwrap();
            all.extend_from_slice(&chunk);
            assert_eq!(w.len(), all.len() as u64);
            // Readable while the writer is still open, padding and all.
            assert_eq!(read_at(&path, offset, n as u64).unwrap(), chunk, "chunk {i}");
        }
        // Block-aligned chunk buffers, written from where they are when the
        // log is at a block boundary (and copied when it is not).
        // (`0`: an ordinary append up to the next block boundary.)
        for (i, n) in [0, 4096usize, 3 * 4096, 4096 + 7, 10, 8192, 0, 8192, 1 << 20].into_iter().enumerate() {
            if n == 0 {
                let fill = pattern((BLOCK - all.len() % BLOCK) % BLOCK, 1);
                w.append(&fill).unwrap();
                all.extend_from_slice(&fill);
                continue;
            }
            let mut chunk = ChunkBuf::with_capacity(n);
            let data = pattern(n, 100 + i as u8);
            chunk.spare_mut().copy_from_slice(&data);
            chunk.advance(n);
            assert_eq!(chunk.as_slice().as_ptr() as usize % BLOCK, 0);
            let offset = all.len() as u64;
            w.append(chunk.as_slice()).unwrap();
            all.extend_from_slice(&data);
            assert_eq!(read_at(&path, offset, n as u64).unwrap(), data, "aligned chunk {i}");
        }
        w.finish().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), all.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), all);
        for (off, len) in [(0u64, 1u64), (4095, 2), (4097, 9000), (all.len() as u64 - 5, 5)] {
            assert_eq!(read_at(&path, off, len).unwrap(), all[off as usize..(off + len) as usize]);
        }
        assert!(read_at(&path, all.len() as u64 - 5, 10).is_err(), "reading past the end is an error");
        // One reused buffer serves reads of any size and alignment in turn,
        // large after small and small after large.
        let mut buf = ReadBuf::default();
        for (off, len) in [(3u64, 10u64), (4097, 1_000_000), (1, 5), (0, all.len() as u64), (8191, 4098)] {
            let got = read_into(&path, off, len, &mut buf).unwrap();
            assert_eq!(got, &all[off as usize..(off + len) as usize], "read of {len} at {off}");
        }
    }
}
