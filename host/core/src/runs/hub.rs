//! Live notification of new events: a watch channel per run carrying the
//! highest stored seq. Readers always read events from the store; the hub
//! only says "there is more", so nothing can be seen before it is durable.
//!
//! The hub also keeps the most recently stored output chunks in memory
//! (bounded per stream and in total), published only once their event is
//! recorded: a reader following a run live gets a chunk's bytes from here
//! instead of reading back from disk what was written a moment ago. A miss
//! (a reader further behind, or the budget spent) reads the log as before.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::watch;

/// Chunks kept per run and stream: enough for a reader a few events behind.
const CHUNKS_PER_STREAM: usize = 4;

/// Bytes of chunks kept in memory across all runs.
const CHUNK_BUDGET: usize = 64 << 20;

pub struct EventHub {
    runs: Mutex<HashMap<String, watch::Sender<u64>>>,
    chunks: Mutex<ChunkCache>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::with_chunk_budget(CHUNK_BUDGET)
    }
}

/// Recently stored output chunks, oldest first.
struct ChunkCache {
    entries: VecDeque<CachedChunk>,
    bytes: usize,
    budget: usize,
}

struct CachedChunk {
    run_id: String,
    stream: &'static str,
    offset: u64,
    bytes: Bytes,
}

impl EventHub {
    /// A hub keeping at most `budget` bytes of recent output chunks.
    pub fn with_chunk_budget(budget: usize) -> Self {
        EventHub {
            runs: Mutex::default(),
            chunks: Mutex::new(ChunkCache { entries: VecDeque::new(), bytes: 0, budget }),
        }
    }

    /// Keep a just-recorded output chunk (`bytes` stored at `offset` of the
    /// run's `stream` log) for live readers.
    pub fn publish_chunk(&self, run_id: &str, stream: &'static str, offset: u64, bytes: Bytes) {
        let mut cache = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        if bytes.len() > cache.budget {
            return;
        }
        let same = |c: &CachedChunk| c.run_id == run_id && c.stream == stream;
        if cache.entries.iter().filter(|c| same(c)).count() >= CHUNKS_PER_STREAM
            && let Some(at) = cache.entries.iter().position(same)
        {
            let old = cache.entries.remove(at).expect("found above");
            cache.bytes -= old.bytes.len();
        }
        cache.bytes += bytes.len();
        cache.entries.push_back(CachedChunk { run_id: run_id.to_string(), stream, offset, bytes });
        while cache.bytes > cache.budget {
            let Some(old) = cache.entries.pop_front() else { break };
            cache.bytes -= old.bytes.len();
        }
    }

    /// `len` bytes at `offset` of a run's `stream` log, if a kept chunk
    /// holds them.
    pub fn cached_chunk(&self, run_id: &str, stream: &str, offset: u64, len: u64) -> Option<Bytes> {
        let cache = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        cache.entries.iter().rev().find_map(|c| {
            let start = offset.checked_sub(c.offset)?;
            let end = start.checked_add(len)?;
            (c.run_id == run_id && c.stream == stream && end <= c.bytes.len() as u64)
                .then(|| c.bytes.slice(start as usize..end as usize))
        })
    }

    /// Bytes of output chunks held in memory.
    pub fn cached_bytes(&self) -> usize {
        self.chunks.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }

    /// Watch a run's last seq (`current` seeds a new channel).
    pub fn subscribe(&self, run_id: &str, current: u64) -> watch::Receiver<u64> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.entry(run_id.to_string()).or_insert_with(|| watch::channel(current).0).subscribe()
    }

    /// Events up to `seq` are stored.
    pub fn notify(&self, run_id: &str, seq: u64) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let tx = runs.entry(run_id.to_string()).or_insert_with(|| watch::channel(0).0);
        tx.send_if_modified(|cur| {
            if seq > *cur {
                *cur = seq;
                true
            } else {
                false
            }
        });
    }

    /// The run is terminal: drop its channel and kept chunks once nobody
    /// listens (a reader still draining keeps them until the budget needs
    /// the room).
    pub fn close(&self, run_id: &str) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if runs.get(run_id).is_none_or(|tx| tx.receiver_count() == 0) {
            runs.remove(run_id);
            let mut cache = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
            cache.entries.retain(|c| c.run_id != run_id);
            cache.bytes = cache.entries.iter().map(|c| c.bytes.len()).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: usize, seed: u8) -> Bytes {
        Bytes::from((0..n).map(|i| (i as u8).wrapping_add(seed)).collect::<Vec<u8>>())
    }

    #[test]
    fn kept_chunks_serve_exact_spans_and_nothing_else() {
        let hub = EventHub::default();
        let c = chunk(1000, 1);
        hub.publish_chunk("wsr_1", "stdout", 4096, c.clone());
        assert_eq!(hub.cached_chunk("wsr_1", "stdout", 4096, 1000).unwrap(), c);
        assert_eq!(hub.cached_chunk("wsr_1", "stdout", 4100, 10).unwrap(), c.slice(4..14));
        assert!(hub.cached_chunk("wsr_1", "stdout", 4096, 1001).is_none(), "past the chunk's end");
        assert!(hub.cached_chunk("wsr_1", "stdout", 4095, 10).is_none(), "before its start");
        assert!(hub.cached_chunk("wsr_1", "stderr", 4096, 10).is_none(), "another stream");
        assert!(hub.cached_chunk("wsr_2", "stdout", 4096, 10).is_none(), "another run");
    }

    #[test]
    fn chunks_are_bounded_per_stream_and_in_total() {
        let hub = EventHub::with_chunk_budget(10_000);
        for i in 0..CHUNKS_PER_STREAM as u64 + 1 {
            hub.publish_chunk("wsr_1", "stdout", i * 100, chunk(100, i as u8));
        }
        assert!(hub.cached_chunk("wsr_1", "stdout", 0, 100).is_none(), "the oldest of the stream went first");
        assert!(hub.cached_chunk("wsr_1", "stdout", CHUNKS_PER_STREAM as u64 * 100, 100).is_some());
        // Another run's large chunks push out the oldest, whoever's they are.
        for i in 0..3 {
            hub.publish_chunk("wsr_2", "stdout", i * 4000, chunk(4000, 0));
            assert!(hub.cached_bytes() <= 10_000);
        }
        assert!(hub.cached_chunk("wsr_1", "stdout", CHUNKS_PER_STREAM as u64 * 100, 100).is_none());
        assert!(hub.cached_chunk("wsr_2", "stdout", 8000, 4000).is_some());
        hub.publish_chunk("wsr_3", "stdout", 0, chunk(10_001, 0));
        assert!(hub.cached_chunk("wsr_3", "stdout", 0, 1).is_none(), "a chunk over the whole budget is not kept");
    }

    #[test]
    fn closing_a_run_nobody_follows_drops_its_chunks() {
        let hub = EventHub::default();
        hub.publish_chunk("wsr_1", "stdout", 0, chunk(10, 0));
        hub.publish_chunk("wsr_2", "stdout", 0, chunk(10, 0));
        let watching = hub.subscribe("wsr_2", 0);
        hub.close("wsr_1");
        hub.close("wsr_2");
        assert!(hub.cached_chunk("wsr_1", "stdout", 0, 10).is_none());
        assert!(hub.cached_chunk("wsr_2", "stdout", 0, 10).is_some(), "a reader is still draining wsr_2");
        assert_eq!(hub.cached_bytes(), 10);
        drop(watching);
    }
}
