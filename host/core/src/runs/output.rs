//! Output capture: a command's stdout and stderr become `stdout`/`stderr`
//! events.
//!
//! Bytes are coalesced (up to `chunk_bytes`, or whatever arrived within
//! `flush_interval`), appended to the run's output log (see
//! [`output_log`](super::output_log)), made durable, and only then recorded
//! as an event holding the chunk's offset and length and `streamSha256`:
//! the digest of the stream's stored bytes from the start through this
//! chunk. Each byte is hashed once: the running stream digest is cloned
//! and finalized for each event, so the last event's `streamSha256` is the
//! evidence's stream digest (when nothing was cut by the cap), and every
//! event commits to everything stored before it. Each stream keeps at most
//! `cap_bytes`; past the cap one event says so (`truncated: true`) and the
//! rest is still counted and hashed for the evidence, never silently lost.

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
    hasher: Sha256,
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
    /// Hash and durably store one chunk; returns the events that record it,
    /// the chunk, and how many of its bytes were stored (at which offset).
    ///
    /// The hashing and the file work run off the runtime threads, side by
    /// side: hashing is CPU work and the durable write mostly waits on the
    /// disk.
    async fn store(&mut self, chunk: ChunkBuf) -> std::io::Result<(ChunkEvents, ChunkBuf, Option<(u64, usize)>)> {
        let mut events = Vec::new();
        if chunk.is_empty() {
            return Ok((events, chunk, None));
        }
        self.stats.bytes += chunk.len() as u64;
        let chunk_len = chunk.len();
        let room = self.cap.saturating_sub(self.stats.stored_bytes) as usize;
        let keep_len = chunk.len().min(room);
        let offset = self.stats.stored_bytes;
        let mut hasher = std::mem::take(&mut self.hasher);
        let mut log = self.log.take();
        let path = self.path.clone();
        let (hasher, log, digest, chunk) = tokio::task::spawn_blocking(move || {
            let (keep, rest) = chunk.as_slice().split_at(keep_len);
            if keep_len > 0 && log.is_none() {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                log = Some(LogWriter::create(&path)?);
            }
            let digest = std::thread::scope(|s| {
                let hashing = s.spawn(|| {
                    hasher.update(keep);
                    let digest = (keep_len > 0).then(|| hex::encode(hasher.clone().finalize()));
                    hasher.update(rest);
                    digest
                });
                let written = match log.as_mut() {
                    Some(log) if keep_len > 0 => log.append(keep),
                    _ => Ok(()),
                };
                let digest = hashing.join().map_err(|_| std::io::Error::other("output hashing panicked"))?;
                written.map(|()| digest)
            })?;
            Ok::<_, std::io::Error>((hasher, log, digest, chunk))
        })
        .await
        .map_err(std::io::Error::other)??;
        self.hasher = hasher;
        self.log = log;
        let stored = digest.is_some().then_some((offset, keep_len));
        if let Some(sha) = digest {
            self.stats.stored_bytes += keep_len as u64;
            events.push((self.kind, json!({ "offset": offset, "bytes": keep_len, "streamSha256": sha })));
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

/// Capture one stream until end-of-file; returns its totals.
///
/// Reading, storing and recording are pipelined, so the command never waits
/// on the disk for more than two chunks.
pub async fn capture(
    store: Store,
    hub: Arc<EventHub>,
    run_id: String,
    kind: EventType,
    mut reader: ByteStream,
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
        hasher: Sha256::new(),
        cap: settings.cap_bytes,
        cap_announced: false,
    };
    // Three stages, each its own task: reading the pipe, storing a chunk
    // (hash + durable write), recording it as an event. A chunk becomes an
    // event only once it is durable, and in order; while one is recorded
    // the next is stored and the one after that read.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ChunkBuf>(2);
    let (stored_tx, stored_rx) = tokio::sync::mpsc::channel::<Stored>(1);
    let recorder = tokio::spawn(record(sink.store.clone(), sink.hub.clone(), sink.run_id.clone(), stream, stored_rx));
    // Chunk buffers go back to the readers once stored (or, lent to the hub,
    // once the hub and its readers are done with them).
    let recycler = chunk_recycler();
    let lender = recycler.lender();
    let flusher = tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            let (events, chunk, stored) = sink.store(chunk).await?;
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
        sink.stats.sha256 = hex::encode(sink.hasher.finalize());
        Ok::<_, std::io::Error>(sink.stats)
    });
    // Chunks are read into block-aligned buffers: the log writes them to
    // disk from there, without a copy.
    // (At least one byte of room, or a read would look like end-of-file.)
    let chunk_bytes = settings.chunk_bytes.max(1);
    // Most commands print little: the first buffer (zeroed on allocation,
    // 4 MiB by default) comes from, and goes back to, the recycler too.
    let fresh = || {
        recycler.spare().filter(|b| b.capacity() == chunk_bytes).unwrap_or_else(|| ChunkBuf::with_capacity(chunk_bytes))
    };
    let mut buf = fresh();
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut eof = false;
    while !eof {
        let flush_due = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let full = tokio::select! {
            n = reader.read(buf.spare_mut()) => {
                let n = n?;
                buf.advance(n);
                eof = n == 0;
                if n > 0 {
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + settings.flush_interval);
                }
                buf.len() >= chunk_bytes
            }
            _ = flush_due => true,
        };
        if (full || eof) && !buf.is_empty() {
            let next = if eof { ChunkBuf::default() } else { fresh() };
            let chunk = std::mem::replace(&mut buf, next);
            if tx.send(chunk).await.is_err() {
                break;
            }
            deadline = None;
        }
    }
    drop(tx);
    if buf.capacity() == chunk_bytes {
        recycler.give_back(buf);
    }
    flusher.await.map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::output_log::ReadBuf;

    /// Every output event's bytes are in the log, the hub keeps the latest
    /// chunks with exactly the log's bytes, and the stream digest covers
    /// all of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn captured_chunks_are_logged_recorded_and_kept_for_live_readers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let boot = store.bootstrap().unwrap().unwrap();
        let spec = crate::runs::model::RunSpec { command: "yes".into(), template: "base".into(), ..Default::default() };
        store.create_run("wsr_t".into(), boot.org_id, boot.project_id, spec, None).await.unwrap();
        let hub = Arc::new(EventHub::default());
        let output: Vec<u8> = (0..10_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let writer = {
            let output = output.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                tx.write_all(&output).await.unwrap();
            })
        };
        let settings =
            OutputSettings { cap_bytes: 1 << 30, chunk_bytes: 1 << 20, flush_interval: Duration::from_secs(5) };
        let stats = capture(store.clone(), hub.clone(), "wsr_t".into(), EventType::Stdout, Box::new(rx), settings)
            .await
            .unwrap();
        writer.await.unwrap();
        assert_eq!(stats.bytes, output.len() as u64);
        assert_eq!(stats.sha256, hex::encode(Sha256::digest(&output)));
        let events = store.list_events("wsr_t".into(), 0, 1000).await.unwrap();
        let (mut next, mut kept) = (0u64, 0);
        for e in &events {
            let (offset, len) = (e.data["offset"].as_u64().unwrap(), e.data["bytes"].as_u64().unwrap());
            assert_eq!(offset, next, "chunks follow each other without gaps");
            next += len;
            let logged =
                read_chunk(dir.path(), "wsr_t", "stdout", offset, len, &mut ReadBuf::default()).unwrap().to_vec();
            assert_eq!(logged, &output[offset as usize..(offset + len) as usize]);
            if let Some(mem) = hub.cached_chunk("wsr_t", "stdout", offset, len) {
                assert_eq!(mem, logged, "the kept chunk is what the log holds");
                kept += 1;
            }
        }
        assert_eq!(next, output.len() as u64);
        assert!(kept >= 1 && kept <= 4, "the latest chunks are kept, and only a few ({kept})");
        let last = events.last().unwrap();
        assert_eq!(last.data["streamSha256"], stats.sha256);
    }
}
