//! GNU sparse files: the map of data regions a sparse member stores (the
//! rest of the file is holes, read as zeros). Four encodings exist, all
//! written by GNU tar: old GNU (`S` headers and extension blocks), and PAX
//! 0.0 (repeated `GNU.sparse.offset`/`numbytes` records), 0.1
//! (`GNU.sparse.map`) and 1.0 (the map as decimal lines at the start of the
//! member's data).

use super::pax::{Records, decimal};

/// At most this many regions in one map: real maps have a few per hole;
/// this bounds the memory a hostile map can claim.
pub const MAX_REGIONS: usize = 1 << 20;

/// Where a sparse member's stored data goes in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseMap {
    /// The file's size once its holes are restored.
    pub real_size: u64,
    /// (offset, length) of each stored region, in file order; the member's
    /// data is these regions, concatenated.
    pub regions: Vec<(u64, u64)>,
}

impl SparseMap {
    /// Check the regions are in order, do not overlap, stay within the real
    /// size, and that together they are exactly `stored` bytes.
    pub fn validate(&self, stored: u64) -> Result<(), String> {
        let mut end = 0u64;
        let mut total = 0u64;
        for &(offset, len) in &self.regions {
            let stop = offset.checked_add(len).ok_or("a sparse region overflows")?;
            if offset < end {
                return Err("sparse regions overlap or are out of order".into());
            }
            if stop > self.real_size {
                return Err("a sparse region lies beyond the file's size".into());
            }
            end = stop;
            total += len;
        }
        if total != stored {
            return Err(format!("the sparse map holds {total} bytes but the member stores {stored}"));
        }
        Ok(())
    }
}

/// Which PAX sparse form the member's records use, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaxSparse {
    /// 0.0 or 0.1: the map is in the records.
    InRecords,
    /// 1.0: the map opens the member's data.
    InData,
}

pub fn pax_form(records: &Records) -> Option<PaxSparse> {
    if records.get(b"GNU.sparse.major").is_some() || records.get(b"GNU.sparse.minor").is_some() {
        return Some(PaxSparse::InData);
    }
    let in_records = records.get(b"GNU.sparse.map").is_some()
        || records.get(b"GNU.sparse.offset").is_some()
        || records.get(b"GNU.sparse.numblocks").is_some();
    in_records.then_some(PaxSparse::InRecords)
}

/// The version a 1.0-form member claims; only 1.0 exists.
pub fn check_version(records: &Records) -> Result<(), String> {
    match (records.get(b"GNU.sparse.major"), records.get(b"GNU.sparse.minor")) {
        (Some(b"1"), Some(b"0")) => Ok(()),
        (major, minor) => Err(format!(
            "unsupported GNU sparse format {}.{}",
            String::from_utf8_lossy(major.unwrap_or(b"?")),
            String::from_utf8_lossy(minor.unwrap_or(b"?"))
        )),
    }
}

/// The real size of a PAX sparse member (`GNU.sparse.realsize` in 1.0,
/// `GNU.sparse.size` before).
pub fn pax_real_size(records: &Records) -> Result<u64, String> {
    let raw = records
        .get(b"GNU.sparse.realsize")
        .or_else(|| records.get(b"GNU.sparse.size"))
        .ok_or("a sparse member without its real size")?;
    decimal(raw).ok_or_else(|| "a bad sparse real size".into())
}

/// The regions of a 0.0 (`offset`/`numbytes` pairs, in record order) or 0.1
/// (`GNU.sparse.map=o,n,o,n…`) member; `numblocks`, when given, must match.
pub fn pax_regions(records: &Records) -> Result<Vec<(u64, u64)>, String> {
    let numbers: Vec<u64> = if let Some(map) = records.get(b"GNU.sparse.map") {
        if map.is_empty() {
            Vec::new()
        } else {
            map.split(|b| *b == b',')
                .map(|n| decimal(n).ok_or("a bad number in GNU.sparse.map"))
                .collect::<Result<_, _>>()?
        }
    } else {
        let mut out = Vec::new();
        for (k, v) in &records.0 {
            let want = if out.len() % 2 == 0 { &b"GNU.sparse.offset"[..] } else { &b"GNU.sparse.numbytes"[..] };
            if k == b"GNU.sparse.offset" || k == b"GNU.sparse.numbytes" {
                if k != want {
                    return Err("GNU.sparse.offset and numbytes records out of order".into());
                }
                out.push(decimal(v).ok_or("a bad sparse offset or size")?);
                if out.len() > 2 * MAX_REGIONS {
                    return Err("too many sparse regions".into());
                }
            }
        }
        out
    };
    if !numbers.len().is_multiple_of(2) || numbers.len() > 2 * MAX_REGIONS {
        return Err("a sparse map with an odd or excessive count of numbers".into());
    }
    if let Some(n) = records.get(b"GNU.sparse.numblocks") {
        let n = decimal(n).ok_or("a bad GNU.sparse.numblocks")?;
        if n != numbers.len() as u64 / 2 {
            return Err("GNU.sparse.numblocks does not match the map".into());
        }
    }
    Ok(numbers.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

/// Reads the 1.0 map: decimal numbers, one per line (the count, then an
/// offset and a length per region), padded with zeros to whole blocks.
/// `next_block` yields the member's data a block at a time.
pub fn read_map_1_0(
    mut next_block: impl FnMut() -> Result<[u8; 512], String>,
) -> Result<(Vec<(u64, u64)>, u64), String> {
    let mut block = next_block()?;
    let mut used_blocks = 1u64;
    let mut at = 0usize;
    let mut next_number = |block: &mut [u8; 512], at: &mut usize, used: &mut u64| -> Result<u64, String> {
        let mut digits: Vec<u8> = Vec::new();
        loop {
            if *at == 512 {
                *block = next_block()?;
                *used += 1;
                *at = 0;
            }
            let b = block[*at];
            *at += 1;
            match b {
                b'\n' => return decimal(&digits).ok_or_else(|| "a bad number in the sparse map".into()),
                b'0'..=b'9' if digits.len() < 20 => digits.push(b),
                _ => return Err("a bad number in the sparse map".into()),
            }
        }
    };
    let count = next_number(&mut block, &mut at, &mut used_blocks)?;
    if count > MAX_REGIONS as u64 {
        return Err("too many sparse regions".into());
    }
    let mut regions = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let offset = next_number(&mut block, &mut at, &mut used_blocks)?;
        let len = next_number(&mut block, &mut at, &mut used_blocks)?;
        regions.push((offset, len));
    }
    Ok((regions, used_blocks * 512))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::pax::tests::records;

    fn parsed(pairs: &[(&str, &str)]) -> Records {
        Records::parse(&records(pairs)).unwrap()
    }

    #[test]
    fn the_0_0_form_pairs_repeated_records() {
        let r = parsed(&[
            ("GNU.sparse.size", "3145728"),
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.offset", "1048576"),
            ("GNU.sparse.numbytes", "4096"),
            ("GNU.sparse.offset", "3145728"),
            ("GNU.sparse.numbytes", "0"),
        ]);
        assert_eq!(pax_form(&r), Some(PaxSparse::InRecords));
        assert_eq!(pax_real_size(&r), Ok(3145728));
        assert_eq!(pax_regions(&r), Ok(vec![(1048576, 4096), (3145728, 0)]));
        let wrong = parsed(&[("GNU.sparse.numblocks", "3"), ("GNU.sparse.offset", "0"), ("GNU.sparse.numbytes", "1")]);
        assert!(pax_regions(&wrong).is_err());
        let disordered = parsed(&[("GNU.sparse.numbytes", "1"), ("GNU.sparse.offset", "0")]);
        assert!(pax_regions(&disordered).is_err());
    }

    #[test]
    fn the_0_1_form_reads_its_map() {
        let r = parsed(&[("GNU.sparse.size", "10"), ("GNU.sparse.numblocks", "2"), ("GNU.sparse.map", "0,2,8,2")]);
        assert_eq!(pax_regions(&r), Ok(vec![(0, 2), (8, 2)]));
        assert!(pax_regions(&parsed(&[("GNU.sparse.map", "0,2,8")])).is_err());
        assert!(pax_regions(&parsed(&[("GNU.sparse.map", "0,x")])).is_err());
    }

    #[test]
    fn the_1_0_map_spans_blocks() {
        let mut text = String::from("300\n");
        for i in 0..300 {
            text.push_str(&format!("{}\n{}\n", i * 1000, 10));
        }
        let mut data = text.into_bytes();
        data.resize(data.len().div_ceil(512) * 512, 0);
        let blocks: Vec<[u8; 512]> = data.chunks(512).map(|c| c.try_into().unwrap()).collect();
        let mut it = blocks.iter();
        let (regions, used) = read_map_1_0(|| it.next().copied().ok_or_else(|| "eof".to_string())).unwrap();
        assert_eq!(regions.len(), 300);
        assert_eq!(regions[299], (299_000, 10));
        assert_eq!(used, blocks.len() as u64 * 512);
        let mut bad = [0u8; 512];
        bad[..4].copy_from_slice(b"1\nx\n");
        assert!(read_map_1_0(|| Ok(bad)).is_err());
        let mut huge = [0u8; 512];
        huge[..9].copy_from_slice(b"99999999\n");
        assert!(read_map_1_0(|| Ok(huge)).is_err());
    }

    #[test]
    fn maps_are_validated_against_the_data() {
        let map = |regions: Vec<(u64, u64)>| SparseMap { real_size: 100, regions };
        assert!(map(vec![(0, 10), (50, 10), (100, 0)]).validate(20).is_ok());
        assert!(map(vec![(0, 10), (5, 10)]).validate(20).is_err(), "overlap");
        assert!(map(vec![(50, 10), (0, 10)]).validate(20).is_err(), "order");
        assert!(map(vec![(95, 10)]).validate(10).is_err(), "beyond the size");
        assert!(map(vec![(0, 10)]).validate(11).is_err(), "stored bytes differ");
        assert!(map(vec![(u64::MAX, 10)]).validate(10).is_err(), "overflow");
    }
}
