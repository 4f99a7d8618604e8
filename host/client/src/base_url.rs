//! The API's base URL as people write it: `http(s)://host[:port][/prefix]`,
//! with or without a trailing `/` or `/v1` (every API path starts with
//! `/v1`, so a URL copied from a request is accepted too).

use reqwest::Url;

/// Why a base URL was refused; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BaseUrlError(String);

/// `raw` as the client's base: scheme, authority and any path prefix,
/// without a trailing `/` or `/v1`.
pub fn normalize(raw: &str) -> Result<String, BaseUrlError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(BaseUrlError("the API URL is empty".into()));
    }
    if !raw.contains("://") {
        return Err(BaseUrlError(format!(
            "`{raw}` has no scheme: write http://{raw} (or https://{raw} for a server behind TLS)"
        )));
    }
    let mut url = Url::parse(raw).map_err(|e| BaseUrlError(format!("`{raw}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BaseUrlError(format!("`{raw}` is a {} URL: the API speaks http:// or https://", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(BaseUrlError(format!("`{raw}` names no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(BaseUrlError(format!("`{raw}` has a query or fragment: give only the server's address")));
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/v1").unwrap_or(path).trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn a_v1_suffix_and_trailing_slashes_are_dropped() {
        for raw in [
            "http://127.0.0.1:7878",
            "http://127.0.0.1:7878/",
            "http://127.0.0.1:7878/v1",
            " http://127.0.0.1:7878/v1/ ",
        ] {
            assert_eq!(normalize(raw).unwrap(), "http://127.0.0.1:7878", "{raw}");
        }
        assert_eq!(normalize("https://ci.example/crownest/v1/").unwrap(), "https://ci.example/crownest");
        assert_eq!(normalize("https://ci.example/v1x").unwrap(), "https://ci.example/v1x");
    }

    #[test]
    fn urls_without_a_scheme_or_host_are_refused_with_what_to_write() {
        let e = normalize("localhost:7878").unwrap_err().to_string();
        assert!(e.contains("no scheme") && e.contains("http://localhost:7878"), "{e}");
        assert!(normalize("127.0.0.1:7878").unwrap_err().to_string().contains("no scheme"));
        assert!(normalize("ftp://host").unwrap_err().to_string().contains("http:// or https://"));
        assert!(normalize("").is_err());
        assert!(normalize("http://host/?x=1").is_err());
    }
}
