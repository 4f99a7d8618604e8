//! One 512-byte tar header block: its fields, numbers and checksum, read
//! the way GNU tar reads them (v7, ustar, star, old GNU and GNU layouts).

use super::Mtime;

pub const BLOCK: usize = 512;

/// Where the layouts put each field (offset, length).
const NAME: (usize, usize) = (0, 100);
const MODE: (usize, usize) = (100, 8);
const SIZE: (usize, usize) = (124, 12);
const MTIME: (usize, usize) = (136, 12);
const CHKSUM: (usize, usize) = (148, 8);
const TYPEFLAG: usize = 156;
const LINKNAME: (usize, usize) = (157, 100);
const MAGIC: (usize, usize) = (257, 6);
const PREFIX: (usize, usize) = (345, 155);
/// Old GNU sparse header: four (offset, numbytes) pairs, a continuation
/// flag and the file's real size.
const GNU_SPARSE: usize = 386;
const GNU_IS_EXTENDED: usize = 482;
const GNU_REAL_SIZE: (usize, usize) = (483, 12);

/// A header block, borrowed.
pub struct Header<'a>(pub &'a [u8; BLOCK]);

/// Why a number field cannot be read.
#[derive(Debug, PartialEq, Eq)]
pub struct BadNumber(pub &'static str);

impl Header<'_> {
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    /// Whether the stored checksum matches the block. Historic writers
    /// summed signed bytes; GNU tar accepts either sum, so do we.
    pub fn checksum_ok(&self) -> bool {
        let Ok(stored) = octal(field(self.0, CHKSUM)) else {
            return false;
        };
        let (mut unsigned, mut signed) = (0i64, 0i64);
        for (i, b) in self.0.iter().enumerate() {
            let b = if (CHKSUM.0..CHKSUM.0 + CHKSUM.1).contains(&i) { b' ' } else { *b };
            unsigned += i64::from(b);
            signed += i64::from(b as i8);
        }
        stored == unsigned || stored == signed
    }

    pub fn typeflag(&self) -> u8 {
        self.0[TYPEFLAG]
    }

    /// The member name: for ustar and star archives (magic `ustar\0`,
    /// whatever the version) the prefix field, if set, comes first. GNU
    /// archives (`ustar  \0`) keep other data there.
    pub fn name(&self) -> Vec<u8> {
        let name = cstr(field(self.0, NAME));
        let magic = field(self.0, MAGIC);
        let prefix = cstr(field(self.0, PREFIX));
        if magic == b"ustar\0" && !prefix.is_empty() {
            let mut full = Vec::with_capacity(prefix.len() + 1 + name.len());
            full.extend_from_slice(prefix);
            full.push(b'/');
            full.extend_from_slice(name);
            full
        } else {
            name.to_vec()
        }
    }

    pub fn link_name(&self) -> Vec<u8> {
        cstr(field(self.0, LINKNAME)).to_vec()
    }

    pub fn mode(&self) -> Result<u32, BadNumber> {
        let v = numeric(field(self.0, MODE)).map_err(|_| BadNumber("mode"))?;
        // Some writers put the file type bits in too; only permissions count.
        Ok((v & 0o7777) as u32)
    }

    pub fn size(&self) -> Result<u64, BadNumber> {
        u64::try_from(numeric(field(self.0, SIZE)).map_err(|_| BadNumber("size"))?).map_err(|_| BadNumber("size"))
    }

    pub fn mtime(&self) -> Result<Mtime, BadNumber> {
        let secs = numeric(field(self.0, MTIME)).map_err(|_| BadNumber("mtime"))?;
        Ok(Mtime { secs, nanos: 0 })
    }

    /// The sparse map fields of an old GNU sparse member (`S`).
    pub fn gnu_sparse(&self) -> Result<OldSparse, BadNumber> {
        let regions = sparse_entries(&self.0[GNU_SPARSE..GNU_SPARSE + 4 * 24])?;
        let real = numeric(field(self.0, GNU_REAL_SIZE)).map_err(|_| BadNumber("sparse real size"))?;
        let real_size = u64::try_from(real).map_err(|_| BadNumber("sparse real size"))?;
        Ok(OldSparse { regions, extended: self.0[GNU_IS_EXTENDED] != 0, real_size })
    }
}

/// What an old GNU sparse header holds: up to four map entries, whether
/// extension blocks follow, and the file's real size.
pub struct OldSparse {
    pub regions: Vec<(u64, u64)>,
    pub extended: bool,
    pub real_size: u64,
}

/// The entries of an old GNU sparse extension block (21 pairs, then the
/// continuation flag at byte 504).
pub fn gnu_sparse_extension(block: &[u8; BLOCK]) -> Result<(Vec<(u64, u64)>, bool), BadNumber> {
    Ok((sparse_entries(&block[..21 * 24])?, block[21 * 24] != 0))
}

/// (offset, numbytes) pairs of 12 bytes each, up to the first empty one.
fn sparse_entries(raw: &[u8]) -> Result<Vec<(u64, u64)>, BadNumber> {
    let mut out = Vec::new();
    for pair in raw.chunks_exact(24) {
        if pair[0] == 0 {
            break;
        }
        let get = |f: &[u8]| -> Result<u64, BadNumber> {
            u64::try_from(numeric(f).map_err(|_| BadNumber("sparse map"))?).map_err(|_| BadNumber("sparse map"))
        };
        out.push((get(&pair[..12])?, get(&pair[12..])?));
    }
    Ok(out)
}

fn field(block: &[u8; BLOCK], (at, len): (usize, usize)) -> &[u8] {
    &block[at..at + len]
}

/// Bytes up to the first NUL.
fn cstr(f: &[u8]) -> &[u8] {
    f.iter().position(|b| *b == 0).map_or(f, |n| &f[..n])
}

/// A number field: octal text, or GNU's base-256 (two's complement, big
/// endian) when the high bit of the first byte is set.
fn numeric(f: &[u8]) -> Result<i64, ()> {
    match f.first() {
        Some(b) if b & 0x80 != 0 => base256(f),
        _ => octal(f),
    }
}

/// Octal digits after optional leading spaces, ended by a space, a NUL or
/// the end of the field. An empty field is 0, as GNU tar reads it.
fn octal(f: &[u8]) -> Result<i64, ()> {
    let start = f.iter().position(|b| *b != b' ').unwrap_or(f.len());
    let digits = &f[start..];
    let end = digits.iter().position(|b| !(b'0'..=b'7').contains(b)).unwrap_or(digits.len());
    if digits[end..].first().is_some_and(|b| *b != b' ' && *b != 0) {
        return Err(());
    }
    let mut v: i64 = 0;
    for d in &digits[..end] {
        v = v.checked_mul(8).and_then(|v| v.checked_add(i64::from(d - b'0'))).ok_or(())?;
    }
    Ok(v)
}

/// Base-256: the first byte's top bit is the marker; its next bit is the
/// sign (0xff... is negative). Values beyond i64 are refused.
fn base256(f: &[u8]) -> Result<i64, ()> {
    let negative = f[0] & 0x40 != 0;
    let fill: u8 = if negative { 0xff } else { 0 };
    // Drop the marker bit; for a negative number it is part of the sign fill.
    let first = if negative { f[0] } else { f[0] & 0x7f };
    let bytes = std::iter::once(first).chain(f[1..].iter().copied());
    let mut v: i128 = if negative { -1 } else { 0 };
    let mut significant = 0usize;
    for b in bytes {
        if significant == 0 && b == fill {
            continue;
        }
        significant += 1;
        if significant > 8 {
            return Err(());
        }
        v = (v << 8) | i128::from(b);
    }
    i64::try_from(v).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields_read_like_gnu_tar() {
        assert_eq!(numeric(b"0000644\0"), Ok(0o644));
        assert_eq!(numeric(b"   644 \0"), Ok(0o644));
        assert_eq!(numeric(b"\0\0\0\0\0\0\0\0"), Ok(0), "an empty field is zero");
        assert_eq!(numeric(b"        "), Ok(0));
        assert_eq!(numeric(b"00000000017"), Ok(0o17), "a full field needs no terminator");
        assert_eq!(numeric(b"0000x644\0"), Err(()), "garbage after the digits");
        assert_eq!(numeric(b"0008\0"), Err(()));
        assert_eq!(numeric(b"77777777777777777777777"), Err(()), "overflow");
    }

    #[test]
    fn base256_fields_hold_large_and_negative_numbers() {
        let mut size = [0u8; 12];
        size[0] = 0x80;
        size[7] = 0x02; // 2 << 32 = 8 GiB
        assert_eq!(numeric(&size), Ok(8 << 30));
        let mut neg = [0xffu8; 12];
        neg[11] = 0xfe;
        assert_eq!(numeric(&neg), Ok(-2));
        let mut min_one = [0xffu8; 12];
        min_one[0] = 0xff;
        assert_eq!(numeric(&min_one), Ok(-1));
        let mut huge = [0x80u8; 12];
        huge[1] = 0x01;
        assert_eq!(numeric(&huge), Err(()), "beyond 64 bits");
        let mut max = [0u8; 12];
        max[0] = 0x80;
        max[4..].copy_from_slice(&i64::MAX.to_be_bytes());
        assert_eq!(numeric(&max), Ok(i64::MAX));
    }
}
