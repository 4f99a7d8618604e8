//! Server-sent events of a run, resumed from the last delivered seq after a
//! dropped connection. Heartbeats are consumed here.

use std::borrow::Cow;

use futures_util::StreamExt;
use serde_json::Value;

use crate::{Client, ClientError, Result};

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
    reconnects: u32,
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
            reconnects: 0,
        }
    }

    /// The highest seq delivered so far.
    pub fn last_seq(&self) -> u64 {
        self.after
    }

    /// The next event, or `None` after the terminal event.
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
                    if let Some(ev) = self.accept(block)? {
                        return Ok(Some(ev));
                    }
                    continue;
                }
                Err(scanned) => self.scanned = scanned,
            }
            if self.body.is_none() {
                let resp = self.client.open_sse(&self.run_id, self.after).await?;
                self.body = Some(resp.bytes_stream().boxed());
                self.buf.clear();
                self.start = 0;
                self.scanned = 0;
            }
            match self.body.as_mut().expect("opened above").next().await {
                Some(Ok(chunk)) => {
                    // Drop what was consumed before growing the buffer, so
                    // it holds at most one event plus one network chunk.
                    if self.start > 0 {
                        self.buf.drain(..self.start);
                        self.scanned -= self.start.min(self.scanned);
                        self.start = 0;
                    }
                    self.buf.extend_from_slice(&chunk)
                }
                Some(Err(_)) | None => {
                    // Dropped before `terminal`: resume after the last seq,
                    // unless the run has ended (the server closes a stream
                    // whose cursor is already past `terminal`).
                    self.body = None;
                    let run = self.client.get(&format!("/v1/workspace-runs/{}", self.run_id)).await;
                    let ended = run.ok().and_then(|r| r["status"].as_str().map(String::from));
                    if ended.is_some_and(|s| matches!(s.as_str(), "succeeded" | "failed" | "canceled")) {
                        self.done = true;
                        return Ok(None);
                    }
                    self.reconnects += 1;
                    if self.reconnects > 20 {
                        return Err(ClientError::Other("the event stream kept disconnecting".into()));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
            }
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
