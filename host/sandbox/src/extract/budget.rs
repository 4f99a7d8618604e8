//! The archive's budgets enforced on the stream itself: compressed bytes
//! are counted as they are read, and the inflated side stops a read as
//! soon as the content or the compression ratio goes over, so a bomb is
//! stopped after a few MiB instead of after it has filled the disk.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Budgets, ExtractError};

/// Counts bytes read through it into a shared counter.
pub(super) struct Counted<R> {
    pub inner: R,
    pub count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Marker error raised from inside a read when a budget is blown, so the
/// real reason survives the reader and `io::copy` layers.
#[derive(Debug)]
pub(super) struct BudgetBlown(String);

impl std::fmt::Display for BudgetBlown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BudgetBlown {}

/// Framing per member on top of its content: a PAX header with its
/// records, a GNU long name and the member's own header, each padded to
/// 512 bytes, are a few KiB at most.
const FRAMING_PER_ENTRY: u64 = 4096;

/// Decompressed side: counts and enforces size and ratio budgets per read.
pub(super) struct Inflated<R> {
    pub inner: R,
    pub out: u64,
    pub compressed: Arc<AtomicU64>,
    pub budgets: Budgets,
}

impl<R: Read> Read for Inflated<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        // The content budget plus the framing of as many members as the
        // entry budget allows bounds the decompressed stream.
        let cap = self
            .budgets
            .max_total_bytes
            .saturating_add(self.budgets.max_entries.saturating_mul(FRAMING_PER_ENTRY))
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
                "compression ratio above {}:1 (a decompression bomb?); the limit is the runtime provider's \
                 `archive_max_compression_ratio` setting",
                self.budgets.max_compression_ratio
            ))));
        }
        Ok(n)
    }
}

/// An error while *reading* the archive: a blown budget, or else the archive
/// is not a valid `.tar.gz` (gzip and deflate errors arrive as plain I/O
/// errors). Write failures are classified where they happen.
pub(super) fn read_error(e: io::Error, what: &str) -> ExtractError {
    if let Some(b) = e.get_ref().and_then(|inner| inner.downcast_ref::<BudgetBlown>()) {
        return ExtractError::Budget(b.0.clone());
    }
    ExtractError::Corrupt(format!("{what}: {e}"))
}
