//! Archives as people really make them: one fixed tree (sparse file, long
//! names and link targets, non-ASCII names, a 555 directory, set mtimes,
//! an executable, symlinks, a hardlink, an empty directory) is archived at
//! test time by every tar implementation at hand, in each of its formats:
//! GNU tar (pax, gnu, ustar, oldgnu, v7; sparse files as PAX 0.0, 0.1,
//! 1.0 and old GNU), `git archive` (with and without `--prefix`), Python's
//! `tarfile` (ustar, GNU, PAX), bsdtar (libarchive) and Perl's
//! `Archive::Tar`. Each archive is extracted by GNU tar into one directory
//! and by us into another, and every entry must match: name, type, bytes,
//! permission bits, mtime to the nanosecond, symlink target, link count.
//! `star` is not in Debian, so it is not here.
//!
//! The tools come with `scripts/setup --test`. A missing one fails the test
//! under CI (`CI=true`), and is reported as skipped elsewhere.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use crownest_sandbox::extract::{Budgets, extract_tar_gz};

const MIB: u64 = 1 << 20;

fn long_name() -> String {
    format!("long/{}.txt", "n".repeat(120))
}

fn deep_name() -> String {
    format!("deep/{}/{}/{}.txt", "d".repeat(100), "e".repeat(100), "f".repeat(80))
}

/// Pseudo-random bytes (xorshift), so sizes are real after compression.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: secs, tv_nsec: nanos },
        last_modification: rustix::fs::Timespec { tv_sec: secs, tv_nsec: nanos },
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// The fixed tree every tool archives.
fn fixed_tree(root: &Path) {
    let write = |rel: &str, data: &[u8], mode: u32| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write("empty.txt", b"", 0o644);
    write("small.txt", b"hello\n", 0o644);
    write("medium.bin", &noise(100_000, 1), 0o644);
    write("large.bin", &noise(600_000, 2), 0o640);
    write("exec.sh", b"#!/bin/sh\necho hi\n", 0o755);
    write("old.txt", b"2001\n", 0o644);
    write("future.txt", b"2100\n", 0o644);
    write("nanos.txt", b"ns\n", 0o644);
    write("\u{fc}n\u{ef}c\u{f8}d\u{e9}/\u{65e5}\u{672c}\u{8a9e}.txt", "日本語\n".as_bytes(), 0o644);
    write("emoji-\u{1f980}.txt", b"crab\n", 0o644);
    write(&long_name(), b"long\n", 0o644);
    write(&deep_name(), b"deep\n", 0o644);
    write("hard-a.txt", b"linked\n", 0o644);
    std::fs::hard_link(root.join("hard-a.txt"), root.join("hard-b.txt")).unwrap();
    write("ro/inside.txt", b"read-only dir\n", 0o444);
    write("private/secret.txt", b"s\n", 0o600);
    std::fs::create_dir(root.join("empty-dir")).unwrap();
    // 3 MiB with two 4 KiB data regions; the rest is holes.
    let sparse = std::fs::File::create(root.join("sparse.bin")).unwrap();
    sparse.set_len(3 * MIB).unwrap();
    sparse.write_all_at(&[b'a'; 4096], MIB).unwrap();
    sparse.write_all_at(&[b'z'; 4096], 3 * MIB - 4096).unwrap();
    drop(sparse);
    std::fs::create_dir(root.join("links")).unwrap();
    let link = |target: &str, name: &str| std::os::unix::fs::symlink(target, root.join(name)).unwrap();
    link("../small.txt", "links/to-small");
    link(&format!("../{}", long_name()), "links/long-target");
    link("../ro", "links/dir-link");
    // Times last, deepest first: files, then links, then directories.
    let mut all: Vec<PathBuf> = walk(root);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_500_000_000 + i as i64 * 1000, 0);
    }
    set_mtime(&root.join("old.txt"), 1_000_000_000, 0);
    set_mtime(&root.join("future.txt"), 4_102_444_800, 0);
    set_mtime(&root.join("nanos.txt"), 1_600_000_000, 123_456_789);
    for (dir, mode) in [("ro", 0o555), ("private", 0o700), ("empty-dir", 0o750)] {
        std::fs::set_permissions(root.join(dir), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Every path below `root` (not `root` itself), parents first.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// What is compared of each extracted entry.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    mtime: (i64, i64),
    size: u64,
    content: u64,
    link: String,
    nlink: u64,
}

fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    walk(root)
        .into_iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = String::from_utf8_lossy(p.strip_prefix(root).unwrap().as_os_str().as_bytes()).into_owned();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "other"
            };
            let mut content = 0;
            if ft.is_file() {
                let mut h = std::hash::DefaultHasher::new();
                std::fs::read(&p).unwrap().hash(&mut h);
                content = h.finish();
            }
            let link = if ft.is_symlink() {
                String::from_utf8_lossy(std::fs::read_link(&p).unwrap().as_os_str().as_bytes()).into_owned()
            } else {
                String::new()
            };
            let node = Node {
                kind,
                mode: m.mode() & 0o7777,
                mtime: (m.mtime(), m.mtime_nsec()),
                size: if ft.is_dir() { 0 } else { m.size() },
                content,
                link,
                nlink: if ft.is_file() { m.nlink() } else { 0 },
            };
            (rel, node)
        })
        .collect()
}

/// (tree, git repository, output archive) → the command that makes it.
type MakeFn = Box<dyn Fn(&Path, &Path, &Path) -> Command>;

/// One way of making an archive.
struct Maker {
    name: String,
    /// The program whose absence skips (or, under CI, fails) this maker.
    needs: &'static str,
    /// Builds `out` from the tree (or the git repository holding it).
    make: MakeFn,
    /// The format stores names over 100 bytes (and link targets).
    long: bool,
    /// The archive must carry sparse members.
    sparse: bool,
}

fn gnu(format: &str, extra: &[&str]) -> Maker {
    let (format, extra): (String, Vec<String>) = (format.into(), extra.iter().map(|s| s.to_string()).collect());
    let long = !matches!(format.as_str(), "ustar" | "v7");
    let name = format!("gnu tar --format={format} {}", extra.join(" "));
    Maker {
        sparse: extra.iter().any(|e| e == "-S"),
        name,
        needs: "tar",
        long,
        make: Box::new(move |tree, _, out| {
            let mut c = Command::new("tar");
            c.arg(format!("--format={format}")).args(&extra).args(["--sort=name", "-cf"]).arg(out).arg("-C").arg(tree);
            c.arg(".");
            c
        }),
    }
}

fn makers() -> Vec<Maker> {
    let mut m = vec![
        gnu("pax", &[]),
        gnu("gnu", &[]),
        gnu("ustar", &[]),
        gnu("oldgnu", &[]),
        gnu("v7", &[]),
        gnu("pax", &["-S", "--sparse-version=0.0"]),
        gnu("pax", &["-S", "--sparse-version=0.1"]),
        gnu("pax", &["-S", "--sparse-version=1.0"]),
        gnu("gnu", &["-S"]),
        gnu("oldgnu", &["-S"]),
    ];
    for prefix in [None, Some("proj/")] {
        m.push(Maker {
            name: format!("git archive {}", prefix.map(|p| format!("--prefix={p}")).unwrap_or_default()),
            needs: "git",
            long: true,
            sparse: false,
            make: Box::new(move |_, repo, out| {
                let mut c = Command::new("git");
                c.arg("-C").arg(repo).args(["archive", "--format=tar", "-o"]).arg(out);
                if let Some(p) = prefix {
                    c.arg(format!("--prefix={p}"));
                }
                c.arg("HEAD");
                c
            }),
        });
    }
    for (format, long) in [("USTAR_FORMAT", false), ("GNU_FORMAT", true), ("PAX_FORMAT", true)] {
        m.push(Maker {
            name: format!("python tarfile {format}"),
            needs: "python3",
            long,
            sparse: false,
            make: Box::new(move |tree, _, out| {
                let mut c = Command::new("python3");
                c.arg("-c").arg(PYTHON).arg(format).arg(tree).arg(out);
                c
            }),
        });
    }
    for (format, long, sparse) in [
        ("pax", true, true),
        ("paxr", true, true),
        ("ustar", false, false),
        ("gnutar", true, false),
        ("v7", false, false),
    ] {
        m.push(Maker {
            name: format!("bsdtar --format {format}"),
            needs: "bsdtar",
            long,
            sparse,
            make: Box::new(move |tree, _, out| {
                let mut c = Command::new("bsdtar");
                c.args(["--format", format, "-cf"]).arg(out).arg("-C").arg(tree).arg(".");
                c
            }),
        });
    }
    for no_prefix in ["", "1"] {
        m.push(Maker {
            name: format!("perl Archive::Tar{}", if no_prefix.is_empty() { "" } else { " DO_NOT_USE_PREFIX" }),
            needs: "perl",
            long: true,
            sparse: false,
            make: Box::new(move |tree, _, out| {
                let mut c = Command::new("perl");
                c.arg("-e").arg(PERL).arg(tree).arg(out).arg(no_prefix);
                c
            }),
        });
    }
    m
}

/// Adds each path on its own (a name a format cannot hold is left out
/// instead of ending the archive), parents before children.
const PYTHON: &str = r#"
import os, sys, tarfile
fmt, src, out = getattr(tarfile, sys.argv[1]), sys.argv[2], sys.argv[3]
os.chdir(src)
with tarfile.open(out, "w", format=fmt) as t:
    for d, dirs, files in os.walk("."):
        dirs.sort()
        for n in sorted(dirs + files):
            p = os.path.join(d, n)[2:]
            try:
                t.add(p, recursive=False)
            except ValueError as e:
                print(f"left out {p}: {e}", file=sys.stderr)
"#;

const PERL: &str = r#"
use strict; use Archive::Tar; use File::Find;
my ($src, $out, $no_prefix) = @ARGV;
$Archive::Tar::DO_NOT_USE_PREFIX = 1 if $no_prefix;
chdir $src or die "chdir: $!";
my @f;
find({ wanted => sub { push @f, $File::Find::name if $_ ne '.' }, no_chdir => 1 }, '.');
s{^\./}{} for @f;
Archive::Tar->create_archive($out, 0, sort @f) or die Archive::Tar->error;
"#;

/// A git repository holding the tree (git keeps no mtimes, directory
/// modes, empty directories or hardlinks: its archives differ from the
/// tree, and are compared like any other).
fn git_repo(tree: &Path, repo: &Path) -> bool {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", repo)
            .env("GIT_AUTHOR_DATE", "2024-01-02T03:04:05Z")
            .env("GIT_COMMITTER_DATE", "2024-01-02T03:04:05Z")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    std::fs::create_dir_all(repo).unwrap();
    let copied = Command::new("cp").arg("-a").arg(tree.join(".")).arg(repo).status().unwrap().success();
    copied
        && git(&["init", "-q"])
        && git(&["add", "-A"])
        && git(&["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "tree"])
}

fn have(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success())
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Make directories writable again so the temporary directory can go.
fn unlock(root: &Path) {
    for p in walk(root) {
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// Whether an archive holds a sparse member, read by our own reader.
fn has_sparse_member(tar: &[u8]) -> bool {
    let mut r = crownest_sandbox::tar::Reader::new(tar);
    while let Some(m) = r.next_member().unwrap() {
        if m.sparse.is_some() {
            return true;
        }
    }
    false
}

#[test]
fn every_tools_archive_extracts_exactly_as_gnu_tar_extracts_it() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fixed_tree(&tree);
    let repo = work.path().join("repo");
    let have_git = have("git") && git_repo(&tree, &repo);
    let mut failures = Vec::new();
    let mut compared = 0;
    for (i, maker) in makers().into_iter().enumerate() {
        if !have(maker.needs) || (maker.needs == "git" && !have_git) {
            assert!(!ci, "`{}` is missing: scripts/setup --test installs it", maker.needs);
            eprintln!("SKIPPED {}: `{}` is not installed (scripts/setup --test installs it)", maker.name, maker.needs);
            continue;
        }
        let out = work.path().join(format!("{i}.tar"));
        let made = (maker.make)(&tree, &repo, &out).output().unwrap();
        let tar = std::fs::read(&out).unwrap_or_default();
        assert!(!tar.is_empty(), "{} made no archive: {}", maker.name, String::from_utf8_lossy(&made.stderr));
        if maker.sparse {
            assert!(has_sparse_member(&tar), "{} wrote no sparse member", maker.name);
        }

        let theirs = work.path().join(format!("{i}-gnu"));
        let ours = work.path().join(format!("{i}-ours"));
        std::fs::create_dir(&theirs).unwrap();
        std::fs::create_dir(&ours).unwrap();
        // GNU tar sets a directory's mtime when the archive moves on to
        // another directory; when its contents come later (Python, bsdtar
        // list a directory's entry long before its contents) the mtime is
        // that of the extraction. `--delay-directory-restore` sets them at
        // the end, as we do: a build can rely on that result.
        let gnu = Command::new("tar")
            .args(["-xpf"])
            .arg(&out)
            .args(["--no-same-owner", "--delay-directory-restore", "-C"])
            .arg(&theirs)
            .output()
            .unwrap();
        assert!(gnu.status.success(), "GNU tar failed on {}: {}", maker.name, String::from_utf8_lossy(&gnu.stderr));
        let dir = Dir::open_ambient_dir(&ours, ambient_authority()).unwrap();
        let report = match extract_tar_gz(&gz(&tar)[..], &dir, Budgets::default(), None, &mut |_, _| {}) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: we refused the archive: {e}", maker.name));
                continue;
            }
        };
        assert!(report.skipped.is_empty(), "{}: {:?}", maker.name, report.skipped);

        let (want, got) = (snapshot(&theirs), snapshot(&ours));
        let failures_before = failures.len();
        let base = if maker.name.contains("--prefix") { "proj/" } else { "" };
        for must in ["small.txt", "exec.sh", "ro/inside.txt", "links/to-small", "sparse.bin", "empty.txt"] {
            assert!(want.contains_key(&format!("{base}{must}")), "{} lacks {must}", maker.name);
        }
        if maker.long {
            for must in [long_name(), deep_name(), "links/long-target".into()] {
                assert!(want.contains_key(&format!("{base}{must}")), "{} lacks {must}", maker.name);
            }
        }
        if maker.sparse {
            let blocks = std::fs::metadata(ours.join("sparse.bin")).unwrap().blocks();
            assert!(blocks * 512 < MIB, "{}: our sparse.bin keeps its holes ({blocks} blocks)", maker.name);
        }
        for (path, node) in &want {
            match got.get(path) {
                Some(g) if g == node => {}
                Some(g) => failures.push(format!("{}: `{path}` differs:\n  gnu:  {node:?}\n  ours: {g:?}", maker.name)),
                None => failures.push(format!("{}: `{path}` missing from ours", maker.name)),
            }
        }
        for path in got.keys().filter(|p| !want.contains_key(*p)) {
            failures.push(format!("{}: `{path}` extracted by us only", maker.name));
        }
        compared += 1;
        if failures.len() == failures_before {
            eprintln!("{:<45} {} entries identical", maker.name, want.len());
        }
        unlock(&theirs);
        unlock(&ours);
    }
    unlock(&tree);
    unlock(&repo);
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
    assert!(compared >= 10, "only {compared} archives compared");
}
