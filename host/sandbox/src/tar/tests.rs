//! The reader on hand-built archives: each shape GNU tar extracts that the
//! `tar` crate took differently, and the framing rules around them.

use super::pax::tests::records;
use super::*;

/// A raw header; nothing is validated, so any shape can be built.
#[derive(Clone)]
struct H {
    name: Vec<u8>,
    kind: u8,
    size: u64,
    mode: u32,
    mtime: u64,
    link: Vec<u8>,
    /// Magic and version, 8 bytes at 257.
    magic: &'static [u8; 8],
    prefix: Vec<u8>,
}

const USTAR: &[u8; 8] = b"ustar\x0000";
const GNU: &[u8; 8] = b"ustar  \0";
const V7: &[u8; 8] = &[0; 8];

fn h(name: &str, kind: u8, size: u64) -> H {
    H {
        name: name.as_bytes().to_vec(),
        kind,
        size,
        mode: 0o644,
        mtime: 1_600_000_000,
        link: Vec::new(),
        magic: USTAR,
        prefix: Vec::new(),
    }
}

fn octal(b: &mut [u8], v: u64) {
    let s = format!("{:0w$o}\0", v, w = b.len() - 1);
    b.copy_from_slice(s.as_bytes());
}

fn block(h: &H) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[..h.name.len()].copy_from_slice(&h.name);
    octal(&mut b[100..108], u64::from(h.mode));
    octal(&mut b[108..116], 0);
    octal(&mut b[116..124], 0);
    octal(&mut b[124..136], h.size);
    octal(&mut b[136..148], h.mtime);
    b[156] = h.kind;
    b[157..157 + h.link.len()].copy_from_slice(&h.link);
    b[257..265].copy_from_slice(h.magic);
    b[345..345 + h.prefix.len()].copy_from_slice(&h.prefix);
    checksum(&mut b);
    b
}

fn checksum(b: &mut [u8]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|x| u32::from(*x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(512) * 512, 0);
    v
}

/// A header followed by its data.
fn entry(h: &H, data: &[u8]) -> Vec<u8> {
    let mut v = block(h);
    v.extend(padded(data));
    v
}

/// An extended header of `kind` (`x` or `g`) holding `pairs`.
fn ext(kind: u8, pairs: &[(&str, &str)]) -> Vec<u8> {
    let data = records(pairs);
    entry(&h("PaxHeaders/x", kind, data.len() as u64), &data)
}

fn end(mut v: Vec<u8>) -> Vec<u8> {
    v.extend([0u8; 1024]);
    v
}

/// Every member with its data.
fn read_all(bytes: &[u8]) -> Result<Vec<(Member, Vec<u8>)>, TarError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while let Some(m) = r.next_member()? {
        let mut data = Vec::new();
        r.read_data_to_end(&mut data)?;
        out.push((m, data));
    }
    Ok(out)
}

fn names(members: &[(Member, Vec<u8>)]) -> Vec<String> {
    members.iter().map(|(m, _)| String::from_utf8_lossy(&m.path).into_owned()).collect()
}

#[test]
fn an_old_style_directory_carries_no_data_whatever_its_size() {
    for (kind, magic) in [(b'0', USTAR), (0u8, V7)] {
        let archive = end([block(&H { magic, ..h("od/", kind, 1) }), entry(&h("od/f", kind, 3), b"abc")].concat());
        let all = read_all(&archive).unwrap();
        assert_eq!(names(&all), ["od/", "od/f"]);
        assert_eq!(all[0].0.kind, Kind::Dir);
        assert_eq!(all[0].0.size, 0);
        assert_eq!((all[1].0.kind, all[1].1.as_slice()), (Kind::File, &b"abc"[..]));
    }
    // So do directories, symlinks and hardlinks with a size.
    let archive = end([
        block(&h("d/", b'5', 700)),
        block(&H { link: b"tgt".to_vec(), ..h("s", b'2', 5) }),
        block(&H { link: b"d/f".to_vec(), ..h("hl", b'1', 5) }),
        entry(&h("d/f", b'0', 1), b"z"),
    ]
    .concat());
    let all = read_all(&archive).unwrap();
    assert_eq!(names(&all), ["d/", "s", "hl", "d/f"]);
    assert_eq!(all[1].0.link, b"tgt");
    assert_eq!(all[3].1, b"z");
}

#[test]
fn the_last_of_several_gnu_long_names_wins() {
    let long = "n".repeat(150);
    let link = "t".repeat(120);
    let archive = end([
        entry(&H { magic: GNU, ..h("././@LongLink", b'L', 6) }, b"first\0"),
        entry(&H { magic: GNU, ..h("././@LongLink", b'L', long.len() as u64 + 1) }, format!("{long}\0").as_bytes()),
        entry(&H { magic: GNU, ..h("././@LongLink", b'K', link.len() as u64) }, link.as_bytes()),
        block(&H { magic: GNU, ..h("short", b'2', 0) }),
    ]
    .concat());
    let all = read_all(&archive).unwrap();
    assert_eq!(names(&all), [long]);
    assert_eq!(all[0].0.link, link.as_bytes());
}

#[test]
fn global_headers_are_metadata_in_force_until_changed() {
    // As `git archive` writes it, then a global mtime and path, then a
    // member's own header over it.
    let archive = end([
        ext(b'g', &[("comment", "0123456789abcdef0123456789abcdef01234567")]),
        entry(&h("a", b'0', 1), b"a"),
        ext(b'g', &[("mtime", "1234567890.5")]),
        entry(&h("b", b'0', 1), b"b"),
        ext(b'x', &[("mtime", "7")]),
        entry(&h("c", b'0', 1), b"c"),
        entry(&h("d", b'0', 1), b"d"),
        ext(b'g', &[("path", "renamed")]),
        entry(&h("e", b'0', 1), b"e"),
    ]
    .concat());
    let all = read_all(&archive).unwrap();
    assert_eq!(names(&all), ["a", "b", "c", "d", "renamed"]);
    let times: Vec<Mtime> = all.iter().map(|(m, _)| m.mtime).collect();
    assert_eq!(times[0], Mtime { secs: 1_600_000_000, nanos: 0 });
    assert_eq!(times[1], Mtime { secs: 1_234_567_890, nanos: 500_000_000 });
    assert_eq!(times[2], Mtime { secs: 7, nanos: 0 });
    assert_eq!(times[3], times[1], "a member's own header lasts one member");
}

#[test]
fn a_later_extended_header_replaces_an_earlier_one() {
    let archive = end([
        ext(b'x', &[("path", "p1"), ("mtime", "1111111111")]),
        ext(b'x', &[("path", "p2")]),
        entry(&h("orig", b'0', 1), b"o"),
    ]
    .concat());
    let all = read_all(&archive).unwrap();
    assert_eq!(names(&all), ["p2"]);
    assert_eq!(all[0].0.mtime.secs, 1_600_000_000, "GNU tar keeps only the last `x` header");
}

#[test]
fn pax_path_linkpath_and_size_override_the_header() {
    let long = format!("{}/{}", "d".repeat(200), "f".repeat(200));
    let archive = end([
        ext(b'x', &[("path", &long), ("size", "3")]),
        entry(&h("trunc", b'0', 0), b"xyz"),
        ext(b'x', &[("linkpath", "somewhere/else")]),
        block(&h("sl", b'2', 0)),
    ]
    .concat());
    let all = read_all(&archive).unwrap();
    assert_eq!(names(&all), [long.as_str(), "sl"]);
    assert_eq!(all[0].1, b"xyz");
    assert_eq!(all[1].0.link, b"somewhere/else");
}

fn sparse_data() -> Vec<u8> {
    [vec![b'a'; 4096], vec![b'z'; 4096]].concat()
}

fn expect_sparse(m: &(Member, Vec<u8>), name: &str) {
    assert_eq!(String::from_utf8_lossy(&m.0.path), name);
    let map = m.0.sparse.as_ref().expect("a sparse member");
    assert_eq!(map.real_size, 3 << 20);
    assert_eq!(map.regions, [(1 << 20, 4096), ((3 << 20) - 4096, 4096), (3 << 20, 0)]);
    assert_eq!(m.1, sparse_data());
}

#[test]
fn pax_0_0_sparse_members_keep_their_map() {
    let archive = end([
        ext(
            b'x',
            &[
                ("GNU.sparse.size", "3145728"),
                ("GNU.sparse.numblocks", "3"),
                ("GNU.sparse.offset", "1048576"),
                ("GNU.sparse.numbytes", "4096"),
                ("GNU.sparse.offset", "3141632"),
                ("GNU.sparse.numbytes", "4096"),
                ("GNU.sparse.offset", "3145728"),
                ("GNU.sparse.numbytes", "0"),
            ],
        ),
        entry(&h("sparse.bin", b'0', 8192), &sparse_data()),
    ]
    .concat());
    expect_sparse(&read_all(&archive).unwrap()[0], "sparse.bin");
}

#[test]
fn pax_0_1_sparse_members_take_their_real_name() {
    let archive = end([
        ext(
            b'x',
            &[
                ("GNU.sparse.size", "3145728"),
                ("GNU.sparse.numblocks", "3"),
                ("GNU.sparse.name", "dir/sparse.bin"),
                ("GNU.sparse.map", "1048576,4096,3141632,4096,3145728,0"),
            ],
        ),
        entry(&h("./GNUSparseFile.1/sparse.bin", b'0', 8192), &sparse_data()),
    ]
    .concat());
    expect_sparse(&read_all(&archive).unwrap()[0], "dir/sparse.bin");
}

fn map_1_0() -> Vec<u8> {
    padded(b"3\n1048576\n4096\n3141632\n4096\n3145728\n0\n")
}

#[test]
fn pax_1_0_sparse_members_read_their_map_from_the_data() {
    let data = [map_1_0(), sparse_data()].concat();
    let archive = end([
        ext(
            b'x',
            &[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.name", "sparse.bin"),
                ("GNU.sparse.realsize", "3145728"),
            ],
        ),
        entry(&h("./GNUSparseFile.20076/sparse.bin", b'0', data.len() as u64), &data),
        entry(&h("after", b'0', 2), b"ok"),
    ]
    .concat());
    let all = read_all(&archive).unwrap();
    expect_sparse(&all[0], "sparse.bin");
    assert_eq!(all[1].1, b"ok");
}

#[test]
fn old_gnu_sparse_members_read_their_extension_blocks() {
    // Six regions: four in the header, two in an extension block.
    let regions: Vec<(u64, u64)> = (0..6).map(|i| (i * 100_000, 10)).collect();
    let data: Vec<u8> = (0..60u8).collect();
    let mut hb = block(&H { magic: GNU, ..h("old.bin", b'S', 60) });
    let put = |b: &mut [u8], at: usize, (o, n): (u64, u64)| {
        octal(&mut b[at..at + 12], o);
        octal(&mut b[at + 12..at + 24], n);
    };
    for (i, r) in regions[..4].iter().enumerate() {
        put(&mut hb, 386 + i * 24, *r);
    }
    hb[482] = 1;
    octal(&mut hb[483..495], 600_000);
    checksum(&mut hb);
    let mut extension = vec![0u8; 512];
    for (i, r) in regions[4..].iter().enumerate() {
        put(&mut extension, i * 24, *r);
    }
    let archive = end([hb, extension, padded(&data), entry(&h("next", b'0', 1), b"n")].concat());
    let all = read_all(&archive).unwrap();
    assert_eq!(names(&all), ["old.bin", "next"]);
    let map = all[0].0.sparse.as_ref().unwrap();
    assert_eq!((map.real_size, map.regions.clone()), (600_000, regions));
    assert_eq!(all[0].1, data);
}

#[test]
fn a_sparse_map_that_does_not_match_is_refused_by_name() {
    let archive = end([
        ext(b'x', &[("GNU.sparse.size", "100"), ("GNU.sparse.map", "0,50")]),
        entry(&h("liar.bin", b'0', 10), &[1; 10]),
    ]
    .concat());
    match read_all(&archive) {
        Err(TarError::Member { entry, reason }) => {
            assert_eq!(entry, b"liar.bin");
            assert!(reason.contains("sparse map"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let short =
        [ext(b'x', &[("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.realsize", "9")])].concat();
    let archive = end([short, entry(&h("nomap", b'0', 0), b"")].concat());
    assert!(matches!(read_all(&archive), Err(TarError::Member { .. })));
}

#[test]
fn ustar_prefixes_join_and_gnu_headers_keep_theirs_apart() {
    let mut u = h("name.txt", b'0', 0);
    u.prefix = b"some/long/prefix".to_vec();
    let mut g = u.clone();
    g.magic = GNU;
    let all = read_all(&end([block(&u), block(&g)].concat())).unwrap();
    assert_eq!(names(&all), ["some/long/prefix/name.txt", "name.txt"]);
}

#[test]
fn base256_sizes_and_times_are_read() {
    let mut b = block(&h("big-time", b'0', 0));
    b[136..148].fill(0xff);
    b[147] = 0xfe; // -2: before the epoch
    b[124..136].fill(0);
    b[124] = 0x80;
    b[135] = 3;
    checksum(&mut b);
    let all = read_all(&end([b, padded(b"abc")].concat())).unwrap();
    assert_eq!(all[0].0.mtime, Mtime { secs: -2, nanos: 0 });
    assert_eq!(all[0].1, b"abc");
}

#[test]
fn the_first_zero_block_or_the_stream_end_ends_the_archive() {
    let a = entry(&h("a", b'0', 1), b"a");
    let lone = [a.clone(), vec![0; 512], entry(&h("b", b'0', 1), b"b")].concat();
    assert_eq!(names(&read_all(&lone).unwrap()), ["a"], "GNU tar stops at a lone zero block");
    assert_eq!(names(&read_all(&a).unwrap()), ["a"], "no end marker");
    assert!(read_all(&[]).unwrap().is_empty());
}

#[test]
fn damaged_archives_are_corrupt() {
    let mut bad = entry(&h("a", b'0', 1), b"a");
    bad[0] = b'b';
    assert!(matches!(read_all(&bad), Err(TarError::Corrupt(_))), "checksum");
    let cut = entry(&h("a", b'0', 1000), &[7; 1000]);
    assert!(matches!(read_all(&cut[..800]), Err(TarError::Corrupt(_))), "cut in the data");
    assert!(matches!(read_all(&cut[..300]), Err(TarError::Corrupt(_))), "cut in the header");
    let mut num = block(&h("a", b'0', 0));
    num[124..136].copy_from_slice(b"12x45678901\0");
    checksum(&mut num);
    assert!(matches!(read_all(&num), Err(TarError::Corrupt(_))), "a bad number");
    let huge = h("././@LongLink", b'L', MAX_META_BYTES + 1);
    assert!(matches!(read_all(&block(&huge)), Err(TarError::TooLarge(_))));
}

#[test]
fn unknown_types_and_nodes_are_reported_as_such() {
    let archive = end([
        entry(&h("u", b'Q', 1), b"u"),
        block(&h("c", b'3', 0)),
        block(&h("b", b'4', 0)),
        block(&h("p", b'6', 0)),
        block(&h("l", b'V', 0)),
        entry(&h("dump", b'D', 3), b"xyz"),
    ]
    .concat());
    let kinds: Vec<Kind> = read_all(&archive).unwrap().into_iter().map(|(m, _)| m.kind).collect();
    assert_eq!(kinds, [Kind::Unknown(b'Q'), Kind::CharDevice, Kind::BlockDevice, Kind::Fifo, Kind::Dir]);
}
