//! Server-sent events of a run, resumed from the last delivered seq after a
//! dropped connection. Heartbeats are consumed here.
//!
//! A stream that drops is reopened with `afterSeq` = the last seq
//! delivered, so nothing is lost or repeated. While the server cannot be
//! reached at all (it is restarting, say), reopening is retried with a
//! back-off for a bounded time ([`EventStream::outage_wait`]); past it
//! the stream fails with [`ClientError::Transport`].

use std::borrow::Cow;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::{Client, ClientError, Result};

/// How long the server may be unreachable before a stream gives up, unless
/// the caller says otherwise.
pub const DEFAULT_OUTAGE_WAIT: Duration = Duration::from_secs(60);
/// Silence after which a connection is taken for dead and reopened: the
/// server sends a heartbeat every 15 s (`runs.heartbeat_secs`) when idle,
/// and a peer that vanished without a reset would otherwise hang us.
const IDLE_LIMIT: Duration = Duration::from_secs(75);
/// Drops in a row, without a single event or heartbeat in between, after
/// which the stream gives up (a proxy that cuts every connection).
const MAX_EMPTY_DROPS: u32 = 20;

/// What a stream reports about an outage while it waits it out.
#[derive(Debug)]
pub enum Outage<'a> {
    /// The server cannot be reached; reconnecting for up to `wait`.
    Lost { error: &'a ClientError, wait: Duration },
    /// Reconnected after being down for `after`.
    Back { after: Duration },
}

type OutageHook = Box<dyn FnMut(Outage<'_>) + Send>;

/// Yields events (the API's event objects) until `terminal`.
pub struct EventStream {
    client: Client,
    run_id: String,
    after: u64,
    body: Option<futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>>,
    buf: Vec<u8>,
    /// Where the unconsumed part of `buf` starts.
    start: usize,
    /// How far `buf` has been searched for a blank line (each byte once).
    scanned: usize,
    done: bool,
    /// Drops in a row without a block in between.
    empty_drops: u32,
    /// How long an outage is waited out.
    wait: Duration,
    /// When the current outage began (the first failed reopen).
    down_since: Option<Instant>,
    /// Failed reopens in the current outage (for the back-off).
    attempts: u32,
    on_outage: Option<OutageHook>,
}

impl EventStream {
    pub(crate) fn new(client: Client, run_id: String, after: u64) -> Self {
        EventStream {
            client,
            run_id,
            after,
            body: None,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            done: false,
            empty_drops: 0,
            wait: DEFAULT_OUTAGE_WAIT,
            down_since: None,
            attempts: 0,
            on_outage: None,
        }
    }

    /// How long to keep trying while the server cannot be reached (zero:
    /// fail at the first refused reconnect).
    pub fn outage_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Be told when an outage begins and ends (to say so to a person).
    pub fn on_outage(mut self, hook: impl FnMut(Outage<'_>) + Send + 'static) -> Self {
        self.on_outage = Some(Box::new(hook));
        self
    }

    /// The highest seq delivered so far.
    pub fn last_seq(&self) -> u64 {
        self.after
    }

    /// The next event, or `None` after the terminal event. Cancel-safe: a
    /// call dropped at any await leaves the stream ready for the next.
    pub async fn next(&mut self) -> Result<Option<Value>> {
        loop {
            if self.done {
                return Ok(None);
            }
            match find_blank_line(&self.buf, self.scanned.max(self.start)) {
                Ok((pos, len)) => {
                    // Parsed in place: an output event can be megabytes.
                    let block = parse_block(&self.buf[self.start..pos])?;
                    self.start = pos + len;
                    self.scanned = self.start;
                    self.empty_drops = 0;
                    if let Some(ev) = self.accept(block)? {
                        return Ok(Some(ev));
                    }
                    continue;
                }
                Err(scanned) => self.scanned = scanned,
            }
            if self.body.is_none() {
                self.reopen().await?;
                continue;
            }
            let next = tokio::time::timeout(IDLE_LIMIT, self.body.as_mut().expect("opened above").next()).await;
            match next {
                Ok(Some(Ok(chunk))) => {
                    // Drop what was consumed before growing the buffer, so
                    // it holds at most one event plus one network chunk.
                    if self.start > 0 {
                        self.buf.drain(..self.start);
                        self.scanned -= self.start.min(self.scanned);
                        self.start = 0;
                    }
                    self.buf.extend_from_slice(&chunk)
                }
                Ok(None) if self.at_end_of_finished_run().await => {
                    // The server closes the stream of a finished run whose
                    // cursor is past its last event: nothing is missing.
                    self.done = true;
                    return Ok(None);
                }
                Ok(Some(Err(_)) | None) | Err(_) => {
                    // Dropped (or silent) before `terminal`: resume after
                    // the last seq.
                    self.body = None;
                    self.empty_drops += 1;
                    if self.empty_drops > MAX_EMPTY_DROPS {
                        return Err(ClientError::Other("the event stream kept disconnecting".into()));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Whether the run has ended and no event follows the cursor (one
    /// page request; `false` when it cannot tell, e.g. the server is gone).
    async fn at_end_of_finished_run(&self) -> bool {
        let path = format!("/v1/workspace-runs/{}/events?afterSeq={}&limit=1", self.run_id, self.after);
        let page = self.client.get(&path);
        match tokio::time::timeout(Duration::from_secs(10), page).await {
            Ok(Ok(p)) => {
                let ended = p["runStatus"].as_str().is_some_and(|s| matches!(s, "succeeded" | "failed" | "canceled"));
                ended && p["items"].as_array().is_some_and(|i| i.is_empty())
            }
            _ => false,
        }
    }

    /// Open the stream after the last delivered seq, waiting out an outage
    /// of the server for up to `wait`.
    async fn reopen(&mut self) -> Result<()> {
        match self.client.open_sse(&self.run_id, self.after).await {
            Ok(resp) => {
                self.body = Some(resp.bytes_stream().boxed());
                self.buf.clear();
                self.start = 0;
                self.scanned = 0;
                if let Some(since) = self.down_since.take()
                    && let Some(hook) = self.on_outage.as_mut()
                {
                    hook(Outage::Back { after: since.elapsed() });
                }
                self.attempts = 0;
                Ok(())
            }
            Err(e) if is_outage(&e) => {
                let since = match self.down_since {
                    Some(since) => since,
                    None => {
                        let now = Instant::now();
                        self.down_since = Some(now);
                        if let Some(hook) = self.on_outage.as_mut() {
                            hook(Outage::Lost { error: &e, wait: self.wait });
                        }
                        now
                    }
                };
                let left = self.wait.saturating_sub(since.elapsed());
                if left.is_zero() {
                    return Err(match e {
                        ClientError::Transport { url, message, refused } => ClientError::Transport {
                            url,
                            message: format!("{message} (still, after {} s of retrying)", self.wait.as_secs()),
                            refused,
                        },
                        other => other,
                    });
                }
                self.attempts += 1;
                let backoff = Duration::from_millis(250 << self.attempts.min(3));
                tokio::time::sleep(backoff.min(left)).await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Deliver a parsed block unless it is a heartbeat or a replay of an
    /// event already delivered.
    fn accept(&mut self, block: Option<Block>) -> Result<Option<Value>> {
        let Some(Block { kind, id, value }) = block else { return Ok(None) };
        if kind == "error" && id.is_none() {
            return Err(ClientError::Other(format!("the event stream failed: {}", value["message"])));
        }
        if let Some(seq) = id {
            if seq <= self.after {
                return Ok(None);
            }
            self.after = seq;
        }
        if kind == "terminal" {
            self.done = true;
        }
        Ok(Some(value))
    }
}

/// Whether a failed reopen means the server is (for now) not there: no
/// connection, or a proxy in front of it answering for it.
fn is_outage(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } => true,
        ClientError::Api { status, .. } => matches!(status, 502..=504),
        ClientError::Other(_) => false,
    }
}

/// One SSE event block: its `event:` type, `id:` and JSON `data:`.
struct Block {
    kind: String,
    id: Option<u64>,
    value: Value,
}

/// Parse one event block where it lies (an output event can be megabytes);
/// `None` for a heartbeat or a block without data.
fn parse_block(block: &[u8]) -> Result<Option<Block>> {
    let (mut kind, mut id): (&[u8], Option<u64>) = (b"", None);
    // Several `data:` lines are joined with newlines, as the SSE format
    // says; the usual single line is borrowed, not copied.
    let mut data: Option<Cow<'_, [u8]>> = None;
    // Lines are found with memchr: the data line of an output event is
    // megabytes long, and a byte-by-byte split costs as much as parsing it.
    let mut rest = block;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(v) = line.strip_prefix(b"event:") {
            kind = v.trim_ascii();
        } else if let Some(v) = line.strip_prefix(b"data:") {
            let v = v.strip_prefix(b" ").unwrap_or(v);
            match data.as_mut() {
                None => data = Some(Cow::Borrowed(v)),
                Some(joined) => {
                    let joined = joined.to_mut();
                    joined.push(b'\n');
                    joined.extend_from_slice(v);
                }
            }
        } else if let Some(v) = line.strip_prefix(b"id:") {
            id = std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<u64>().ok());
        }
    }
    let data = data.unwrap_or_default();
    if kind == b"heartbeat" || data.is_empty() {
        return Ok(None);
    }
    let value = crate::event_json::parse(&data).map_err(|e| ClientError::Other(format!("bad event data: {e}")))?;
    Ok(Some(Block { kind: String::from_utf8_lossy(kind).into_owned(), id, value }))
}

/// The first blank line (`\n\n` or `\r\n\r\n`) in `buf`, searching from
/// `from`: `Ok((start, length))`, or `Err(resume)` with where to search
/// from once more bytes arrived (so a large event is scanned once, not once
/// per network chunk).
pub(crate) fn find_blank_line(buf: &[u8], from: usize) -> std::result::Result<(usize, usize), usize> {
    let mut i = from;
    while let Some(off) = buf.get(i..).and_then(|rest| memchr::memchr(b'\n', rest)) {
        let p = i + off;
        match buf.get(p + 1) {
            None => return Err(p),
            Some(b'\n') => {
                let crlf = p >= 1 && buf[p - 1] == b'\r';
                return Ok(if crlf { (p - 1, 3) } else { (p, 2) });
            }
            Some(b'\r') => match buf.get(p + 2) {
                None => return Err(p),
                Some(b'\n') => {
                    let start = if p >= 1 && buf[p - 1] == b'\r' { p - 1 } else { p };
                    return Ok((start, p + 3 - start));
                }
                Some(_) => i = p + 1,
            },
            Some(_) => i = p + 1,
        }
    }
    Err(buf.len())
}

#[cfg(test)]
mod tests {
    use super::{find_blank_line, parse_block};

    #[test]
    fn blocks_parse_in_place_and_join_data_lines() {
        let b = parse_block(b"id: 7\r\nevent: stdout\r\ndata: {\"a\":1}").unwrap().unwrap();
        assert_eq!((b.kind.as_str(), b.id, b.value["a"].as_u64()), ("stdout", Some(7), Some(1)));
        let b = parse_block(b"event: x\ndata: [1,\ndata:2]").unwrap().unwrap();
        assert_eq!(b.value, serde_json::json!([1, 2]), "data lines are joined with a newline");
        assert!(parse_block(b"event: heartbeat\ndata: {}").unwrap().is_none());
        assert!(parse_block(b": comment only").unwrap().is_none());
        assert!(parse_block(b"data: not json").is_err());
    }

    #[test]
    fn blank_lines_are_found_across_chunks_in_one_pass() {
        assert_eq!(find_blank_line(b"data: x\n\nrest", 0), Ok((7, 2)));
        assert_eq!(find_blank_line(b"data: x\r\n\r\nrest", 0), Ok((7, 4)));
        assert_eq!(find_blank_line(b"data: x\n", 0), Err(7), "the newline may start a blank line");
        assert_eq!(find_blank_line(b"data: x\ndata: y", 0), Err(15));
        let mut buf = b"data: x\n".to_vec();
        let resume = find_blank_line(&buf, 0).unwrap_err();
        buf.extend_from_slice(b"\nnext");
        assert_eq!(find_blank_line(&buf, resume), Ok((7, 2)));
        assert_eq!(find_blank_line(b"a\r\n\r", 0), Err(2));
    }
}
