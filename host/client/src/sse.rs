//! Server-sent events of a run, resumed from the last delivered seq after a
//! dropped connection. Heartbeats are consumed here.

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
    done: bool,
    reconnects: u32,
}

impl EventStream {
    pub(crate) fn new(client: Client, run_id: String, after: u64) -> Self {
        EventStream { client, run_id, after, body: None, buf: Vec::new(), done: false, reconnects: 0 }
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
            if let Some(pos) = find_blank_line(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..pos).collect();
                let skip = if self.buf.starts_with(b"\r\n\r\n") { 4 } else { 2 };
                self.buf.drain(..skip.min(self.buf.len()));
                if let Some(ev) = self.parse(&block)? {
                    return Ok(Some(ev));
                }
                continue;
            }
            if self.body.is_none() {
                let resp = self.client.open_sse(&self.run_id, self.after).await?;
                self.body = Some(resp.bytes_stream().boxed());
                self.buf.clear();
            }
            match self.body.as_mut().expect("opened above").next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => {
                    // Dropped before `terminal`: resume after the last seq.
                    self.body = None;
                    self.reconnects += 1;
                    if self.reconnects > 20 {
                        return Err(ClientError::Other("the event stream kept disconnecting".into()));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
            }
        }
    }

    fn parse(&mut self, block: &[u8]) -> Result<Option<Value>> {
        let text = String::from_utf8_lossy(block);
        let (mut kind, mut data, mut id) = (String::new(), String::new(), None);
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                kind = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse::<u64>().ok();
            }
        }
        if kind == "heartbeat" || data.is_empty() {
            return Ok(None);
        }
        let value: Value =
            serde_json::from_str(&data).map_err(|e| ClientError::Other(format!("bad event data: {e}")))?;
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

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    let a = buf.windows(2).position(|w| w == b"\n\n");
    let b = buf.windows(4).position(|w| w == b"\r\n\r\n");
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}
