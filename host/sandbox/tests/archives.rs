//! Hostile archives: each is refused or contained, and nothing is ever
//! written outside the workspace.

use std::io::{Read, Write};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use crownest_sandbox::export::{ExportError, open_export};
use crownest_sandbox::extract::{Budgets, ExtractError, ExtractOptions, extract_tar_gz, extract_tar_gz_with};
use flate2::Compression;
use flate2::write::GzEncoder;

/// A raw tar entry: nothing is validated, so hostile names go through.
struct E<'a> {
    name: &'a [u8],
    kind: u8,
    data: &'a [u8],
    link: &'a [u8],
    mode: u32,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E { name: name.as_bytes(), kind: b'0', data, link: b"", mode: 0o644 }
}

fn header(e: &E) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..e.name.len()].copy_from_slice(e.name);
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{:0width$o}\0", v, width = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, u64::from(e.mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, e.data.len() as u64);
    octal(&mut h, 136, 12, 0);
    h[156] = e.kind;
    h[157..157 + e.link.len()].copy_from_slice(e.link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn raw_tar(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&header(e));
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

struct Ws {
    outer: tempfile::TempDir,
}

impl Ws {
    fn new() -> Ws {
        let outer = tempfile::tempdir().unwrap();
        std::fs::create_dir(outer.path().join("workspace")).unwrap();
        Ws { outer }
    }

    fn dir(&self) -> Dir {
        Dir::open_ambient_dir(self.outer.path().join("workspace"), ambient_authority()).unwrap()
    }

    fn extract(&self, archive: &[u8], budgets: Budgets) -> Result<crownest_sandbox::ExtractReport, ExtractError> {
        extract_tar_gz(archive, &self.dir(), budgets, None, &mut |_, _| {})
    }

    fn extract_with(
        &self,
        archive: &[u8],
        options: ExtractOptions,
    ) -> Result<crownest_sandbox::ExtractReport, ExtractError> {
        extract_tar_gz_with(archive, &self.dir(), Budgets::default(), None, options, &mut |_, _| {})
    }

    /// Everything that exists next to the workspace (must stay just `workspace`).
    fn outside(&self) -> Vec<String> {
        std::fs::read_dir(self.outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

fn refused(r: Result<crownest_sandbox::ExtractReport, ExtractError>, entry: &str, why: &str) {
    match r {
        Err(ExtractError::Refused { entry: e, reason }) => {
            assert_eq!(e, entry);
            assert!(reason.contains(why), "reason {reason:?} should mention {why:?}");
        }
        other => panic!("expected entry `{entry}` to be refused, got {other:?}"),
    }
}

#[test]
fn a_normal_archive_extracts_with_progress() {
    let ws = Ws::new();
    let tar = raw_tar(&[
        E { name: b"./", kind: b'5', data: b"", link: b"", mode: 0o755 },
        E { name: b"src/", kind: b'5', data: b"", link: b"", mode: 0o755 },
        file("src/main.py", b"print('hi')\n"),
        E { name: b"src/link.py", kind: b'2', data: b"", link: b"main.py", mode: 0o777 },
        E { name: b"top-link", kind: b'2', data: b"", link: b"src/../src/main.py", mode: 0o777 },
        E { name: b"run.sh", kind: b'0', data: b"#!/bin/sh\n", link: b"", mode: 0o4755 },
    ]);
    let mut seen = Vec::new();
    let report =
        extract_tar_gz(&gz(&tar)[..], &ws.dir(), Budgets::default(), None, &mut |b, n| seen.push((b, n))).unwrap();
    assert_eq!(report.entries, 6);
    assert_eq!(report.content_bytes, 22);
    assert_eq!(report.masked_modes, 1, "the setuid bit is masked");
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "progress only moves forward: {seen:?}");
    let root = ws.outer.path().join("workspace");
    assert_eq!(std::fs::read_to_string(root.join("src/link.py")).unwrap(), "print('hi')\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(root.join("run.sh")).unwrap().permissions().mode() & 0o7777, 0o755);
}

/// A path that appears twice: the later entry wins, content and mode, in
/// both directions (a larger file made executable, a smaller one made
/// read-only).
#[test]
fn a_repeated_path_takes_the_later_entrys_content_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Ws::new();
    let tar = raw_tar(&[
        E { name: b"tool", kind: b'0', data: b"first version, longer\n", link: b"", mode: 0o644 },
        E { name: b"tool", kind: b'0', data: b"#!/bin/sh\n", link: b"", mode: 0o755 },
        E { name: b"notes", kind: b'0', data: b"x", link: b"", mode: 0o755 },
        E { name: b"notes", kind: b'0', data: b"yy", link: b"", mode: 0o600 },
    ]);
    extract_tar_gz(&gz(&tar)[..], &ws.dir(), Budgets::default(), None, &mut |_, _| {}).unwrap();
    let root = ws.outer.path().join("workspace");
    let mode = |n: &str| std::fs::metadata(root.join(n)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(std::fs::read_to_string(root.join("tool")).unwrap(), "#!/bin/sh\n");
    assert_eq!(mode("tool"), 0o755);
    assert_eq!(std::fs::read_to_string(root.join("notes")).unwrap(), "yy");
    assert_eq!(mode("notes"), 0o600);
}

#[test]
fn dotdot_traversal_is_refused() {
    let ws = Ws::new();
    refused(ws.extract(&gz(&raw_tar(&[file("../evil.txt", b"x")])), Budgets::default()), "../evil.txt", "..");
    refused(ws.extract(&gz(&raw_tar(&[file("a/../../evil.txt", b"x")])), Budgets::default()), "a/../../evil.txt", "..");
    assert_eq!(ws.outside(), ["workspace"]);
}

#[test]
fn absolute_paths_are_refused() {
    let ws = Ws::new();
    let target = ws.outer.path().join("abs.txt").display().to_string();
    let r = ws.extract(&gz(&raw_tar(&[file(&target, b"x")])), Budgets::default());
    refused(r, &target, "absolute");
    assert_eq!(ws.outside(), ["workspace"]);
}

/// A symlink pointing out of the workspace is left out with a warning
/// naming it (the rest is extracted), or refuses the archive in strict mode.
#[test]
fn symlinks_out_are_skipped_or_refused_in_strict_mode() {
    let cases = [("esc", "..", "outside"), ("deep/esc", "../../x", "outside"), ("pw", "/etc/passwd", "absolute")];
    for (name, to, why) in cases {
        let archive = gz(&raw_tar(&[file("before.txt", b"1"), link(name, to), file("after.txt", b"2")]));
        let ws = Ws::new();
        let report = ws.extract(&archive, Budgets::default()).unwrap();
        assert_eq!(report.skipped.len(), 1, "{report:?}");
        assert_eq!(report.skipped[0].entry, name);
        assert!(report.skipped[0].reason.contains(why), "{:?}", report.skipped[0]);
        let root = ws.outer.path().join("workspace");
        assert!(std::fs::symlink_metadata(root.join(name)).is_err(), "`{name}` was not created");
        assert_eq!(std::fs::read(root.join("after.txt")).unwrap(), b"2", "the rest is extracted");
        let strict = Ws::new();
        refused(strict.extract_with(&archive, ExtractOptions { strict: true }), name, why);
        for w in [&ws, &strict] {
            assert_eq!(w.outside(), ["workspace"]);
        }
    }
}

fn link<'a>(name: &'a str, to: &'a str) -> E<'a> {
    E { name: name.as_bytes(), kind: b'2', data: b"", link: to.as_bytes(), mode: 0o777 }
}

fn hard<'a>(name: &'a str, to: &'a str) -> E<'a> {
    E { name: name.as_bytes(), kind: b'1', data: b"", link: to.as_bytes(), mode: 0o644 }
}

#[test]
fn writes_through_or_over_symlinks_are_refused() {
    // A symlink inside the workspace, then a file "through" it.
    let ws = Ws::new();
    let r = ws.extract(
        &gz(&raw_tar(&[
            E { name: b"sub/", kind: b'5', data: b"", link: b"", mode: 0o755 },
            link("via", "sub"),
            file("via/f.txt", b"x"),
        ])),
        Budgets::default(),
    );
    refused(r, "via/f.txt", "symlink");
    // A file, or a hardlink, replacing a symlink of the same name.
    let ws2 = Ws::new();
    let r = ws2.extract(&gz(&raw_tar(&[link("same", "x"), file("same", b"data")])), Budgets::default());
    refused(r, "same", "symlink");
    let ws3 = Ws::new();
    let r = ws3.extract(&gz(&raw_tar(&[file("f", b"1"), link("same", "f"), hard("same", "f")])), Budgets::default());
    refused(r, "same", "symlink");
    for w in [&ws, &ws2, &ws3] {
        assert_eq!(w.outside(), ["workspace"]);
    }
}

#[test]
fn devices_fifos_and_hardlinks_out_are_refused() {
    let ws = Ws::new();
    refused(ws.extract(&gz(&raw_tar(&[hard("hard", "/etc/passwd")])), Budgets::default()), "hard", "hardlink target");
    refused(ws.extract(&gz(&raw_tar(&[hard("up", "../secret")])), Budgets::default()), "up", "hardlink target");
    let dev = E { name: b"null", kind: b'3', data: b"", link: b"", mode: 0o666 };
    refused(ws.extract(&gz(&raw_tar(&[dev])), Budgets::default()), "null", "device");
    let blk = E { name: b"sda", kind: b'4', data: b"", link: b"", mode: 0o666 };
    refused(ws.extract(&gz(&raw_tar(&[blk])), Budgets::default()), "sda", "device");
    let fifo = E { name: b"pipe", kind: b'6', data: b"", link: b"", mode: 0o666 };
    refused(ws.extract(&gz(&raw_tar(&[fifo])), Budgets::default()), "pipe", "FIFO");
    assert_eq!(ws.outside(), ["workspace"]);
}

/// GNU tar recreates hardlinks; so do we, to a regular file extracted
/// before the link, and to nothing else.
#[test]
fn hardlinks_to_earlier_regular_files_are_made() {
    use std::os::unix::fs::MetadataExt;
    let ws = Ws::new();
    let big = vec![9u8; 300 * 1024];
    ws.extract(
        &gz(&raw_tar(&[
            file("a/orig.txt", b"shared"),
            hard("b/link.txt", "a/orig.txt"),
            E { name: b"big.bin", kind: b'0', data: &big, link: b"", mode: 0o600 },
            hard("big-link", "./big.bin"),
            // A later entry of the linked name is a new file: the link keeps
            // the old content, as with GNU tar.
            file("a/orig.txt", b"replaced"),
        ])),
        Budgets::default(),
    )
    .unwrap();
    let root = ws.outer.path().join("workspace");
    assert_eq!(std::fs::read(root.join("b/link.txt")).unwrap(), b"shared");
    assert_eq!(std::fs::read(root.join("a/orig.txt")).unwrap(), b"replaced");
    let (l, b) = (std::fs::metadata(root.join("big-link")).unwrap(), std::fs::metadata(root.join("big.bin")).unwrap());
    assert_eq!((l.ino(), l.nlink()), (b.ino(), 2), "a real hardlink");

    let dir = E { name: b"d/", kind: b'5', data: b"", link: b"", mode: 0o755 };
    let refusals: [(Vec<E>, &str, &str); 4] = [
        (vec![hard("early", "later.txt"), file("later.txt", b"x")], "early", "not a regular file extracted before it"),
        (vec![dir, hard("to-dir", "d")], "to-dir", "not a regular file"),
        (vec![link("s", "x"), hard("to-link", "s")], "to-link", "not a regular file"),
        (vec![file("self", b"x"), hard("self", "self")], "self", "itself"),
    ];
    for (entries, name, why) in refusals {
        let ws = Ws::new();
        refused(ws.extract(&gz(&raw_tar(&entries)), Budgets::default()), name, why);
    }
}

#[test]
fn names_over_the_limits_are_refused() {
    let ws = Ws::new();
    let long = "x".repeat(256);
    let b = Budgets { max_path_bytes: 100, max_depth: 3, ..Budgets::default() };
    refused(
        ws.extract(&gz(&raw_tar(&[file(&long[..99], b"")])), Budgets { max_path_bytes: 90, ..b }),
        &long[..99],
        "longer than 90",
    );
    refused(ws.extract(&gz(&raw_tar(&[file("a/b/c/d.txt", b"")])), b), "a/b/c/d.txt", "deeper than 3");
}

/// Compressed tar stream generated on the fly: `n` empty files.
fn many_empty_entries(n: u32) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    for i in 0..n {
        let name = format!("f{i:07}");
        enc.write_all(&header(&file(&name, b""))).unwrap();
    }
    enc.write_all(&[0u8; 1024]).unwrap();
    enc.finish().unwrap()
}

#[test]
fn a_million_empty_entries_hit_the_entry_budget() {
    let ws = Ws::new();
    let archive = many_empty_entries(1_000_000);
    let r = ws.extract(&archive, Budgets { max_entries: 5_000, ..Budgets::default() });
    match r {
        Err(ExtractError::Budget(m)) => assert!(m.contains("more than 5000 entries"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(ws.outer.path().join("workspace")).unwrap().count(), 5_000);
}

#[test]
fn a_gzip_bomb_hits_the_ratio_budget_while_streaming() {
    let ws = Ws::new();
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    let size: u64 = 512 << 20;
    let mut h = header(&file("zeros", b""));
    let s = format!("{:011o}\0", size);
    h[124..136].copy_from_slice(s.as_bytes());
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    enc.write_all(&h).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(size >> 20) {
        enc.write_all(&zeros).unwrap();
    }
    enc.write_all(&[0u8; 1024]).unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "a real bomb: {} bytes", bomb.len());
    match ws.extract(&bomb, Budgets::default()) {
        Err(ExtractError::Budget(m)) => {
            assert!(m.contains("compression ratio") && m.contains("archive_max_compression_ratio"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let written = std::fs::metadata(ws.outer.path().join("workspace/zeros")).map(|m| m.len()).unwrap_or(0);
    assert!(written < 64 << 20, "stopped early, after {written} bytes");
}

#[test]
fn the_total_size_budget_holds() {
    let ws = Ws::new();
    let data = vec![7u8; 3000];
    let r = ws.extract(
        &gz(&raw_tar(&[file("a", &data), file("b", &data)])),
        Budgets { max_total_bytes: 5000, ..Budgets::default() },
    );
    assert!(matches!(r, Err(ExtractError::Budget(ref m)) if m.contains("5000 bytes")), "{r:?}");
}

#[test]
fn truncated_corrupt_and_non_archives_are_refused() {
    let ws = Ws::new();
    let good = gz(&raw_tar(&[file("a.txt", &vec![b'a'; 200_000]), file("b.txt", b"b")]));
    let corrupt_kind = |r: Result<_, ExtractError>| matches!(r, Err(ExtractError::Corrupt(_)));
    assert!(corrupt_kind(ws.extract(&good[..good.len() / 2], Budgets::default())), "truncated");
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    for b in &mut flipped[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let r = Ws::new().extract(&flipped, Budgets::default());
    assert!(corrupt_kind(r), "corrupt deflate data");
    let r = Ws::new().extract(&raw_tar(&[file("plain.txt", b"x")]), Budgets::default());
    assert!(corrupt_kind(r), "a tar that is not gzipped");
    let r = Ws::new().extract(&gz(b"this is not a tar archive at all, just text that goes on for a while........................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................."), Budgets::default());
    assert!(r.is_err(), "gzip of non-tar data: {r:?}");
}

#[test]
fn extracted_entries_belong_to_the_sandbox_uid() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let ws = Ws::new();
    let tar = raw_tar(&[E { name: b"d/", kind: b'5', data: b"", link: b"", mode: 0o755 }, file("d/f", b"x")]);
    extract_tar_gz(&gz(&tar)[..], &ws.dir(), Budgets::default(), Some((2_345_678, 2_345_678)), &mut |_, _| {}).unwrap();
    use std::os::unix::fs::MetadataExt;
    let root = ws.outer.path().join("workspace");
    assert_eq!(std::fs::metadata(root.join("d")).unwrap().uid(), 2_345_678);
    assert_eq!(std::fs::metadata(root.join("d/f")).unwrap().uid(), 2_345_678);
}

#[test]
fn export_resolves_only_inside_the_workspace() {
    let ws = Ws::new();
    let root = ws.outer.path().join("workspace");
    std::fs::write(ws.outer.path().join("secret"), "outside").unwrap();
    std::fs::create_dir(root.join("out")).unwrap();
    std::fs::write(root.join("out/report.txt"), "report").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret", root.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("out/report.txt", root.join("good-link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let dir = ws.dir();

    let (mut f, size) = open_export(&dir, "out/report.txt", 1024).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!((s.as_str(), size), ("report", 6));
    assert!(open_export(&dir, "good-link", 1024).is_ok(), "a symlink staying inside is followed");

    assert!(matches!(open_export(&dir, "abs-link", 1024), Err(ExportError::Outside(_))));
    assert!(matches!(open_export(&dir, "rel-link", 1024), Err(ExportError::Outside(_))));
    assert!(matches!(open_export(&dir, "../secret", 1024), Err(ExportError::InvalidPath { .. })));
    assert!(matches!(open_export(&dir, "fifo", 1024), Err(ExportError::NotRegular { kind: "FIFO", .. })));
    assert!(matches!(open_export(&dir, "out", 1024), Err(ExportError::NotRegular { kind: "directory", .. })));
    assert!(matches!(open_export(&dir, "out/report.txt", 3), Err(ExportError::TooLarge { size: 6, max: 3, .. })));
    assert!(matches!(open_export(&dir, "missing.txt", 1024), Err(ExportError::NotFound(_))));
}

/// Small files are written by a second thread; the result must be the same
/// as writing entries one at a time, in archive order.
#[test]
fn extraction_keeps_archive_order_with_its_writer_thread() {
    let dir = |name: &'static str| E { name: name.as_bytes(), kind: b'5', data: b"", link: b"", mode: 0o755 };
    // A later entry of the same name wins, small or large.
    let ws = Ws::new();
    let big = vec![7u8; 300 * 1024];
    let names: Vec<String> = (0..500).map(|i| format!("d{}/f{i}.txt", i % 7)).collect();
    let mut entries: Vec<E> = names.iter().map(|n| file(n, b"first")).collect();
    entries.push(file("d3/f3.txt", b"second"));
    entries.push(file("dup.bin", b"small first"));
    entries.push(E { name: b"dup.bin", kind: b'0', data: &big, link: b"", mode: 0o600 });
    entries.push(file("dup2.bin", &big));
    entries.push(file("dup2.bin", b"small last"));
    let report = ws.extract(&gz(&raw_tar(&entries)), Budgets::default()).unwrap();
    assert_eq!(report.entries, 505);
    let root = ws.outer.path().join("workspace");
    assert_eq!(std::fs::read(root.join("d3/f3.txt")).unwrap(), b"second");
    assert_eq!(std::fs::read(root.join("d6/f6.txt")).unwrap(), b"first");
    assert_eq!(std::fs::read(root.join("dup.bin")).unwrap(), big);
    assert_eq!(std::fs::read(root.join("dup2.bin")).unwrap(), b"small last");

    // A queued file, then a directory, a symlink or a path through it.
    refused(
        Ws::new().extract(&gz(&raw_tar(&[file("x", b"1"), dir("x/")])), Budgets::default()),
        "x/",
        "already exists",
    );
    let link = E { name: b"y", kind: b'2', data: b"", link: b"z", mode: 0o777 };
    refused(Ws::new().extract(&gz(&raw_tar(&[file("y", b"1"), link])), Budgets::default()), "y", "already exists");
    refused(
        Ws::new().extract(&gz(&raw_tar(&[file("p", b"1"), file("p/q", b"2")])), Budgets::default()),
        "p/q",
        "a parent directory is a symlink or a file",
    );
    // A directory, then a file of the same name: the writer's refusal names the entry.
    refused(Ws::new().extract(&gz(&raw_tar(&[dir("w/"), file("w", b"1")])), Budgets::default()), "w", "directory");
}
