//! Hand-built archives of the shapes other tools write, each once taken
//! wrongly (refused, or extracted different from GNU tar with success),
//! and what extraction keeps: mtimes and modes, directories' last.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use crownest_sandbox::extract::{Budgets, ExtractError, Report, extract_tar_gz};

/// A raw header; nothing is validated, so any shape can be built.
struct H<'a> {
    name: &'a [u8],
    kind: u8,
    size: u64,
    mode: u32,
    mtime: u64,
    link: &'a [u8],
    /// Magic and version (8 bytes at 257).
    magic: &'a [u8; 8],
}

const USTAR: &[u8; 8] = b"ustar\x0000";
const GNU: &[u8; 8] = b"ustar  \0";

fn h(name: &str, kind: u8, size: u64) -> H<'_> {
    H { name: name.as_bytes(), kind, size, mode: 0o644, mtime: 1_600_000_000, link: b"", magic: USTAR }
}

fn octal(b: &mut [u8], v: u64) {
    b.copy_from_slice(format!("{:0w$o}\0", v, w = b.len() - 1).as_bytes());
}

fn checksum(b: &mut [u8]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|x| u32::from(*x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn block(h: &H) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[..h.name.len()].copy_from_slice(h.name);
    octal(&mut b[100..108], u64::from(h.mode));
    octal(&mut b[108..116], 0);
    octal(&mut b[116..124], 0);
    octal(&mut b[124..136], h.size);
    octal(&mut b[136..148], h.mtime);
    b[156] = h.kind;
    b[157..157 + h.link.len()].copy_from_slice(h.link);
    b[257..265].copy_from_slice(h.magic);
    checksum(&mut b);
    b
}

fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(512) * 512, 0);
    v
}

fn entry(h: &H, data: &[u8]) -> Vec<u8> {
    [block(h), padded(data)].concat()
}

/// PAX records with their lengths counted.
fn records(pairs: &[(&str, &str)]) -> Vec<u8> {
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

fn ext(kind: u8, pairs: &[(&str, &str)]) -> Vec<u8> {
    let data = records(pairs);
    entry(&h("././@PaxHeader", kind, data.len() as u64), &data)
}

fn targz(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for p in parts {
        enc.write_all(p).unwrap();
    }
    enc.write_all(&[0u8; 1024]).unwrap();
    enc.finish().unwrap()
}

struct Ws(tempfile::TempDir);

impl Ws {
    fn extract(parts: &[Vec<u8>]) -> (Ws, Result<Report, ExtractError>) {
        let ws = Ws(tempfile::tempdir().unwrap());
        let dir = Dir::open_ambient_dir(ws.0.path(), ambient_authority()).unwrap();
        let r = extract_tar_gz(&targz(parts)[..], &dir, Budgets::default(), None, &mut |_, _| {});
        (ws, r)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.path().join(rel)
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap()
    }
}

impl Drop for Ws {
    /// Read-only directories made writable again, so the temp dir can go.
    fn drop(&mut self) {
        let _ = std::process::Command::new("chmod").arg("-R").arg("u+w").arg(self.0.path()).status();
    }
}

fn sparse_expected() -> Vec<u8> {
    let mut v = vec![0u8; 3 << 20];
    v[1 << 20..(1 << 20) + 4096].fill(b'a');
    v[(3 << 20) - 4096..].fill(b'z');
    v
}

fn sparse_data() -> Vec<u8> {
    [vec![b'a'; 4096], vec![b'z'; 4096]].concat()
}

#[test]
fn git_archives_global_header_is_metadata_not_an_entry() {
    let (ws, r) = Ws::extract(&[
        ext(b'g', &[("comment", "6c3a0b9e1f1e5d7f0c2a4b6d8e0f1a2b3c4d5e6f")]),
        entry(&h("repo/README.md", b'0', 3), b"hi\n"),
    ]);
    let report = r.unwrap();
    assert_eq!(report.entries, 1, "the global header is not counted as an entry");
    assert_eq!(ws.read("repo/README.md"), b"hi\n");
}

#[test]
fn python_pax_headers_apply_their_path_and_mtime() {
    let long = format!("pkg/{}/module.py", "sub".repeat(40));
    let (ws, r) = Ws::extract(&[
        ext(b'x', &[("path", &long), ("mtime", "1700000000.25"), ("uid", "1000"), ("uname", "dev")]),
        entry(&h("pkg/truncated", b'0', 5), b"x = 1"),
    ]);
    r.unwrap();
    assert_eq!(ws.read(&long), b"x = 1");
    let m = std::fs::metadata(ws.path(&long)).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 250_000_000));
}

#[test]
fn an_old_style_directory_with_a_size_is_a_directory_and_hides_nothing() {
    let (ws, r) = Ws::extract(&[block(&h("od/", b'0', 1)), entry(&h("od/f", b'0', 3), b"abc")]);
    r.unwrap();
    assert!(std::fs::metadata(ws.path("od")).unwrap().is_dir());
    assert_eq!(ws.read("od/f"), b"abc");
}

#[test]
fn the_last_of_two_gnu_long_names_names_the_member() {
    let second = format!("{}/second.txt", "l".repeat(110));
    let (ws, r) = Ws::extract(&[
        entry(&H { magic: GNU, ..h("././@LongLink", b'L', 6) }, b"first\0"),
        entry(&H { magic: GNU, ..h("././@LongLink", b'L', second.len() as u64) }, second.as_bytes()),
        entry(&H { magic: GNU, ..h("short", b'0', 2) }, b"hi"),
    ]);
    r.unwrap();
    assert_eq!(ws.read(&second), b"hi");
    assert!(!ws.path("first").exists() && !ws.path("short").exists());
}

#[test]
fn pax_0_0_sparse_files_come_out_whole() {
    let (ws, r) = Ws::extract(&[
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
    ]);
    assert_eq!(r.unwrap().content_bytes, 3 << 20);
    assert!(ws.read("sparse.bin") == sparse_expected(), "3 MiB with its data in place");
    assert!(std::fs::metadata(ws.path("sparse.bin")).unwrap().blocks() * 512 < 1 << 20, "holes stay holes");
}

#[test]
fn pax_1_0_sparse_files_take_their_name_and_leave_the_map_out() {
    let data = [padded(b"3\n1048576\n4096\n3141632\n4096\n3145728\n0\n"), sparse_data()].concat();
    let (ws, r) = Ws::extract(&[
        ext(
            b'x',
            &[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.name", "data/sparse.bin"),
                ("GNU.sparse.realsize", "3145728"),
            ],
        ),
        entry(&h("data/GNUSparseFile.4242/sparse.bin", b'0', data.len() as u64), &data),
    ]);
    r.unwrap();
    assert!(ws.read("data/sparse.bin") == sparse_expected());
    assert!(!ws.path("data/GNUSparseFile.4242").exists());
}

#[test]
fn old_gnu_sparse_members_are_extracted() {
    let mut hb = block(&H { magic: GNU, ..h("old-sparse.bin", b'S', 8192) });
    for (i, (o, n)) in [(1u64 << 20, 4096u64), ((3 << 20) - 4096, 4096)].iter().enumerate() {
        octal(&mut hb[386 + i * 24..398 + i * 24], *o);
        octal(&mut hb[398 + i * 24..410 + i * 24], *n);
    }
    octal(&mut hb[483..495], 3 << 20);
    checksum(&mut hb);
    let (ws, r) = Ws::extract(&[hb, padded(&sparse_data())]);
    r.unwrap();
    assert!(ws.read("old-sparse.bin") == sparse_expected());
}

#[test]
fn mtimes_and_modes_are_kept_directories_last() {
    let (ws, r) = Ws::extract(&[
        block(&H { mode: 0o555, mtime: 1_000_000_000, ..h("ro/", b'5', 0) }),
        block(&H { mode: 0o750, mtime: 1_100_000_000, ..h("ro/sub/", b'5', 0) }),
        entry(&H { mode: 0o755, mtime: 1_200_000_000, ..h("ro/sub/tool.sh", b'0', 10) }, b"#!/bin/sh\n"),
        entry(&H { mode: 0o444, mtime: 1_300_000_000, ..h("ro/data.txt", b'0', 2) }, b"ro"),
        block(&H { mode: 0o777, mtime: 1_400_000_000, link: b"data.txt", ..h("ro/link", b'2', 0) }),
        entry(&H { mode: 0o600, mtime: 1_500_000_000, ..h("big.bin", b'0', 300_000) }, &vec![1; 300_000]),
        // A directory listed again later: the later entry's mode and mtime.
        block(&H { mode: 0o700, mtime: 1_600_000_000, ..h("again/", b'5', 0) }),
        entry(&h("again/f", b'0', 1), b"f"),
        block(&H { mode: 0o711, mtime: 1_650_000_000, ..h("again/", b'5', 0) }),
    ]);
    r.unwrap();
    let meta = |rel: &str| std::fs::symlink_metadata(ws.path(rel)).unwrap();
    let check = |rel: &str, mode: u32, mtime: i64| {
        let m = meta(rel);
        assert_eq!((m.permissions().mode() & 0o7777, m.mtime()), (mode, mtime), "{rel}");
    };
    check("ro", 0o555, 1_000_000_000);
    check("ro/sub", 0o750, 1_100_000_000);
    check("ro/sub/tool.sh", 0o755, 1_200_000_000);
    check("ro/data.txt", 0o444, 1_300_000_000);
    assert_eq!(meta("ro/link").mtime(), 1_400_000_000, "a symlink's own mtime");
    check("big.bin", 0o600, 1_500_000_000);
    check("again", 0o711, 1_650_000_000);
}
