//! The `wasi:http` allow-list: a plugin may send requests only to the
//! `host:port` authorities in its `grants.http`. An empty list denies every
//! request, so a plugin without the grant cannot reach the network even if
//! it links `wasi:http`.

use std::sync::Arc;

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Allowed authorities (`host:port`, lower case).
#[derive(Clone, Default)]
pub struct AllowList {
    allowed: Arc<Vec<String>>,
}

impl AllowList {
    pub fn new(entries: &[String]) -> AllowList {
        AllowList { allowed: Arc::new(entries.iter().map(|e| e.to_ascii_lowercase()).collect()) }
    }

    /// Whether a request to `uri` may go out.
    pub fn permits(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        let authority = format!("{}:{port}", host.to_ascii_lowercase());
        self.allowed.contains(&authority)
    }
}

type SendFuture = Box<
    dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>>
        + Send,
>;

impl WasiHttpHooks for AllowList {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        if !self.permits(request.uri()) {
            tracing::warn!(uri = %request.uri(), "plugin HTTP request denied: authority not in grants.http");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::AllowList;

    #[test]
    fn only_listed_authorities_pass() {
        let list = AllowList::new(&["127.0.0.1:3900".to_string(), "S3.example.com:443".to_string()]);
        assert!(list.permits(&"http://127.0.0.1:3900/bucket".parse().unwrap()));
        assert!(list.permits(&"https://s3.example.com/x".parse().unwrap()));
        assert!(!list.permits(&"http://127.0.0.1:3901/".parse().unwrap()));
        assert!(!list.permits(&"http://s3.example.com/x".parse().unwrap()), "port 80 is not 443");
        assert!(!AllowList::default().permits(&"http://127.0.0.1:3900/".parse().unwrap()));
    }
}
