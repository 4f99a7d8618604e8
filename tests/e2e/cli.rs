//! The `crownest` CLI end to end, against a real server: closed pipes,
//! start-up errors, exit codes, server restarts, Ctrl-C, terminal safety,
//! finding the server and its credentials, evidence as stored, artifacts,
//! the server's logs, and resumed uploads. Each test is what a user did
//! that went wrong before.

mod cli_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::*;
use common::*;
use crownest_test_support::server::Server;
use serde_json::{Value, json};

/// A `.tgz` on disk for `run-archive`.
fn archive(dir: &Path) -> PathBuf {
    let tgz = dir.join("repo.tgz");
    std::fs::write(&tgz, targz(&[("README", b"hello\n", 0o644), ("out/.keep", b"", 0o644)])).unwrap();
    tgz
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `crownest` with no `CROWNEST_*` setting of the test process.
fn bare() -> Command {
    let mut cmd = Command::new(exe());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("CROWNEST_")) {
        cmd.env_remove(k);
    }
    cmd
}

fn shared_cache() -> String {
    crownest_test_support::target_dir().join("e2e-compile-cache").display().to_string()
}

/// Run `args` through the CLI to the end.
fn run_cli(s: &Server, args: &[&str]) -> std::process::Output {
    s.cli().args(args).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let s = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let tgz = archive(dir.path());
    let out = run_cli(
        &s,
        &[
            "workspace-runs",
            "run-archive",
            tgz.to_str().unwrap(),
            "--artifact",
            "out/r.txt",
            "--",
            "echo kept > out/r.txt",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list = run_cli(&s, &["workspace-runs", "list", "--json"]);
    let id = serde_json::from_slice::<Value>(list.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let commands: &[&[&str]] = &[
        &["workspace-runs", "list", "--json"],
        &["workspace-runs", "list"],
        &["workspace-runs", "status", &id, "--json"],
        &["workspace-runs", "status", &id],
        &["artifacts", "list", "--run", &id, "--json"],
        &["workspace-runs", "evidence", &id],
        &["workspace-runs", "logs", &id],
        &["keys", "list"],
    ];
    for args in commands {
        let out = s.cli().args(*args).stdin(Stdio::null()).stdout(closed_stdout()).output().unwrap();
        if let Err(e) = ended_quietly(out.status, &out.stderr) {
            panic!("crownest {}: {e}", args.join(" "));
        }
    }
    // `doctor` runs in crownest-host, which keeps ignoring SIGPIPE.
    let data = tempfile::tempdir().unwrap();
    let out = bare()
        .arg("--data-dir")
        .arg(data.path())
        .arg("doctor")
        .env("CROWNEST_SANDBOX__ROOT", data.path().join("sbx"))
        .env("CROWNEST_ENGINE__CACHE_DIR", shared_cache())
        .stdout(closed_stdout())
        .output()
        .unwrap();
    ended_quietly(out.status, &out.stderr).unwrap_or_else(|e| panic!("crownest doctor: {e}"));
}

#[test]
fn serve_refuses_an_unusable_address_before_loading_anything() {
    let data = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let tries: Vec<(&str, Option<&str>)> =
        vec![("localhost", None); 6].into_iter().chain([("", Some(busy_addr.as_str()))]).collect();
    for (setting, flag) in tries {
        let mut cmd = bare();
        cmd.arg("--data-dir").arg(data.path()).arg("serve");
        if let Some(addr) = flag {
            cmd.args(["--listen", addr]);
        } else {
            cmd.env("CROWNEST_LISTEN", setting);
        }
        let out = cmd
            .env("CROWNEST_SANDBOX__ROOT", data.path().join("sbx"))
            .env("CROWNEST_ENGINE__CACHE_DIR", shared_cache())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        // Refused by the config check (a `listen` that is not host:port)
        // or by the bind: either way before anything is loaded.
        assert!(err.contains("cannot listen on") || err.contains("must be host:port"), "{err}");
        assert!(!err.contains("runtime-provider"), "failed before loading the plugins: {err}");
        if flag.is_none() {
            assert!(err.contains("host:port"), "says what to write: {err}");
        }
    }
}

#[test]
fn wrong_usage_exits_2_before_anything_is_sent() {
    let s = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let tgz = archive(dir.path());
    let tgz = tgz.to_str().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "x").unwrap();
    let cases: &[&[&str]] = &[
        &["workspace-runs", "create", "--command", "true", "--metadata", "novalue"],
        &["workspace-runs", "run-archive", tgz, "--metadata", "novalue", "--", "true"],
        &["workspace-runs", "run-archive", tgz, "--artifact", "=name", "--", "true"],
        &["workspace-runs", "upload", "wsr_x", dir.path().to_str().unwrap()],
        &["workspace-runs", "upload", "wsr_x", notes.to_str().unwrap()],
        &["workspace-runs", "run-archive", notes.to_str().unwrap(), "--", "true"],
        &["keys", "create", "--scope", "usage:read", "--expires-in", "soon"],
        &["workspace-runs", "list", "--no-such-flag"],
    ];
    for args in cases {
        let out = run_cli(&s, args);
        assert_eq!(out.status.code(), Some(2), "crownest {}: {}", args.join(" "), text(&out.stderr));
    }
    let listed = run_cli(&s, &["workspace-runs", "list", "--json"]);
    assert_eq!(text(&listed.stdout), "", "no run was created");
    // An invalid log filter is wrong usage too, named.
    let out = s.cli().env("CROWNEST_LOG", "verbose").args(["workspace-runs", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("CROWNEST_LOG"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_archive_waits_out_a_server_restart_and_gives_up_on_a_dead_server() {
    let mut s = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let tgz = archive(dir.path());
    let mut live = Live::start(s.cli().stdin(Stdio::null()).args([
        "workspace-runs",
        "run-archive",
        tgz.to_str().unwrap(),
        "--",
        "echo started; sleep 120",
    ]));
    live.wait_line("started", Duration::from_secs(60));
    s.kill9();
    std::thread::sleep(Duration::from_secs(1));
    s.spawn();
    let status = live.wait(Duration::from_secs(90));
    let err = live.stderr();
    assert_eq!(status.code(), Some(125), "{err}");
    assert!(err.contains("reconnecting") && err.contains("host_restarted"), "{err}");

    // A server that stays away: exit 69 after --server-wait, saying what to do.
    let mut live = Live::start(s.cli().stdin(Stdio::null()).args([
        "workspace-runs",
        "run-archive",
        tgz.to_str().unwrap(),
        "--server-wait",
        "2",
        "--",
        "echo started; sleep 120",
    ]));
    live.wait_line("started", Duration::from_secs(60));
    let id = live.run_id(Duration::from_secs(5));
    s.kill9();
    let started = Instant::now();
    let status = live.wait(Duration::from_secs(60));
    let err = live.stderr();
    assert_eq!(status.code(), Some(69), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited --server-wait first");
    assert!(err.contains("cannot reach CrowNest") && err.contains(&format!("workspace-runs logs {id}")), "{err}");
}

/// Start `echo started; sleep 120` with `stdin`, wait until it printed.
fn start_sleeper(s: &Server, tgz: &Path, stdin: Stdio) -> (Live, String) {
    let live = Live::start(s.cli().stdin(stdin).args([
        "workspace-runs",
        "run-archive",
        tgz.to_str().unwrap(),
        "--",
        "echo started; sleep 120",
    ]));
    live.wait_line("started", Duration::from_secs(60));
    let id = live.run_id(Duration::from_secs(5));
    (live, id)
}

async fn status_of(api: &Api, id: &str) -> String {
    api.get(&format!("/v1/workspace-runs/{id}")).await.1["data"]["status"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_without_a_terminal_and_asks_first_on_one() {
    let s = server(&[]);
    let api = Api::new(&s);
    let dir = tempfile::tempdir().unwrap();
    let tgz = archive(dir.path());
    // CI and agents: SIGTERM or one Ctrl-C cancels the run; exit 130.
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (mut live, id) = start_sleeper(&s, &tgz, Stdio::null());
        live.signal(sig);
        let status = live.wait(Duration::from_secs(30));
        assert_eq!(status.code(), Some(130), "signal {sig}: {}", live.stderr());
        assert_eq!(status_of(&api, &id).await, "canceled", "signal {sig}");
    }
    // A person at a terminal: one Ctrl-C asks, and without a second the
    // CLI leaves the run running (exit 75).
    let (_master, slave) = pty();
    let (mut live, id) = start_sleeper(&s, &tgz, slave);
    live.signal(libc::SIGINT);
    let status = live.wait(Duration::from_secs(30));
    let err = live.stderr();
    assert_eq!(status.code(), Some(75), "{err}");
    assert!(err.contains("cancel the run") && err.contains("it keeps running otherwise"), "{err}");
    assert_eq!(status_of(&api, &id).await, "running");
    api.post(&format!("/v1/workspace-runs/{id}/cancel"), json!({})).await;
    // ...and a second Ctrl-C cancels it (exit 130).
    let (_master, slave) = pty();
    let (mut live, id) = start_sleeper(&s, &tgz, slave);
    live.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    live.signal(libc::SIGINT);
    let status = live.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{}", live.stderr());
    assert_eq!(status_of(&api, &id).await, "canceled");
}

#[test]
fn human_output_escapes_what_the_server_says_and_streams_command_output_exactly() {
    let s = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let tgz = archive(dir.path());
    // The command prints colours (passed through as they are); its command
    // line and metadata carry escape sequences that must not reach a
    // terminal from `list` or `status`.
    let command = "printf '\\033[31mred\\033[0m\\n' # \x1b]0;pwned\x07\x1b[2J\u{9b}31m";
    let out = run_cli(
        &s,
        &["workspace-runs", "run-archive", tgz.to_str().unwrap(), "--metadata", "note=\x1b[8mhidden", "--", command],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"\x1b[31mred\x1b[0m\n", "command output is passed through byte for byte");
    let id = text(&out.stderr).split("workspace run ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let unsafe_bytes = |b: &[u8]| {
        let t = text(b);
        b.iter().any(|&c| c == 0x1b || c == 0x07) || t.contains('\u{9b}')
    };
    for args in [vec!["workspace-runs", "list"], vec!["workspace-runs", "status", &id]] {
        let out = run_cli(&s, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(!unsafe_bytes(&out.stdout), "{args:?} printed control characters: {:?}", text(&out.stdout));
        assert!(text(&out.stdout).contains("\\x1b]0;pwned\\x07"), "{args:?} shows them escaped: {}", text(&out.stdout));
    }
    let status = text(&run_cli(&s, &["workspace-runs", "status", &id]).stdout);
    assert!(status.contains("note=\\x1b[8mhidden") && status.contains("\\u{9b}31m"), "{status}");
    // An error message quoting what we sent is escaped too.
    let out = run_cli(&s, &["workspace-runs", "status", "wsr_\x1b[2Jx"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!unsafe_bytes(&out.stderr), "{:?}", text(&out.stderr));
}

#[test]
fn the_cli_finds_its_server_and_says_what_to_fix() {
    let mut s = server(&[]);
    let list = |url: &str| s.cli().env("CROWNEST_API_URL", url).args(["workspace-runs", "list"]).output().unwrap();
    for url in [format!("{}/v1", s.url), format!("{}/v1/", s.url), format!("{}/", s.url)] {
        let out = list(&url);
        assert_eq!(out.status.code(), Some(0), "{url}: {}", text(&out.stderr));
    }
    let bare_addr = s.url.trim_start_matches("http://").to_string();
    let out = list(&bare_addr);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("no scheme") && err.contains(&format!("http://{bare_addr}")), "{err}");
    // Nothing listens: the URL, the cause and what to do.
    let nobody = format!("http://{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap());
    let out = s
        .cli()
        .env("CROWNEST_API_URL", &nobody)
        .env("CROWNEST_API_KEY", "cn_live_x")
        .args(["workspace-runs", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let err = text(&out.stderr);
    assert!(err.contains(&nobody) && err.contains("connection refused") && err.contains("crownest serve"), "{err}");
    // `--data-dir` alone finds the server that data directory's `serve`
    // wrote into server.json (its port is not the default).
    let file: Value = serde_json::from_slice(&std::fs::read(s.data_dir.join("server.json")).unwrap()).unwrap();
    assert_eq!(file["url"], s.url.as_str());
    assert_eq!(file["pid"].as_u64(), Some(u64::from(s.child.as_ref().unwrap().id())));
    let out = s.cli().env_remove("CROWNEST_API_URL").args(["workspace-runs", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A clean stop removes it.
    s.stop();
    assert!(!s.data_dir.join("server.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_credentials_stay_with_their_server_and_explicit_keys_win() {
    let s = server(&[]);
    let remote = FakeRemote::start();
    let to_remote = |args: &[&str]| s.cli().env("CROWNEST_API_URL", &remote.url).args(args).output().unwrap();
    for (args, var) in
        [(&["keys", "list"][..], "CROWNEST_ADMIN_TOKEN"), (&["workspace-runs", "list"][..], "CROWNEST_API_KEY")]
    {
        let out = to_remote(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(var), "{args:?} says what to set: {}", text(&out.stderr));
    }
    let sent = remote.heads();
    assert!(!sent.contains(&s.admin_token) && !sent.contains(&s.api_key), "local credentials went out: {sent}");
    // An explicit key goes where it is told.
    let out = s
        .cli()
        .env("CROWNEST_API_URL", &remote.url)
        .env("CROWNEST_API_KEY", "cn_live_explicit")
        .args(["workspace-runs", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(remote.heads().to_lowercase().contains("authorization: bearer cn_live_explicit"), "{}", remote.heads());
    // And wins over the local admin token: a key without projects:read is
    // refused, where the admin token would have listed the projects.
    let admin = Api::new(&s).with_key(&s.admin_token);
    let (st, key) = admin.post("/v1/keys", json!({"scopes": ["workspace_runs:read"]})).await;
    assert_eq!(st, 201, "{key}");
    let key = key["data"]["key"].as_str().unwrap();
    let out = s.cli().env("CROWNEST_API_KEY", key).args(["projects", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("forbidden"), "{}", text(&out.stderr));
    let out = run_cli(&s, &["projects", "list"]);
    assert_eq!(out.status.code(), Some(0), "without an explicit key, the local admin token: {}", text(&out.stderr));
}

/// The shell block under `<!-- test: chain-digest -->` in the README.
fn readme_snippet(marker: &str) -> String {
    let readme = std::fs::read_to_string(crownest_test_support::repo_root().join("README.md")).unwrap();
    let after = readme.split(marker).nth(1).unwrap_or_else(|| panic!("README has no {marker}"));
    let block = after.split("```sh\n").nth(1).expect("a ```sh block after the marker");
    block.split("\n```").next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_is_written_as_stored_and_its_chain_checks_out_as_the_readme_says() {
    let s = server(&[]);
    let api = Api::new(&s);
    let dir = tempfile::tempdir().unwrap();
    let tgz = archive(dir.path());
    let out = run_cli(
        &s,
        &[
            "workspace-runs",
            "run-archive",
            tgz.to_str().unwrap(),
            "--artifact",
            "out/r.txt",
            "--metadata",
            "repo=acme/app",
            "--",
            "printf 'héllo\\n'; printf '\\377\\n'; echo warn >&2; echo r > out/r.txt; cat missing",
        ],
    );
    let id = text(&out.stderr).split("workspace run ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let resp = api.get_req(&format!("/v1/workspace-runs/{id}/evidence")).send().await.unwrap();
    let digest = resp.headers()["x-evidence-sha256"].to_str().unwrap().to_string();
    let ev = dir.path().join("evidence.json");
    let out = run_cli(&s, &["workspace-runs", "evidence", &id, "--output", ev.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stored = std::fs::read(&ev).unwrap();
    assert_eq!(sha256(&stored), digest, "the file is the stored bytes");
    let piped = run_cli(&s, &["workspace-runs", "evidence", &id]);
    assert_eq!(piped.stdout, stored, "so is stdout into a pipe");
    let pretty = dir.path().join("pretty.json");
    assert!(
        run_cli(&s, &["workspace-runs", "evidence", &id, "--pretty", "--output", pretty.to_str().unwrap()])
            .status
            .success()
    );
    let pretty_text = std::fs::read_to_string(&pretty).unwrap();
    assert!(pretty_text.contains("\n  \"events\""), "{pretty_text}");
    assert_eq!(serde_json::from_str::<Value>(&pretty_text).unwrap(), serde_json::from_slice::<Value>(&stored).unwrap());
    // The README's recipe, run as written, reproduces events.chainDigest.
    let script = dir.path().join("verify.sh");
    std::fs::write(&script, readme_snippet("<!-- test: chain-digest -->")).unwrap();
    let bin_dir = exe().parent().unwrap().to_path_buf();
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(dir.path())
        .env("RUN", &id)
        .env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default()))
        .env("CROWNEST_API_URL", &s.url)
        .env("CROWNEST_API_KEY", &s.api_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("chain digest ok"), "{}", text(&out.stdout));
}

#[test]
fn run_archive_names_the_artifacts_it_kept_and_artifacts_list_names_their_store() {
    let s = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let tgz = archive(dir.path());
    let out = run_cli(
        &s,
        &[
            "workspace-runs",
            "run-archive",
            tgz.to_str().unwrap(),
            "--artifact",
            "out/r.txt=report",
            "--",
            "echo r > out/r.txt; echo done",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "done\n", "stdout stays the command's");
    let err = text(&out.stderr);
    let aid = err.split("crownest: artifact ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("");
    assert!(aid.starts_with("art_") && err.contains("(report, 2 bytes)"), "{err}");
    let id = err.split("workspace run ").nth(1).unwrap().split_whitespace().next().unwrap();
    let list = text(&run_cli(&s, &["artifacts", "list", "--run", id]).stdout);
    let mut lines = list.lines();
    assert!(lines.next().unwrap().split_whitespace().any(|c| c == "STORE"), "{list}");
    let row = lines.next().unwrap();
    assert!(row.starts_with(aid) && row.contains("fs-artifacts"), "{list}");
}

/// Every line of the server's log so far.
fn log_lines(s: &Server) -> Vec<String> {
    s.log.lock().unwrap().clone()
}

#[test]
fn serve_logs_are_plain_off_a_terminal_leveled_and_optionally_json() {
    // A fresh compile cache: Cranelift compiles every plugin, and would
    // log tens of thousands of debug lines if `debug` meant every crate.
    let mut s = Server::start(
        &exe(),
        &[("CROWNEST_LOG", "debug"), ("CROWNEST_PLUGINS__METER__CONFIG__MAX_CONCURRENT_SANDBOXES", "100")],
    );
    let dir = tempfile::tempdir().unwrap();
    let tgz = archive(dir.path());
    assert!(run_cli(&s, &["workspace-runs", "run-archive", tgz.to_str().unwrap(), "--", "true"]).status.success());
    let lines = log_lines(&s);
    assert!(
        lines.iter().all(|l| !l.contains('\x1b')),
        "no colours into a pipe: {:?}",
        lines.iter().find(|l| l.contains('\x1b'))
    );
    assert!(lines.iter().any(|l| l.contains("DEBUG") && l.contains("crownest")), "CrowNest's own debug lines");
    let foreign: Vec<&String> = lines.iter().filter(|l| l.contains("DEBUG") && !l.contains(" crownest")).collect();
    assert!(foreign.is_empty(), "{} debug lines of other crates, e.g. {:?}", foreign.len(), foreign.first());
    // The first start's key is in credentials.json only, not on stdout.
    let mut child = s.child.take().unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(stdout, "", "nothing on stdout");
    let log = lines.join("\n");
    assert!(!log.contains(&s.api_key) && !log.contains(&s.admin_token), "no credential in the log");
    assert!(log.contains("credentials.json"), "the log says where they are: {log}");

    // A filter that is not one is an error naming it, not ignored.
    let data = tempfile::tempdir().unwrap();
    let mut bad = Live::start(
        bare()
            .arg("--data-dir")
            .arg(data.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("CROWNEST_LOG", "dbug")
            .env("CROWNEST_SANDBOX__ROOT", data.path().join("sbx"))
            .env("CROWNEST_ENGINE__CACHE_DIR", shared_cache()),
    );
    let status = bad.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{}", bad.stderr());
    assert!(bad.stderr().contains("CROWNEST_LOG=`dbug`"), "{}", bad.stderr());

    // JSON lines for log shippers: every line, start-up notes included.
    let cache = shared_cache();
    let j = Server::start(&exe(), &[("CROWNEST_LOG_FORMAT", "json"), ("CROWNEST_ENGINE__CACHE_DIR", cache.as_str())]);
    let lines = log_lines(&j);
    assert!(lines.len() > 3, "{lines:?}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_staged_upload_resumes_where_it_stopped() {
    let s = server(&[("CROWNEST_RUNS__PART_SIZE_BYTES", "1048576")]);
    let api = Api::new(&s);
    let dir = tempfile::tempdir().unwrap();
    let data = noise(20 << 20, 7);
    let bytes = targz(&[("noise.bin", &data, 0o644)]);
    let tgz = dir.path().join("big.tgz");
    std::fs::write(&tgz, &bytes).unwrap();
    let run = api.create(json!({"command": "sha256sum noise.bin"})).await;
    let id = run["id"].as_str().unwrap().to_string();
    // The upload goes through a proxy that stalls after ~5.5 MiB; the CLI
    // is then killed mid-part, as by Ctrl-C or a dropped network.
    let stall = Stall::start(&s.url, (11 << 20) / 2);
    let cache = dir.path().join("cache");
    let upload = |s: &Server| {
        let mut cmd = s.cli();
        cmd.env("CROWNEST_API_URL", &stall.url)
            .env("CROWNEST_API_KEY", &s.api_key)
            .env("XDG_CACHE_HOME", &cache)
            .args(["workspace-runs", "upload", &id, tgz.to_str().unwrap()]);
        cmd
    };
    let mut first = Live::start(&mut upload(&s));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stall.stalled() {
        assert!(Instant::now() < deadline, "the upload never reached the stall: {}", first.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    first.signal(libc::SIGINT);
    first.wait(Duration::from_secs(10));
    let notes: Vec<_> = std::fs::read_dir(cache.join("crownest/uploads")).unwrap().flatten().collect();
    assert_eq!(notes.len(), 1, "one note of the transfer");
    let note: Value = serde_json::from_slice(&std::fs::read(notes[0].path()).unwrap()).unwrap();
    let tid = note["transferId"].as_str().unwrap().to_string();
    let (_, t) = api.get(&format!("/v1/workspace-runs/{id}/archive-transfers/{tid}")).await;
    let received = t["data"]["receivedParts"].as_array().unwrap().len();
    let parts = t["data"]["partCount"].as_u64().unwrap();
    assert!(received >= 3 && (received as u64) < parts, "{t}");

    stall.release();
    let out = upload(&s).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("resuming transfer {tid}"))
            && err.contains(&format!("{received} of {parts} parts already there")),
        "{err}"
    );
    let sent = stall.forwarded.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        sent < bytes.len() as u64 - (received as u64) * (1 << 20) + (1 << 20),
        "only the missing parts went again: {sent} bytes"
    );
    let (_, t) = api.get(&format!("/v1/workspace-runs/{id}/archive-transfers/{tid}")).await;
    assert_eq!(t["data"]["status"], "complete", "{t}");
    let (_, r) = api.get(&format!("/v1/workspace-runs/{id}")).await;
    assert_eq!(r["data"]["archive"]["sha256"], sha256(&bytes));
    assert!(std::fs::read_dir(cache.join("crownest/uploads")).unwrap().next().is_none(), "the note is gone");
    let started = api.start(&id).await;
    assert_eq!(started.0, 202, "{}", started.1);
    assert_eq!(api.wait(&id).await["status"], "succeeded");
    assert!(api.output(&id, "stdout").await.starts_with(&sha256(&data)));
}
