//! Archives people make, end to end: `git archive` tarballs of a real
//! repository go through the real CLI and server into a sandbox byte for
//! byte (modes and mtimes included), and an archive with an absolute
//! symlink runs with that entry left out and reported in its events.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The commit time `git archive` gives every entry.
const COMMIT_TIME: i64 = 1_704_164_645; // 2024-01-02T03:04:05Z

/// (path, contents, mode) of the repository's files.
fn repo_files() -> Vec<(&'static str, Vec<u8>, u32)> {
    vec![
        ("README.md", b"# demo\n".to_vec(), 0o644),
        ("run.sh", b"#!/bin/sh\necho \"ran $(basename \"$0\")\"\n".to_vec(), 0o755),
        ("src/main.py", b"print('main')\n".to_vec(), 0o644),
        ("src/lib/util.py", b"def f():\n    return 1\n".to_vec(), 0o644),
        ("data/noise.bin", noise(300_000, 7), 0o644),
    ]
}

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", repo)
        .env("GIT_AUTHOR_DATE", "2024-01-02T03:04:05Z")
        .env("GIT_COMMITTER_DATE", "2024-01-02T03:04:05Z")
        .output()
        .expect("git is installed (scripts/setup --test)");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A repository of `repo_files()` with one commit.
fn make_repo(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("repo");
    for (path, data, mode) in repo_files() {
        let p = repo.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "demo"]);
    repo
}

/// What the listing command prints for the repository under `prefix`.
fn expected_listing(prefix: &str) -> String {
    let mut files = repo_files();
    files.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::new();
    for (path, data, mode) in &files {
        // git keeps only the executable bit, and writes 0666 or 0777 less
        // its `tar.umask` (002).
        let archived = if mode & 0o100 != 0 { 0o775 } else { 0o664 };
        out.push_str(&format!("./{prefix}{path} {archived:o} {COMMIT_TIME} {}\n", sha256(data)));
    }
    out
}

/// Lists every file with its mode and mtime and checksums it, then runs
/// the script (its executable bit must have survived).
fn listing_command(prefix: &str) -> String {
    format!(
        "find . -type f | LC_ALL=C sort | while read -r f; do \
           printf '%s %s %s %s\\n' \"$f\" \"$(stat -c %a \"$f\")\" \"$(stat -c %Y \"$f\")\" \"$(sha256sum < \"$f\" | cut -d' ' -f1)\"; \
         done; ./{prefix}run.sh"
    )
}

#[test]
fn git_archive_tarballs_arrive_byte_exact_with_modes_and_mtimes() {
    let s = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    for prefix in ["", "proj/"] {
        let tgz = dir.path().join(format!("repo-{}.tgz", prefix.trim_end_matches('/')));
        let mut args = vec!["archive", "--format=tar.gz", "-o", tgz.to_str().unwrap()];
        let prefix_arg = format!("--prefix={prefix}");
        if !prefix.is_empty() {
            args.push(&prefix_arg);
        }
        args.push("HEAD");
        git(&repo, &args);
        let out = s
            .cli()
            .args(["workspace-runs", "run-archive", tgz.to_str().unwrap(), "--", &listing_command(prefix)])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let want = format!("{}ran run.sh\n", expected_listing(prefix));
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "prefix `{prefix}`: {stderr}");
    }
}

#[test]
fn an_absolute_symlink_is_left_out_and_reported_in_the_runs_events() {
    let s = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    // As a repository with a link to a path on its author's machine.
    let mut raw = Vec::new();
    let mut kept = tar::Header::new_ustar();
    kept.set_path("kept.txt").unwrap();
    kept.set_size(5);
    kept.set_mode(0o644);
    kept.set_cksum();
    raw.extend_from_slice(kept.as_bytes());
    raw.extend_from_slice(b"kept\n");
    raw.resize(raw.len().div_ceil(512) * 512, 0);
    let mut link = tar::Header::new_ustar();
    link.as_ustar_mut().unwrap().name[..10].copy_from_slice(b"config.yml");
    link.as_ustar_mut().unwrap().linkname[..24].copy_from_slice(b"/home/dev/etc/config.yml");
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_mode(0o777);
    link.set_cksum();
    raw.extend_from_slice(link.as_bytes());
    raw.extend_from_slice(&[0; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let tgz = dir.path().join("linked.tgz");
    std::fs::write(&tgz, gz.finish().unwrap()).unwrap();

    let out = s
        .cli()
        .args(["workspace-runs", "run-archive", tgz.to_str().unwrap(), "--json", "--"])
        .arg("cat kept.txt; test -e config.yml || echo 'no config.yml'")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["data"].clone())
        .collect();
    assert_eq!(stream_text(&events, "stdout"), "kept\nno config.yml\n");
    let warnings: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["type"] == "archive_progress" && !e["data"]["warning"].is_null()).collect();
    assert_eq!(warnings.len(), 1, "{events:?}");
    let w = &warnings[0]["data"]["warning"];
    assert_eq!(w["entry"], "config.yml");
    assert!(w["reason"].as_str().unwrap().contains("absolute"), "{w}");
    // Reported before the final extraction report, and the run went on.
    let done = events.iter().position(|e| e["type"] == "archive_progress" && e["data"]["done"] == true).unwrap();
    let warned = events.iter().position(|e| !e["data"]["warning"].is_null()).unwrap();
    assert!(warned < done, "{events:?}");
    assert_eq!(events.last().unwrap()["data"]["status"], "succeeded");

    // Asked to be strict, the run refuses the archive instead, naming it.
    let strict = tokio::runtime::Runtime::new().unwrap().block_on(async {
        Api::new(&s)
            .run(serde_json::json!({"command": "true", "strictArchive": true}), &std::fs::read(&tgz).unwrap())
            .await
    });
    assert_eq!(
        (strict["status"].as_str(), strict["failureReason"].as_str()),
        (Some("failed"), Some("archive_invalid")),
        "{strict}"
    );
    assert!(strict["failureMessage"].as_str().unwrap().contains("config.yml"), "{strict}");
    assert_eq!(strict["strictArchive"], true);
}
