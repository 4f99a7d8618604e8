//! The default runtime provider end to end: the embedded `linux-sandbox`
//! plugin (policy) on the host's mechanisms (real bubblewrap, cgroups,
//! seccomp), driven through core's `RuntimeProvider` port, with the real
//! `crownest` binary as the jail helper.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crownest_core::config::{Config, Grants, PluginConfig};
use crownest_core::kv::SqliteKv;
use crownest_core::ports::{
    ByteStream, ExecSpec, ExitStatus, ExtractProgress, RuntimeProvider, Sandbox, SandboxLimits, SandboxSpec,
};
use crownest_core::{ErrorKind, PluginKind};
use crownest_plugins::kinds::WasmRuntimeProvider;
use crownest_plugins::{PluginHost, PluginSource};
use crownest_sandbox::{SandboxConfig, SandboxHost};
use tokio::io::AsyncReadExt;

mod common;
use common::targz;

struct Env {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

impl Drop for Env {
    /// Reap what a failed test left (mounts and cgroups outlive a panic).
    fn drop(&mut self) {
        let mut cfg = SandboxConfig::defaults(env!("CARGO_BIN_EXE_crownest-jail").into());
        cfg.root = self.root.clone();
        if let Ok(host) = SandboxHost::new(cfg) {
            // Standbys the test's providers started are nobody's cells:
            // reaped as a restarted server reaps them.
            host.reap_standbys();
            for id in host.list_cells("runtime_provider") {
                if let Ok(cell) = host.open_cell("runtime_provider", &id) {
                    let _ = cell.destroy();
                }
            }
        }
    }
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::Builder::new().prefix("crownest-rt-").tempdir_in("/tmp").unwrap();
        let root = dir.path().join("cells");
        Env { _dir: dir, root }
    }

    /// A fresh host + provider, as after a restart.
    fn provider(&self, config: &[(&str, toml::Value)]) -> WasmRuntimeProvider {
        let mut cfg = SandboxConfig::defaults(env!("CARGO_BIN_EXE_crownest-jail").into());
        cfg.root = self.root.clone();
        let sbx = SandboxHost::new(cfg).unwrap();
        let host = PluginHost::for_config(&Config::default(), Arc::new(SqliteKv::in_memory().unwrap()))
            .unwrap()
            .with_sandbox(sbx);
        let mut table = PluginConfig::default();
        for (k, v) in config {
            table.config.insert(k.to_string(), v.clone());
        }
        let grants = Grants { sandbox: true, ..Grants::default() };
        let plugin = host
            .load(PluginKind::RuntimeProvider, PluginSource::Builtin("linux-sandbox".into()), &table, grants)
            .unwrap();
        WasmRuntimeProvider::new(plugin).unwrap()
    }
}

fn unique(p: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{p}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn spec(template: &str) -> SandboxSpec {
    SandboxSpec {
        id: unique("sbx"),
        template: template.into(),
        limits: SandboxLimits::default(),
        env: vec![("RUN_ID".into(), "wsr_test".into())],
        labels: vec![("run".into(), "wsr_test".into())],
    }
}

async fn run(sbx: &dyn Sandbox, cmd: &str) -> (ExitStatus, String, String) {
    let ex = sbx.exec(&ExecSpec { command: cmd.into(), env: vec![], cwd: "/workspace".into() }).await.unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut so, mut se) = (ex.stdout, ex.stderr);
    let (a, b) = tokio::join!(so.read_to_end(&mut out), se.read_to_end(&mut err));
    a.unwrap();
    b.unwrap();
    let o = ex.process.wait().await;
    (o.status, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repo_archive_runs_in_python_node_and_its_outputs_can_be_exported() {
    let env = Env::new();
    let p = env.provider(&[]);
    let sbx = p.create_sandbox(&spec("python-node")).await.unwrap();
    assert_eq!(sbx.info().template, "python-node");
    assert_eq!(sbx.info().template_digest.len(), 64);
    let archive = targz(&[
        (
            "main.py",
            b"import sys\nprint('py', sys.version_info.major)\nopen('out/report.txt','w').write('ok')\n",
            0o644,
        ),
        ("index.js", b"console.log('node', process.version.startsWith('v'))\n", 0o644),
        ("out/.keep", b"", 0o644),
    ]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let report = sbx
        .extract_archive(
            Box::new(std::io::Cursor::new(archive)) as ByteStream,
            "/workspace",
            ExtractProgress::new(move |b, e| s2.lock().unwrap().push((b, e))),
        )
        .await
        .unwrap();
    assert_eq!(report.entries, 3);
    assert!(!seen.lock().unwrap().is_empty(), "progress was reported");

    let (status, out, err) = run(sbx.as_ref(), "python3 main.py && node index.js && echo run=$RUN_ID && id -un").await;
    assert_eq!(status, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "py 3\nnode true\nrun=wsr_test\nsandbox\n");

    let (mut file, size) = sbx.open_file("/workspace/out/report.txt", 1024).await.unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).await.unwrap();
    assert_eq!((text.as_str(), size), ("ok", 2));

    let e = sbx.open_file("/etc/passwd", 1024).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    let (_, _, _) = run(sbx.as_ref(), "ln -s /etc/hostname /workspace/leak").await;
    let e = sbx.open_file("/workspace/leak", 1024).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(e.message.contains("outside"), "{e}");

    let written = sbx.write_file("/workspace/in.txt", Box::new(&b"from host"[..])).await.unwrap();
    assert_eq!(written, 9);
    assert_eq!(run(sbx.as_ref(), "cat in.txt").await.1, "from host");

    let (status, _, _) = run(sbx.as_ref(), "exit 7").await;
    assert_eq!(status, ExitStatus::Exited(7));
    sbx.destroy().await.unwrap();
    assert!(!p.list_sandboxes().await.unwrap().contains(&sbx.info().id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_are_refused_naming_the_entry() {
    let env = Env::new();
    let p = env.provider(&[]);
    let sbx = p.create_sandbox(&spec("base")).await.unwrap();
    // The tar crate refuses to build `..` paths, so write the name raw.
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..12].copy_from_slice(b"../../escape");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    raw.extend_from_slice(&[b'x'; 512]);
    raw.extend_from_slice(&[0; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let archive = gz.finish().unwrap();
    let e = sbx
        .extract_archive(Box::new(std::io::Cursor::new(archive)), "/workspace", ExtractProgress::default())
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    assert!(e.message.contains("`../../escape`") && e.message.contains(".."), "{e}");
    let e = sbx
        .extract_archive(Box::new(&b"not gzip at all"[..]), "/workspace", ExtractProgress::default())
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    assert!(e.message.contains("not a valid .tar.gz"), "{e}");
    sbx.destroy().await.unwrap();
}

/// An archive whose symlink points outside: the entry is left out and
/// reported through the port (the rest extracted), or, strict, refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escaping_symlink_is_reported_or_refused_when_strict() {
    let env = Env::new();
    let p = env.provider(&[]);
    let sbx = p.create_sandbox(&spec("base")).await.unwrap();
    let mut raw = Vec::new();
    let mut link = tar::Header::new_gnu();
    link.as_old_mut().name[..6].copy_from_slice(b"passwd");
    link.as_old_mut().linkname[..11].copy_from_slice(b"/etc/passwd");
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_mode(0o777);
    link.set_cksum();
    raw.extend_from_slice(link.as_bytes());
    let mut file = tar::Header::new_gnu();
    file.set_path("kept.txt").unwrap();
    file.set_size(4);
    file.set_mode(0o644);
    file.set_cksum();
    raw.extend_from_slice(file.as_bytes());
    raw.extend_from_slice(b"kept");
    raw.resize(raw.len().div_ceil(512) * 512 + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let archive = gz.finish().unwrap();

    let warnings = Arc::new(Mutex::new(Vec::new()));
    let w = warnings.clone();
    let progress = ExtractProgress {
        on_warning: Box::new(move |warning| w.lock().unwrap().push(warning)),
        ..ExtractProgress::default()
    };
    let r = sbx.extract_archive(Box::new(std::io::Cursor::new(archive.clone())), "/workspace", progress).await;
    assert_eq!(r.unwrap().entries, 2);
    let warnings = warnings.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].entry, "passwd");
    assert!(warnings[0].reason.contains("absolute"), "{warnings:?}");
    assert_eq!(run(sbx.as_ref(), "cat kept.txt; test -e passwd || echo absent").await.1, "keptabsent\n");

    let strict = ExtractProgress { strict: true, ..ExtractProgress::default() };
    let e =
        sbx.extract_archive(Box::new(std::io::Cursor::new(archive)), "/workspace/again", strict).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    assert!(e.message.contains("`passwd`") && e.message.contains("absolute"), "{e}");
    sbx.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_error_variant() {
    let env = Env::new();
    let p = env.provider(&[("max_memory_mib", toml::Value::Integer(1024))]);
    let e = p.create_sandbox(&spec("cobol")).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("unknown template `cobol`") && e.message.contains("python-node"), "{e}");
    let mut big = spec("base");
    big.limits.memory_bytes = Some(2048 << 20);
    let e = p.create_sandbox(&big).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::QuotaExceeded);
    assert!(e.message.contains("memory of 2048 MiB is above this provider's limit of 1024 MiB"), "{e}");
    let sbx = p.create_sandbox(&spec("base")).await.unwrap();
    let e = sbx.exec(&ExecSpec { command: "   ".into(), env: vec![], cwd: String::new() }).await.err().unwrap();
    assert_eq!(e.kind, ErrorKind::Invalid);
    sbx.destroy().await.unwrap();
    p.destroy_by_id("never-existed").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_override_template_defaults() {
    let env = Env::new();
    let p = env.provider(&[]);
    let mut s = spec("base");
    s.limits.open_files = Some(77);
    s.limits.disk_bytes = Some(8 << 20);
    let sbx = p.create_sandbox(&s).await.unwrap();
    assert_eq!(sbx.info().limits.open_files, Some(77));
    let (_, out, _) = run(sbx.as_ref(), "ulimit -n; df -m /workspace | tail -1 | tr -s ' ' | cut -d' ' -f2").await;
    assert_eq!(out, "77\n8\n");
    sbx.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_terminates_the_whole_tree() {
    let env = Env::new();
    let p = env.provider(&[]);
    let sbx = p.create_sandbox(&spec("base")).await.unwrap();
    let ex = sbx
        .exec(&ExecSpec {
            command: "trap '' TERM; (setsid sleep 1000 &); sleep 1000".into(),
            env: vec![],
            cwd: String::new(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = crownest_core::ports::runtime::terminate(ex.process.as_ref(), Duration::from_millis(300)).await;
    assert_eq!(o.status, ExitStatus::Signaled(9));
    sbx.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_host_finds_and_reaps_orphaned_sandboxes() {
    let env = Env::new();
    let orphan_id;
    {
        let p = env.provider(&[]);
        let sbx = p.create_sandbox(&spec("base")).await.unwrap();
        orphan_id = sbx.info().id.clone();
        // A daemon left running when the "server" goes away.
        let ex = sbx.exec(&ExecSpec { command: "sleep 1000".into(), env: vec![], cwd: String::new() }).await.unwrap();
        std::mem::forget(ex);
    }
    let p = env.provider(&[]);
    assert!(p.list_sandboxes().await.unwrap().contains(&orphan_id));
    let reopened = p.open_sandbox(&orphan_id).await.unwrap();
    assert_eq!(reopened.info().template, "base");
    p.destroy_by_id(&orphan_id).await.unwrap();
    assert!(!p.list_sandboxes().await.unwrap().contains(&orphan_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_node_provides_pnpm_when_the_host_has_it() {
    // scripts/setup installs pnpm; the template binds /usr read-only.
    if !std::path::Path::new("/usr/bin/pnpm").exists() {
        panic!("pnpm is missing on this host: run scripts/setup");
    }
    let env = Env::new();
    let p = env.provider(&[]);
    let sbx = p.create_sandbox(&spec("python-node")).await.unwrap();
    let (status, out, err) = run(sbx.as_ref(), "pnpm --version").await;
    assert_eq!(status, ExitStatus::Exited(0), "{err}");
    assert!(out.trim().starts_with("9."), "{out}");
    sbx.destroy().await.unwrap();
}
