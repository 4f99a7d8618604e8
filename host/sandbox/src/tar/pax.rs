//! PAX extended headers: the `"%d %s=%s\n"` records of a `x` (one member)
//! or `g` (every later member) header, and the few keywords extraction
//! uses. Everything else (atime, ownership, charsets, comments, vendor
//! keywords) is metadata we do not apply, and is ignored, as GNU tar
//! ignores keywords it does not know.

use super::Mtime;

/// Keywords in force from global headers at most: real archives carry one
/// or two (`git archive` a comment).
pub const MAX_GLOBAL_RECORDS: usize = 1024;

/// The records of one extended header, in order (GNU's sparse 0.0 form
/// repeats keywords, so a map would lose them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Records(pub Vec<(Vec<u8>, Vec<u8>)>);

impl Records {
    /// Parse the data of an extended header. Trailing NUL padding, which
    /// some writers leave, ends the records.
    pub fn parse(mut data: &[u8]) -> Result<Records, String> {
        let mut out = Vec::new();
        while let Some(&first) = data.first() {
            if first == 0 {
                break;
            }
            let space = data.iter().position(|b| *b == b' ').ok_or("a record without a length")?;
            let len: usize = std::str::from_utf8(&data[..space])
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or("a record length that is not a number")?;
            if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
                return Err("a record whose length does not fit".into());
            }
            let record = &data[space + 1..len - 1];
            let eq = record.iter().position(|b| *b == b'=').ok_or("a record without `=`")?;
            out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
            data = &data[len..];
        }
        Ok(Records(out))
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }

    /// Global records accumulate; a later value replaces an earlier one and
    /// an empty value removes the keyword (POSIX). In time linear in both
    /// (a hostile archive can send many), and at most [`MAX_GLOBAL_RECORDS`]
    /// in force.
    pub fn merge_global(&mut self, newer: Records) -> Result<(), String> {
        let latest: std::collections::HashMap<Vec<u8>, Vec<u8>> = newer.0.into_iter().collect();
        self.0.retain(|(k, _)| !latest.contains_key(k));
        self.0.extend(latest.into_iter().filter(|(_, v)| !v.is_empty()));
        if self.0.len() > MAX_GLOBAL_RECORDS {
            return Err(format!("global extended headers with more than {MAX_GLOBAL_RECORDS} keywords"));
        }
        Ok(())
    }
}

/// The metadata extraction takes from extended headers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overrides {
    pub path: Option<Vec<u8>>,
    pub link: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub mtime: Option<Mtime>,
}

impl Overrides {
    /// Apply `records` over what is set already (globals first, then the
    /// member's own). An empty value leaves the header's value in force.
    pub fn apply(&mut self, records: &Records) -> Result<(), String> {
        for (k, v) in &records.0 {
            if v.is_empty() {
                continue;
            }
            match k.as_slice() {
                b"path" => self.path = Some(v.clone()),
                b"linkpath" => self.link = Some(v.clone()),
                b"size" => self.size = Some(decimal(v).ok_or("a bad `size` record")?),
                b"mtime" => self.mtime = Some(time(v).ok_or("a bad `mtime` record")?),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A non-negative decimal number.
pub fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A PAX time: `[-]seconds[.fraction]`, to the nanosecond (finer digits
/// are dropped). A negative time is before the epoch: `-1.5` is 1.5 s
/// before it, i.e. second -2 plus 0.5 s.
pub fn time(v: &[u8]) -> Option<Mtime> {
    let (negative, v) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (whole, frac) = match v.iter().position(|b| *b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &b""[..]),
    };
    let secs = i64::try_from(decimal(whole)?).ok()?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nanos: u32 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if !negative {
        return Some(Mtime { secs, nanos });
    }
    if nanos == 0 {
        Some(Mtime { secs: -secs, nanos: 0 })
    } else {
        Some(Mtime { secs: -secs - 1, nanos: 1_000_000_000 - nanos })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Records with their lengths counted, as a writer makes them.
    pub fn records(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in pairs {
            let body = format!(" {k}={v}\n");
            let mut n = body.len() + 1;
            while n.to_string().len() + body.len() != n {
                n += 1;
            }
            out.extend_from_slice(format!("{n}{body}").as_bytes());
        }
        out
    }

    fn parsed(pairs: &[(&str, &str)]) -> Records {
        Records::parse(&records(pairs)).unwrap()
    }

    #[test]
    fn records_parse_in_order_with_repeats() {
        let r =
            parsed(&[("mtime", "1796408879.239980849"), ("GNU.sparse.offset", "1048576"), ("GNU.sparse.offset", "0")]);
        assert_eq!(r.0.len(), 3);
        assert_eq!(r.get(b"GNU.sparse.offset"), Some(&b"0"[..]), "the last of a repeated keyword");
        assert_eq!(records(&[("mtime", "1796408879.239980849")]), b"30 mtime=1796408879.239980849\n");
        // A value may hold `=`, spaces and newlines; the length says where it ends.
        let mut raw = records(&[("path", "a=b c\nd.txt")]);
        raw.extend_from_slice(b"\0\0\0");
        assert_eq!(Records::parse(&raw).unwrap().get(b"path"), Some(&b"a=b c\nd.txt"[..]));
        for bad in [&b"11 path=abc"[..], b"x path=a\n", b"99 path=a\n", b"8 pathx\n", b"3 \n", b" 3 a=\n"] {
            assert!(Records::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn globals_accumulate_and_an_empty_value_deletes() {
        let mut g = Records::default();
        g.merge_global(parsed(&[("path", "one"), ("comment", "x")])).unwrap();
        g.merge_global(parsed(&[("path", "two"), ("mtime", "1"), ("mtime", "2")])).unwrap();
        assert_eq!(g.get(b"path"), Some(&b"two"[..]));
        assert_eq!(g.get(b"mtime"), Some(&b"2"[..]), "the last of a repeated keyword");
        assert_eq!(g.0.len(), 3, "one record per keyword");
        g.merge_global(parsed(&[("path", "")])).unwrap();
        assert_eq!(g.get(b"path"), None);
        assert_eq!(g.get(b"comment"), Some(&b"x"[..]));
        let many: Vec<(String, String)> = (0..=MAX_GLOBAL_RECORDS).map(|i| (format!("k{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(g.merge_global(parsed(&many)).is_err());
    }

    #[test]
    fn overrides_take_path_link_size_and_mtime() {
        let mut o = Overrides::default();
        o.apply(&parsed(&[("path", "long"), ("linkpath", "to"), ("size", "42"), ("uid", "1000")])).unwrap();
        assert_eq!(o.path.as_deref(), Some(&b"long"[..]));
        assert_eq!(o.link.as_deref(), Some(&b"to"[..]));
        assert_eq!(o.size, Some(42));
        assert!(o.apply(&parsed(&[("size", "-1")])).is_err());
        o.apply(&parsed(&[("path", "")])).unwrap();
        assert_eq!(o.path.as_deref(), Some(&b"long"[..]), "an empty local value changes nothing");
    }

    #[test]
    fn pax_times_keep_nanoseconds_and_handle_the_sign() {
        assert_eq!(time(b"1796408879.239980849"), Some(Mtime { secs: 1796408879, nanos: 239980849 }));
        assert_eq!(time(b"1234567890.5"), Some(Mtime { secs: 1234567890, nanos: 500_000_000 }));
        assert_eq!(time(b"12.1234567899"), Some(Mtime { secs: 12, nanos: 123456789 }));
        assert_eq!(time(b"7"), Some(Mtime { secs: 7, nanos: 0 }));
        assert_eq!(time(b"-1.5"), Some(Mtime { secs: -2, nanos: 500_000_000 }));
        assert_eq!(time(b"-3"), Some(Mtime { secs: -3, nanos: 0 }));
        assert_eq!(time(b"1.x"), None);
        assert_eq!(time(b""), None);
        assert_eq!(time(b"--1"), None);
    }
}
