//! Moving bulk bytes between the host and plugins as `wasi:io` streams.
//!
//! - [`input_stream_from`] turns any host `AsyncRead` into a `wasi:io`
//!   input stream a plugin can read or splice, in chunks of up to
//!   [`CHUNK`] (1 MiB): small chunks cost a blocking-pool hop each and cap
//!   throughput well below disk speed.
//! - [`read_guest_stream`] turns a stream a plugin returned into an
//!   `AsyncRead`, keeping the plugin's store alive while it is read.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use crownest_core::ports::ByteStream;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;
use wasmtime::Store;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynInputStream, InputStream, Pollable, StreamError, StreamResult};

use crate::state::PluginState;

/// Bytes per chunk.
pub const CHUNK: usize = 1 << 20;
/// Chunks buffered between producer and consumer.
const DEPTH: usize = 4;

/// A host reader not yet read through its `wasi:io` stream: the host can
/// take it back (see [`input_stream_reclaimable`]).
pub type ReaderSlot = Arc<Mutex<Option<ByteStream>>>;

/// A `wasi:io` input stream fed from a host reader by a background task,
/// started at the first read or poll.
struct ReaderInputStream {
    slot: Option<ReaderSlot>,
    rx: Option<mpsc::Receiver<io::Result<Bytes>>>,
    buf: Bytes,
    pending: Option<io::Result<Bytes>>,
    eof: bool,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for ReaderInputStream {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl ReaderInputStream {
    /// Start reading, unless the host took the reader back (then the
    /// stream is simply closed).
    fn start(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        match slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(reader) => {
                let (rx, task) = pump_reader(reader);
                self.rx = Some(rx);
                self.task = Some(task);
            }
            None => self.eof = true,
        }
    }
}

/// Wrap a host reader as a `wasi:io` input stream.
pub fn input_stream_from(reader: ByteStream) -> DynInputStream {
    input_stream_reclaimable(reader).0
}

/// Wrap a host reader as a `wasi:io` input stream and keep a slot through
/// which the host can take the reader back, as long as the plugin has not
/// read or polled the stream: a plugin that only hands the stream back (a
/// runtime provider returning a command's stdout) then costs nothing per
/// byte, instead of two tasks and two channels.
pub fn input_stream_reclaimable(reader: ByteStream) -> (DynInputStream, ReaderSlot) {
    let slot: ReaderSlot = Arc::new(Mutex::new(Some(reader)));
    let stream = ReaderInputStream {
        slot: Some(slot.clone()),
        rx: None,
        buf: Bytes::new(),
        pending: None,
        eof: false,
        task: None,
    };
    (Box::new(stream), slot)
}

/// Take back a reader handed out with [`input_stream_reclaimable`], if its
/// stream was never read.
pub fn reclaim(slot: &ReaderSlot) -> Option<ByteStream> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn pump_reader(mut reader: ByteStream) -> (mpsc::Receiver<io::Result<Bytes>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(DEPTH);
    let task = tokio::spawn(async move {
        loop {
            let mut buf = BytesMut::with_capacity(CHUNK);
            match reader.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {
                    if tx.send(Ok(buf.freeze())).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
    });
    (rx, task)
}

#[async_trait::async_trait]
impl Pollable for ReaderInputStream {
    async fn ready(&mut self) {
        self.start();
        if !self.buf.is_empty() || self.pending.is_some() || self.eof {
            return;
        }
        let Some(rx) = self.rx.as_mut() else { return };
        match rx.recv().await {
            Some(item) => self.pending = Some(item),
            None => self.eof = true,
        }
    }
}

impl InputStream for ReaderInputStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.start();
        if self.buf.is_empty() {
            let next = match self.pending.take() {
                Some(item) => Some(item),
                None if self.eof => return Err(StreamError::Closed),
                None => match self
                    .rx
                    .as_mut()
                    .map(|rx| rx.try_recv())
                    .unwrap_or(Err(mpsc::error::TryRecvError::Disconnected))
                {
                    Ok(item) => Some(item),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.eof = true;
                        return Err(StreamError::Closed);
                    }
                },
            };
            match next {
                None => return Ok(Bytes::new()),
                Some(Ok(bytes)) => self.buf = bytes,
                Some(Err(e)) => {
                    self.eof = true;
                    return Err(StreamError::LastOperationFailed(wasmtime::Error::new(e)));
                }
            }
        }
        let n = size.min(self.buf.len());
        Ok(self.buf.split_to(n))
    }
}

/// An `AsyncRead` over chunks arriving on a channel.
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    buf: Bytes,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader { rx, buf: Bytes::new() }
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        while self.buf.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(bytes))) => self.buf = bytes,
            }
        }
        let n = out.remaining().min(self.buf.len());
        let chunk = self.buf.split_to(n);
        out.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// Read a stream a plugin returned, owning the plugin's store until the
/// stream ends or the reader is dropped.
pub fn read_guest_stream(mut store: Store<PluginState>, stream: Resource<DynInputStream>) -> ByteStream {
    let (tx, rx) = mpsc::channel(DEPTH);
    tokio::spawn(async move {
        loop {
            let s = match store.data_mut().table.get_mut(&stream) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other(format!("plugin stream vanished: {e}")))).await;
                    break;
                }
            };
            match s.read(CHUNK) {
                Ok(bytes) if bytes.is_empty() => s.ready().await,
                Ok(bytes) => {
                    if tx.send(Ok(bytes)).await.is_err() {
                        break;
                    }
                }
                Err(StreamError::Closed) => break,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other(format!("plugin stream failed: {e}")))).await;
                    break;
                }
            }
        }
        let _ = store.data_mut().table.delete(stream);
    });
    Box::new(ChannelReader::new(rx))
}

/// Pump a host-owned stream (already taken out of a plugin's table) into a
/// bounded channel of chunks; a slow consumer slows the producer.
fn pump(mut stream: DynInputStream) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(DEPTH);
    tokio::spawn(async move {
        loop {
            match stream.read(CHUNK) {
                Ok(bytes) if bytes.is_empty() => stream.ready().await,
                Ok(bytes) => {
                    if tx.send(Ok(bytes)).await.is_err() {
                        break;
                    }
                }
                Err(StreamError::Closed) => break,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other(format!("stream failed: {e}")))).await;
                    break;
                }
            }
        }
    });
    rx
}

/// An `AsyncRead` over a host-owned `wasi:io` stream.
pub fn reader_from_stream(stream: DynInputStream) -> ByteStream {
    Box::new(ChannelReader::new(pump(stream)))
}

/// A blocking `Read` over a host-owned `wasi:io` stream, for extraction and
/// file writes on the blocking pool. Create it on the runtime, read it off it.
pub struct BlockingStreamReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    buf: Bytes,
}

impl BlockingStreamReader {
    pub fn new(stream: DynInputStream) -> Self {
        BlockingStreamReader { rx: pump(stream), buf: Bytes::new() }
    }
}

impl std::io::Read for BlockingStreamReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.buf = bytes,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &'static [u8]) -> ByteStream {
        Box::new(bytes)
    }

    /// A stream the plugin never touched gives the host its reader back,
    /// and the stream itself then reads as closed.
    #[tokio::test]
    async fn an_unread_stream_gives_its_reader_back() {
        let (mut stream, slot) = input_stream_reclaimable(reader(b"hello"));
        let mut back = reclaim(&slot).expect("never read");
        let mut out = Vec::new();
        back.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello");
        stream.ready().await;
        assert!(matches!(stream.read(10), Err(StreamError::Closed)));
    }

    /// Once the plugin has polled or read the stream, the host cannot take
    /// the reader: the bytes go through the stream, none lost or doubled.
    #[tokio::test]
    async fn a_read_stream_keeps_its_reader() {
        let (mut stream, slot) = input_stream_reclaimable(reader(b"hello world"));
        stream.ready().await;
        let first = stream.read(5).unwrap();
        assert!(reclaim(&slot).is_none());
        let mut rest = ChannelReader::new(pump(stream));
        let mut out = first.to_vec();
        rest.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello world");
    }
}
