//! Output capture: a command's stdout and stderr become `stdout`/`stderr`
//! events.
//!
//! Bytes are coalesced (up to `chunk_bytes`, or whatever arrived within
//! `flush_interval`), appended to the run's output log (see
//! [`output_log`](super::output_log)), made durable, and only then recorded
//! as an event holding the chunk's offset and length and `streamSha256`:
//! the digest of the stream's stored bytes from the start through this
//! chunk. Each byte is hashed once, as it is read: the running stream
//! digest is cloned and finalized for each event, so the last event's
//! `streamSha256` is the evidence's stream digest (when nothing was cut by
//! the cap), and every event commits to everything stored before it. Each
//! stream keeps at most `cap_bytes`; past the cap one event says so
//! (`truncated: true`) and the rest is still counted and hashed for the
//! evidence, never silently lost.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::ports::ByteStream;
use crate::runs::evidence::StreamStats;
use crate::runs::hub::EventHub;
use crate::runs::ids::{now_ms, rfc3339};
use crate::runs::model::EventType;
use crate::runs::output_log::{self, ChunkBuf, LogWriter};
use crate::runs::recycle::Recycler;
use crate::runs::store::Store;

/// Output settings.
#[derive(Debug, Clone, Copy)]
pub struct OutputSettings {
    pub cap_bytes: u64,
    pub chunk_bytes: usize,
    pub flush_interval: Duration,
}

impl Default for OutputSettings {
    fn default() -> Self {
        OutputSettings { cap_bytes: 16 << 20, chunk_bytes: 4 << 20, flush_interval: Duration::from_millis(50) }
    }
}

/// Where a run's output logs live.
pub fn log_path(data_dir: &Path, run_id: &str, stream: &str) -> PathBuf {
    data_dir.join("runs").join(run_id).join(format!("{stream}.log"))
}

/// Read `len` bytes at `offset` of a run's output log into `buf`, which the
/// caller may reuse from one chunk to the next.
pub fn read_chunk<'a>(
    data_dir: &Path,
    run_id: &str,
    stream: &str,
    offset: u64,
    len: u64,
    buf: &'a mut output_log::ReadBuf,
) -> std::io::Result<&'a [u8]> {
    output_log::read_into(&log_path(data_dir, run_id, stream), offset, len, buf)
}

struct Sink {
    store: Store,
    hub: Arc<EventHub>,
    run_id: String,
    kind: EventType,
    log: Option<LogWriter>,
    path: PathBuf,
    stats: StreamStats,
    cap: u64,
    cap_announced: bool,
}

/// The events that record one stored chunk.
type ChunkEvents = Vec<(EventType, serde_json::Value)>;

/// A stored chunk on its way to being recorded: its events, and the stored
/// bytes with their offset in the log, for the hub to keep for live readers.
struct Stored {
    events: ChunkEvents,
    chunk: Option<(u64, Bytes)>,
}

/// A chunk read from the command, hashed already.
struct Filled {
    buf: ChunkBuf,
    /// How many of its bytes the cap lets us store, and the stream digest
    /// through the last of them (none if the cap was reached before the
    /// chunk began).
    kept: Option<(usize, String)>,
    /// When the chunk's first byte was read (Unix ms): stdout and stderr
    /// are two pipes, and this is the best order between them there is.
    read_at_ms: u64,
}

/// Chunk buffers released by the hub and its readers, for every capture
/// loop to read into: a fresh 4 MiB buffer costs a page fault per 4 KiB
/// (~1.5 µs each here) as the pipe's bytes are copied in, and a run's
/// first chunks would otherwise always be fresh ones. At most
/// [`SPARE_CHUNKS`] wait (48 MiB at the default chunk size).
fn chunk_recycler() -> &'static Recycler<ChunkBuf> {
    static RECYCLER: std::sync::OnceLock<Recycler<ChunkBuf>> = std::sync::OnceLock::new();
    // Chunk sizes are configuration; a spare of another size is not taken.
    RECYCLER.get_or_init(|| Recycler::new(SPARE_CHUNKS, usize::MAX))
}

/// Enough for the chunks one stream has in flight and in the hub's cache.
const SPARE_CHUNKS: usize = 12;

impl Sink {
    /// Durably store one chunk (what the cap lets us keep of it); returns
    /// the events that record it, the chunk, and how many of its bytes were
    /// stored (at which offset).
    async fn store(&mut self, filled: Filled) -> std::io::Result<(ChunkEvents, ChunkBuf, Option<(u64, usize)>)> {
        let Filled { buf: chunk, kept, read_at_ms } = filled;
        let mut events = Vec::new();
        if chunk.is_empty() {
            return Ok((events, chunk, None));
        }
        self.stats.bytes += chunk.len() as u64;
        let chunk_len = chunk.len();
        let keep_len = kept.as_ref().map_or(0, |(len, _)| *len);
        let offset = self.stats.stored_bytes;
        let mut log = self.log.take();
        let path = self.path.clone();
        let (log, chunk) = tokio::task::spawn_blocking(move || {
            if keep_len > 0 {
                if log.is_none() {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    log = Some(LogWriter::create(&path)?);
                }
                if let Some(log) = log.as_mut() {
                    log.append(&chunk.as_slice()[..keep_len])?;
                }
            }
            Ok::<_, std::io::Error>((log, chunk))
        })
        .await
        .map_err(std::io::Error::other)??;
        self.log = log;
        let stored = kept.is_some().then_some((offset, keep_len));
        if let Some((_, sha)) = kept {
            self.stats.stored_bytes += keep_len as u64;
            events.push((
                self.kind,
                json!({ "offset": offset, "bytes": keep_len, "streamSha256": sha, "readAt": rfc3339(read_at_ms) }),
            ));
        }
        if keep_len < chunk_len && !self.cap_announced {
            self.cap_announced = true;
            self.stats.truncated = true;
            events.push((
                self.kind,
                json!({
                    "offset": self.stats.stored_bytes, "bytes": 0, "truncated": true, "capBytes": self.cap,
                    "message": format!(
                        "{} reached the {}-byte cap: further output is counted and hashed for the evidence but not stored",
                        self.kind.as_str(), self.cap
                    ),
                }),
            ));
        }
        Ok((events, chunk, stored))
    }
}

/// Record stored chunks as events, in order, hand their bytes to the hub,
/// and wake live readers.
async fn record(
    store: Store,
    hub: Arc<EventHub>,
    run_id: String,
    stream: &'static str,
    mut stored: tokio::sync::mpsc::Receiver<Stored>,
) -> std::io::Result<()> {
    while let Some(Stored { events, chunk }) = stored.recv().await {
        if events.is_empty() {
            continue;
        }
        let recorded = store.append_events(run_id.clone(), events).await.map_err(std::io::Error::other)?;
        if let Some((offset, bytes)) = chunk {
            hub.publish_chunk(&run_id, stream, offset, bytes);
        }
        if let Some(last) = recorded.last() {
            hub.notify(&run_id, last.seq);
        }
    }
    Ok(())
}

/// The most one read takes from the pipe: it is hashed right there, on a
/// runtime thread, and 64 KiB hash in ~30 µs.
const READ_MAX: usize = 64 << 10;

/// The first stage: reads the command's output into chunks and hashes each
/// read as it lands, so a chunk is hashed by the time it is full and the
/// stream digest's one sequential chain runs beside the command rather than
/// after each chunk is full.
struct Filler {
    reader: ByteStream,
    buf: ChunkBuf,
    /// Stream bytes before `buf`.
    before: u64,
    hasher: Sha256,
    /// The stream digest where the cap cut it, until its chunk is sent.
    cap_digest: Option<String>,
    cap: u64,
    chunk_bytes: usize,
    flush_interval: Duration,
    /// When the first byte of the chunk being filled was read.
    first_read_ms: Option<u64>,
}

impl Filler {
    fn new(reader: ByteStream, settings: OutputSettings) -> Filler {
        // At least one byte of room, or a read would look like end-of-file.
        let chunk_bytes = settings.chunk_bytes.max(1);
        Filler {
            reader,
            buf: Self::fresh(chunk_bytes),
            before: 0,
            hasher: Sha256::new(),
            cap_digest: None,
            cap: settings.cap_bytes,
            chunk_bytes,
            flush_interval: settings.flush_interval,
            first_read_ms: None,
        }
    }

    /// A buffer to read into. Chunks are read into block-aligned buffers:
    /// the log writes them to disk from there, without a copy. Most
    /// commands print little, so the first one (zeroed on allocation, 4 MiB
    /// by default) comes from, and goes back to, the recycler too.
    fn fresh(chunk_bytes: usize) -> ChunkBuf {
        chunk_recycler()
            .spare()
            .filter(|b| b.capacity() == chunk_bytes)
            .unwrap_or_else(|| ChunkBuf::with_capacity(chunk_bytes))
    }

    /// Hash the last `n` bytes of the buffer (just read), noting the
    /// digest where the stream reaches the cap.
    fn hash_read(&mut self, n: usize) {
        let len = self.buf.len();
        let bytes = &self.buf.as_slice()[len - n..];
        let start = self.before + (len - n) as u64;
        let end = start + n as u64;
        if start < self.cap && end >= self.cap {
            let (kept, rest) = bytes.split_at((self.cap - start) as usize);
            self.hasher.update(kept);
            self.cap_digest = Some(hex::encode(self.hasher.clone().finalize()));
            self.hasher.update(rest);
        } else {
            self.hasher.update(bytes);
        }
    }

    /// The buffer as a chunk, with what the cap lets us keep of it and the
    /// digest its event carries; `last`: no buffer is needed after it.
    fn take_chunk(&mut self, last: bool) -> Filled {
        let next = if last { ChunkBuf::default() } else { Self::fresh(self.chunk_bytes) };
        let buf = std::mem::replace(&mut self.buf, next);
        let room = self.cap.saturating_sub(self.before);
        let kept = (room > 0).then(|| {
            let digest = self.cap_digest.take().unwrap_or_else(|| hex::encode(self.hasher.clone().finalize()));
            (buf.len().min(usize::try_from(room).unwrap_or(usize::MAX)), digest)
        });
        self.before += buf.len() as u64;
        Filled { buf, kept, read_at_ms: self.first_read_ms.take().unwrap_or_else(now_ms) }
    }

    /// Read, hash and send chunks until the end of the stream (or until the
    /// next stage is gone). A chunk goes when it is full, at the end, or
    /// `flush_interval` after its first byte.
    async fn run(&mut self, chunks: &tokio::sync::mpsc::Sender<Filled>) -> std::io::Result<()> {
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let flush_due = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let spare = self.buf.spare_mut();
            let room = spare.len().min(READ_MAX);
            let (due, eof) = tokio::select! {
                n = self.reader.read(&mut spare[..room]) => {
                    let n = n?;
                    self.buf.advance(n);
                    self.hash_read(n);
                    if n > 0 {
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.flush_interval);
                        self.first_read_ms.get_or_insert_with(now_ms);
                    }
                    (self.buf.len() >= self.chunk_bytes, n == 0)
                }
                _ = flush_due => (true, false),
            };
            if (due || eof) && !self.buf.is_empty() {
                deadline = None;
                if chunks.send(self.take_chunk(eof)).await.is_err() {
                    return Ok(());
                }
            }
            if eof {
                return Ok(());
            }
        }
    }
}

/// Capture one stream until end-of-file; returns its totals.
///
/// Reading, storing and recording are pipelined, so the command never waits
/// on the disk for more than two chunks.
pub async fn capture(
    store: Store,
    hub: Arc<EventHub>,
    run_id: String,
    kind: EventType,
    reader: ByteStream,
    settings: OutputSettings,
) -> std::io::Result<StreamStats> {
    let stream = kind.as_str();
    let path = log_path(store.dir(), &run_id, stream);
    let mut sink = Sink {
        store,
        hub,
        run_id,
        kind,
        log: None,
        path,
        stats: StreamStats::default(),
        cap: settings.cap_bytes,
        cap_announced: false,
    };
    // Three stages, each its own task: reading the pipe (and hashing),
    // storing a chunk, recording it as an event. A chunk becomes an event
    // only once it is durable, and in order; while one is recorded the next
    // is stored and the one after that read.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Filled>(2);
    let (stored_tx, stored_rx) = tokio::sync::mpsc::channel::<Stored>(1);
    let recorder = tokio::spawn(record(sink.store.clone(), sink.hub.clone(), sink.run_id.clone(), stream, stored_rx));
    // Chunk buffers go back to the readers once stored (or, lent to the hub,
    // once the hub and its readers are done with them).
    let recycler = chunk_recycler();
    let lender = recycler.lender();
    let flusher = tokio::spawn(async move {
        while let Some(filled) = rx.recv().await {
            let (events, chunk, stored) = sink.store(filled).await?;
            // Nothing stored (past the cap): the buffer goes straight back.
            let lent = lender.lend(chunk);
            let chunk = stored.map(|(offset, len)| (offset, lent.slice(..len)));
            if stored_tx.send(Stored { events, chunk }).await.is_err() {
                break;
            }
        }
        drop(stored_tx);
        recorder.await.map_err(std::io::Error::other)??;
        if let Some(log) = sink.log.take() {
            tokio::task::spawn_blocking(move || log.finish()).await.map_err(std::io::Error::other)??;
        }
        Ok::<_, std::io::Error>(sink.stats)
    });
    let mut filler = Filler::new(reader, settings);
    let read = filler.run(&tx).await;
    drop(tx);
    let Filler { buf, hasher, chunk_bytes, .. } = filler;
    if buf.capacity() == chunk_bytes {
        recycler.give_back(buf);
    }
    let stats = flusher.await.map_err(std::io::Error::other)?;
    read?;
    let mut stats = stats?;
    stats.sha256 = hex::encode(hasher.finalize());
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::output_log::ReadBuf;

    /// Capture `output` (written in pieces of `piece` bytes) as run
    /// `wsr_t`'s stdout; returns the store's directory, the totals and
    /// the run's events.
    async fn capture_all(
        output: &[u8],
        piece: usize,
        settings: OutputSettings,
    ) -> (tempfile::TempDir, Arc<EventHub>, StreamStats, Vec<crate::runs::model::Event>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let boot = store.bootstrap().unwrap().unwrap();
        let spec = crate::runs::model::RunSpec { command: "yes".into(), template: "base".into(), ..Default::default() };
        store.create_run("wsr_t".into(), boot.org_id, boot.project_id, spec, Default::default(), None).await.unwrap();
        let hub = Arc::new(EventHub::default());
        let (mut tx, rx) = tokio::io::duplex(piece);
        let writer = {
            let output = output.to_vec();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                tx.write_all(&output).await.unwrap();
            })
        };
        let stats = capture(store.clone(), hub.clone(), "wsr_t".into(), EventType::Stdout, Box::new(rx), settings)
            .await
            .unwrap();
        writer.await.unwrap();
        let events = store.list_events("wsr_t".into(), 0, 10_000).await.unwrap();
        (dir, hub, stats, events)
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// Every output event's bytes are in the log, the hub keeps the latest
    /// chunks with exactly the log's bytes, and the stream digest covers
    /// all of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn captured_chunks_are_logged_recorded_and_kept_for_live_readers() {
        let output: Vec<u8> = (0..10_000_000u32).map(|i| (i % 251) as u8).collect();
        let settings =
            OutputSettings { cap_bytes: 1 << 30, chunk_bytes: 1 << 20, flush_interval: Duration::from_secs(5) };
        let (dir, hub, stats, events) = capture_all(&output, 1 << 16, settings).await;
        assert_eq!(stats.bytes, output.len() as u64);
        assert_eq!(stats.sha256, sha(&output));
        let (mut next, mut kept) = (0u64, 0);
        for e in &events {
            let (offset, len) = (e.data["offset"].as_u64().unwrap(), e.data["bytes"].as_u64().unwrap());
            assert_eq!(offset, next, "chunks follow each other without gaps");
            next += len;
            let logged =
                read_chunk(dir.path(), "wsr_t", "stdout", offset, len, &mut ReadBuf::default()).unwrap().to_vec();
            assert_eq!(logged, &output[offset as usize..(offset + len) as usize]);
            assert_eq!(
                e.data["streamSha256"],
                sha(&output[..next as usize]),
                "each event commits to the stream so far"
            );
            if let Some(mem) = hub.cached_chunk("wsr_t", "stdout", offset, len) {
                assert_eq!(mem, logged, "the kept chunk is what the log holds");
                kept += 1;
            }
        }
        assert_eq!(next, output.len() as u64);
        assert!((1..=4).contains(&kept), "the latest chunks are kept, and only a few ({kept})");
        let last = events.last().unwrap();
        assert_eq!(last.data["streamSha256"], stats.sha256);
    }

    /// Where the cap falls inside a read, inside a later chunk, or on a
    /// chunk's last byte, exactly the bytes before it are stored, each
    /// event's digest covers the stored stream up to its end, one event
    /// announces the cap, and the evidence's digest still covers every byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cap_cuts_storage_not_the_digest_wherever_it_falls() {
        let output: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let chunk = 256 << 10;
        for cap in [1_000u64, 700_001, 3 * chunk as u64, 2_999_999] {
            let settings =
                OutputSettings { cap_bytes: cap, chunk_bytes: chunk, flush_interval: Duration::from_secs(5) };
            let (dir, _hub, stats, events) = capture_all(&output, 100_000, settings).await;
            assert_eq!(
                (stats.bytes, stats.stored_bytes, stats.truncated),
                (output.len() as u64, cap, true),
                "cap {cap}"
            );
            assert_eq!(stats.sha256, sha(&output), "cap {cap}: the stream digest covers what was not stored too");
            let mut next = 0u64;
            let mut announced = 0;
            for e in &events {
                let len = e.data["bytes"].as_u64().unwrap();
                if e.data["truncated"] == true {
                    announced += 1;
                    assert_eq!((e.data["offset"].as_u64(), len), (Some(cap), 0), "cap {cap}");
                    continue;
                }
                assert_eq!(e.data["offset"].as_u64(), Some(next), "cap {cap}");
                next += len;
                assert_eq!(e.data["streamSha256"], sha(&output[..next as usize]), "cap {cap} at {next}");
            }
            assert_eq!((next, announced), (cap, 1), "cap {cap}");
            let logged = read_chunk(dir.path(), "wsr_t", "stdout", 0, cap, &mut ReadBuf::default()).unwrap().to_vec();
            assert_eq!(logged, &output[..cap as usize], "cap {cap}");
        }
    }
}
