//! Parsing an event's JSON, with a fast path for output events: their text
//! (up to a 4 MiB chunk) is decoded by `crownest-json-text` rather than by
//! serde_json an escape at a time, and the short rest of the event by
//! serde_json. The server writes an output event's text last:
//! `{...,"data":{...,"text":"<text>"}}`; anything else, or anything the fast
//! path cannot vouch for, is parsed by serde_json alone.

use serde_json::Value;

/// Parse one event's JSON.
pub(crate) fn parse(data: &[u8]) -> serde_json::Result<Value> {
    match output_event(data) {
        Some(v) => Ok(v),
        None => serde_json::from_slice(data),
    }
}

/// How far into an event the text field may start: the event's other
/// fields are ids, a timestamp, offsets and a digest.
const HEAD_MAX: usize = 4096;

fn output_event(data: &[u8]) -> Option<Value> {
    let contents_end = data.len().checked_sub(3)?;
    if &data[contents_end..] != b"\"}}" {
        return None;
    }
    let head = &data[..data.len().min(HEAD_MAX)];
    let key = memchr::memmem::find(head, b",\"text\":\"")?;
    if !in_data_object(&data[..key]) {
        return None;
    }
    let text = crownest_json_text::unescape_contents(&data[key + 9..contents_end])?;
    let mut rest = data[..key].to_vec();
    rest.extend_from_slice(b"}}");
    let mut value: Value = serde_json::from_slice(&rest).ok()?;
    let fields = value.get_mut("data")?.as_object_mut()?;
    if fields.contains_key("text") {
        return None;
    }
    fields.insert("text".into(), Value::String(text));
    Some(value)
}

/// Whether the end of `before` is inside the object that is the value of
/// the top-level key `"data"`, directly (not in a string or a nested
/// value). serde_json then checks that `before` is otherwise valid JSON.
fn in_data_object(before: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut string_start = 0;
    let mut in_data = false;
    for (i, &b) in before.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => (in_string, string_start) = (true, i),
            b'{' | b'[' => {
                depth += 1;
                // The object opened by `"data":{`, the key directly in the
                // top-level object (the key's string ended just before).
                if depth == 2 {
                    in_data = b == b'{'
                        && i >= 7
                        && &before[i - 7..i] == b"\"data\":"
                        && string_start == i - 7
                        && matches!(before.get(i.wrapping_sub(8)), Some(b',' | b'{'));
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth < 2 {
                    in_data = false;
                }
            }
            _ => {}
        }
    }
    in_data && depth == 2 && !in_string
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_events_parse_as_serde_json_parses_them() {
        let text = "crownest line \"quoted\" \\ é 🦀\n".repeat(500);
        let event = serde_json::json!({
            "runId": "wsr_1", "seq": 7, "type": "stdout", "at": "2026-11-24T00:00:00.000Z",
            "data": {"offset": 0, "bytes": text.len(), "streamSha256": "ab", "text": text},
        });
        // The server's layout: the text last, after the other data fields.
        let data = serde_json::to_string(&event["data"]).unwrap();
        let head = r#"{"runId":"wsr_1","seq":7,"type":"stdout","at":"2026-11-24T00:00:00.000Z","data":"#;
        let fields =
            r#"{"bytes":"#.to_string() + &text.len().to_string() + r#","offset":0,"streamSha256":"ab","text":"#;
        let mut wire = head.to_string() + &fields;
        assert!(crownest_json_text::push_bytes_literal(&mut wire, text.as_bytes()));
        wire.push_str("}}");
        assert!(output_event(wire.as_bytes()).is_some(), "the fast path takes the server's layout");
        assert_eq!(parse(wire.as_bytes()).unwrap(), event);
        assert_eq!(serde_json::to_string(&event["data"]).unwrap(), data);
    }

    #[test]
    fn anything_else_goes_to_serde_json() {
        let cases: &[&str] = &[
            // Not output events, or text not in `data`.
            r#"{"runId":"wsr_1","type":"status","data":{"status":"running"}}"#,
            r#"{"runId":"wsr_1","data":{"x":1},"more":{"a":1,"text":"t"}}"#,
            r#"{"data":{"nested":{"a":1,"text":"t"}}}"#,
            r#"{"data":{"list":[1,"text":"t"]}}"#,
            // `"text":` inside a string, and a key that only ends in data.
            r#"{"data":{"s":"a,\"text\":\"b","text":"t"}}"#,
            r#"{"x\"data":{"a":1,"text":"t"}}"#,
            // A duplicate text key; invalid text; a raw quote in the text.
            r#"{"data":{"text":"a","text":"t"}}"#,
            r#"{"data":{"a":1,"text":"bad \x"}}"#,
            r#"{"data":{"a":1,"text":"a"b"}}"#,
            // Broken JSON before the text.
            r#"{"data":{"a":,"text":"t"}}"#,
        ];
        for case in cases {
            let ours = parse(case.as_bytes()).ok();
            let serde: Option<Value> = serde_json::from_str(case).ok();
            assert_eq!(ours, serde, "{case}");
        }
        assert!(output_event(br#"{"x\"data":{"a":1,"text":"t"}}"#).is_none());
        assert!(output_event(br#"{"data":{"s":"a,\"text\":\"b","text":"t"}}"#).is_some(), "the real key after it");
    }
}
