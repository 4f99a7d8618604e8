//! Refusing config keys a plugin does not know. A misspelt key (`prefx`
//! for `prefix`) would otherwise be ignored and the default used: objects
//! written to the bucket's root, a plan limit not applied. Each default
//! plugin calls [`check`] from its `check` export with its own table (the
//! host's `config.get-json`) and the keys it reads.

/// `Ok` when every top-level key of `table_json` is in `known`; else a
/// message naming the first unknown key, the closest known one, and all
/// of them.
pub fn check(table_json: &str, plugin: &str, known: &[&str]) -> Result<(), String> {
    let table: serde_json::Value =
        serde_json::from_str(table_json).map_err(|e| format!("{plugin}: the config table is not readable: {e}"))?;
    let Some(map) = table.as_object() else { return Ok(()) };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        if known.contains(&key.as_str()) {
            continue;
        }
        let hint = closest(key, known).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default();
        let list = if known.is_empty() {
            "it takes no settings".to_string()
        } else {
            format!("it knows {}", known.join(", "))
        };
        return Err(format!("{plugin}: unknown config key `{key}`{hint}; {list}"));
    }
    Ok(())
}

/// The known key within two edits of `key`, if one is.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known.iter().map(|k| (distance(key, k), *k)).filter(|(d, _)| *d <= 2).min().map(|(_, k)| k)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_named_with_a_suggestion() {
        let known = ["prefix", "bucket", "endpoint"];
        assert!(check(r#"{"prefix": "a/", "bucket": "b"}"#, "s3-artifacts", &known).is_ok());
        let e = check(r#"{"prefx": "a/"}"#, "s3-artifacts", &known).unwrap_err();
        assert_eq!(
            e,
            "s3-artifacts: unknown config key `prefx` (did you mean `prefix`?); it knows prefix, bucket, endpoint"
        );
        let e = check(r#"{"zzz": 1}"#, "scoped-keys", &[]).unwrap_err();
        assert_eq!(e, "scoped-keys: unknown config key `zzz`; it takes no settings");
        assert!(check("{}", "x", &[]).is_ok());
    }
}
