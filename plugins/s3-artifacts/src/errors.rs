//! S3 error responses as the WIT error variant, keeping S3's code in the
//! message (`denied: AccessDenied: ...`).

use crate::crownest::host::types::Error;

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

/// Map an S3 error response (status + XML body) to the WIT error.
pub fn from_response(status: u16, body: &[u8], what: &str) -> Error {
    let xml = String::from_utf8_lossy(body);
    let code = tag(&xml, "Code").unwrap_or("").to_string();
    let message = tag(&xml, "Message").unwrap_or("").to_string();
    let detail = if code.is_empty() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: S3 {code} (HTTP {status}): {message}")
    };
    match (status, code.as_str()) {
        (_, "NoSuchKey" | "NoSuchUpload") | (404, "") => Error::NotFound(detail),
        (_, "NoSuchBucket") => Error::NotFound(format!("{detail}; create the bucket or fix `bucket` in the config")),
        (_, "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken")
        | (401 | 403, _) => Error::Denied(format!("{detail}; check the credentials in the s3-artifacts config")),
        (
            _,
            "XAmzContentSHA256Mismatch"
            | "BadDigest"
            | "InvalidDigest"
            | "EntityTooSmall"
            | "EntityTooLarge"
            | "InvalidPart",
        ) => Error::Invalid(detail),
        (429, _) | (500..=599, _) | (_, "SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout") => {
            Error::Unavailable(detail)
        }
        _ => Error::Internal(detail),
    }
}

/// Whether a failed attempt may be retried.
pub fn retryable(e: &Error) -> bool {
    matches!(e, Error::Unavailable(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_codes_map_to_variants() {
        let xml = b"<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>no such bucket</Message></Error>";
        assert!(matches!(from_response(404, xml, "put"), Error::NotFound(m) if m.contains("NoSuchBucket")));
        let xml = b"<Error><Code>InvalidAccessKeyId</Code><Message>bad</Message></Error>";
        assert!(matches!(from_response(403, xml, "check"), Error::Denied(_)));
        assert!(matches!(from_response(503, b"", "get"), Error::Unavailable(_)));
        assert!(matches!(
            from_response(400, b"<Error><Code>XAmzContentSHA256Mismatch</Code></Error>", "put"),
            Error::Invalid(_)
        ));
    }
}
