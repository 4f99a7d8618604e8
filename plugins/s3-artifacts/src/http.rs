//! A minimal HTTP client over `wasi:http/outgoing-handler`: one request with
//! a body held in memory (at most one part), a timeout, and the response
//! either read whole (small control responses) or handed over as a stream.

use std::time::Duration;

use crate::crownest::host::types::Error;
use crate::wasi::http::outgoing_handler;
use crate::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::wasi::io::streams::{InputStream, OutputStream, StreamError};

/// A response whose body has not been read yet.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    response: IncomingResponse,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as a stream for the host. The response and body handles are
    /// deliberately leaked: the stream is their child and must outlive this
    /// call; the host drops the whole instance when it has read the stream.
    pub fn into_stream(self) -> Result<InputStream, Error> {
        let body = self.response.consume().map_err(|_| Error::Internal("response body already taken".into()))?;
        let stream = body.stream().map_err(|_| Error::Internal("response stream already taken".into()))?;
        std::mem::forget(body);
        std::mem::forget(self.response);
        Ok(stream)
    }

    /// Read the whole body (error documents, XML listings), at most `max` bytes.
    pub fn read_all(self, max: usize) -> Result<Vec<u8>, Error> {
        let body = self.response.consume().map_err(|_| Error::Internal("response body already taken".into()))?;
        let stream = body.stream().map_err(|_| Error::Internal("response stream already taken".into()))?;
        let mut out = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    out.extend_from_slice(&chunk);
                    if out.len() > max {
                        break;
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(Error::Unavailable(format!("reading the response failed: {}", e.to_debug_string())));
                }
            }
        }
        drop(stream);
        let _ = IncomingBody::finish(body);
        Ok(out)
    }
}

fn code(e: ErrorCode, what: &str) -> Error {
    match e {
        ErrorCode::HttpRequestDenied => Error::Denied(format!(
            "{what}: the host denied the request; grant the endpoint with `grants.http` in the config"
        )),
        ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => {
            Error::Unavailable(format!("{what}: the endpoint's name does not resolve"))
        }
        other => Error::Unavailable(format!("{what}: {other:?}")),
    }
}

/// Write all of `data` to an output stream, as fast as it accepts.
fn write_all(out: &OutputStream, mut data: &[u8]) -> Result<(), Error> {
    let fail = |e: StreamError| Error::Unavailable(format!("sending the body failed: the connection closed ({e:?})"));
    while !data.is_empty() {
        let permit = out.check_write().map_err(fail)?;
        if permit == 0 {
            out.subscribe().block();
            continue;
        }
        let n = (permit as usize).min(data.len());
        out.write(&data[..n]).map_err(fail)?;
        data = &data[n..];
    }
    // Every byte has been handed over. The connection may already have sent
    // the last of them and dropped its end (the request had a content-length),
    // so a closed stream from here on is not a failure: the response says
    // whether the service got it all.
    if out.flush().is_err() {
        return Ok(());
    }
    loop {
        match out.check_write() {
            Ok(0) => out.subscribe().block(),
            _ => return Ok(()),
        }
    }
}

/// Send one request; `url` is absolute (`http(s)://host[:port]/path?query`).
pub fn send(
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Option<&[u8]>,
    timeout: Duration,
    what: &str,
) -> Result<Response, Error> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else {
        return Err(Error::Invalid(format!("unsupported URL `{url}`")));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut list: Vec<(String, Vec<u8>)> =
        headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
    if let Some(b) = body {
        list.push(("content-length".into(), b.len().to_string().into_bytes()));
    }
    let fields = Fields::from_list(&list).map_err(|e| Error::Internal(format!("bad header: {e:?}")))?;
    let req = OutgoingRequest::new(fields);
    let internal = |_| Error::Internal("cannot build the request".into());
    req.set_method(&method).map_err(internal)?;
    req.set_scheme(Some(&scheme)).map_err(internal)?;
    req.set_authority(Some(authority)).map_err(internal)?;
    req.set_path_with_query(Some(path)).map_err(internal)?;
    let out_body = req.body().map_err(internal)?;
    let opts = RequestOptions::new();
    let ns = timeout.as_nanos() as u64;
    let _ = opts.set_connect_timeout(Some(ns));
    let _ = opts.set_first_byte_timeout(Some(ns));
    let _ = opts.set_between_bytes_timeout(Some(ns));
    let pending = outgoing_handler::handle(req, Some(opts)).map_err(|e| code(e, what))?;
    let mut send_error = None;
    if let Some(b) = body {
        let stream = out_body.write().map_err(internal)?;
        if let Err(e) = write_all(&stream, b) {
            send_error = Some(e);
        }
        drop(stream);
    }
    if send_error.is_none() {
        // A finish error after a complete body is reported by the response.
        let _ = OutgoingBody::finish(out_body, None);
    } else {
        drop(out_body);
    }
    pending.subscribe().block();
    // If the body could not be sent, the response (or its error) says why:
    // an early error status from the service, a timeout, a reset.
    if let Some(e) = send_error {
        return match pending.get() {
            Some(Ok(Ok(resp))) if resp.status() >= 400 => {
                let status = resp.status();
                let headers = vec![];
                let r = Response { status, headers, response: resp };
                let body = r.read_all(64 * 1024).unwrap_or_default();
                Err(crate::errors::from_response(status, &body, what))
            }
            Some(Ok(Err(c))) => Err(code(c, what)),
            _ => Err(e),
        };
    }
    let response = pending
        .get()
        .ok_or_else(|| Error::Internal("response not ready".into()))?
        .map_err(|_| Error::Internal("response taken twice".into()))?
        .map_err(|e| code(e, what))?;
    let headers =
        response.headers().entries().into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect();
    Ok(Response { status: response.status(), headers, response })
}

/// Sleep (for retry backoff).
pub fn sleep(d: Duration) {
    crate::wasi::clocks::monotonic_clock::subscribe_duration(d.as_nanos() as u64).block();
}
