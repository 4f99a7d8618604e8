//! Text from the server made safe for a terminal.
//!
//! Whatever a run carries (its command line, metadata, artifact names,
//! failure messages) and whatever an API error says is chosen by whoever
//! created it, not by the person listing runs. Printed raw, an escape
//! sequence in it could retitle the window, clear the screen, hide lines,
//! rewrite the clipboard (OSC 52) or reorder text (bidi controls). The
//! CLI's own tables and labels print such text through [`safe`]; the
//! command output `run-archive` and `logs` stream is passed through
//! byte-exact on purpose and never comes here.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` could change what a terminal shows beyond the character
/// itself: C0 and C1 controls, DEL, and the Unicode bidi and
/// direction-mark controls.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control character written as an escape (`\n`, `\t`,
/// `\x1b`, `\u{9b}`, `\u{202e}`), so it prints as visible text.
pub fn safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON text for a terminal: serde_json already escapes C0 controls, but
/// writes C1 and bidi controls raw; inside a JSON string (the only place
/// they can be) `\uXXXX` is the same character, so the JSON stays valid.
pub fn safe_json(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) && !matches!(c, '\n' | '\t' | '\r') {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::{safe, safe_json};

    #[test]
    fn controls_become_visible_escapes_and_the_rest_stays() {
        assert!(matches!(safe("pnpm test && echo ok ü 🦀"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(safe("a\x1b]0;pwned\x07b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(safe("x\ny\tz\r"), "x\\ny\\tz\\r");
        assert_eq!(safe("\u{9b}2J \u{202e}txt \x7f"), "\\u{9b}2J \\u{202e}txt \\x7f");
    }

    #[test]
    fn json_keeps_its_meaning() {
        let text = serde_json::to_string(&serde_json::json!({"k": "a\u{9b}b\x1b\u{202e}"})).unwrap();
        let shown = safe_json(&text);
        assert!(!shown.chars().any(|c| c.is_control() || c == '\u{202e}'), "{shown}");
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back["k"], "a\u{9b}b\x1b\u{202e}");
    }
}
