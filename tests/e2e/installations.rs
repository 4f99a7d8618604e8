//! Several installations on one host: two `crownest serve` processes with
//! their own data directories share one sandbox root and one host uid
//! range, and neither ever touches the other's sandboxes, whatever happens
//! to the other (graceful restarts, `kill -9`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use crownest_test_support::server::Server;
use serde_json::{Value, json};

fn server_on(root: &Path) -> Server {
    let cache = crownest_test_support::target_dir().join("e2e-compile-cache").display().to_string();
    let env = [
        ("CROWNEST_RUNS__HEARTBEAT_SECS", "1"),
        ("CROWNEST_ENGINE__CACHE_DIR", cache.as_str()),
        ("CROWNEST_PLUGINS__METER__CONFIG__MAX_CONCURRENT_SANDBOXES", "1000"),
    ];
    Server::start_with_root(&exe(), &env, Some(root))
}

fn archive() -> Vec<u8> {
    targz(&[("hello.txt", b"hi\n", 0o644)])
}

/// Every live cell on the host under `root`: (installation, sandbox id) → host uid.
fn live_cells(root: &Path) -> HashMap<(String, String), u32> {
    let mut out = HashMap::new();
    for inst in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let owner = inst.path().join("runtime_provider");
        for cell in std::fs::read_dir(&owner).into_iter().flatten().flatten() {
            if cell.file_type().is_ok_and(|t| t.is_symlink()) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(cell.path().join("cell.json")) else { continue };
            let rec: Value = serde_json::from_str(&text).unwrap();
            let key = (inst.file_name().to_string_lossy().into_owned(), rec["id"].as_str().unwrap().to_string());
            out.insert(key, rec["uid"].as_u64().unwrap() as u32);
        }
    }
    out
}

/// No two live cells share a host uid.
fn assert_uids_unique(root: &Path) {
    let cells = live_cells(root);
    let mut by_uid: HashMap<u32, Vec<&(String, String)>> = HashMap::new();
    for (cell, uid) in &cells {
        by_uid.entry(*uid).or_default().push(cell);
    }
    let shared: Vec<_> = by_uid.iter().filter(|(_, c)| c.len() > 1).collect();
    assert!(shared.is_empty(), "live sandboxes share host uids: {shared:?}");
}

/// The standby pool a server publishes for doctor.
fn pool(s: &Server) -> Value {
    let path = s.sandbox_root.join(s.installation()).join("standby-pool.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|_| "{}".into())).unwrap()
}

/// Wait until `s` has a ready standby of its one learned shape.
async fn wait_warm(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = pool(s);
        if p["shapes"].as_array().is_some_and(|a| a.iter().any(|x| x["ready"].as_u64() >= Some(1))) {
            return;
        }
        assert!(Instant::now() < deadline, "no standby became ready: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Create, upload and start a run without waiting for it.
async fn start_run(api: &Api, body: Value) -> String {
    let run = api.create(body).await;
    let id = run["id"].as_str().unwrap().to_string();
    let (s, v) = api.upload(&id, &archive()).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.start(&id).await;
    assert_eq!(s, 202, "{v}");
    id
}

fn crownest(s: &Server, args: &[&str]) -> (i32, String) {
    let out = s.cli().args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_one_installation_never_touches_anothers_sandboxes() {
    let shared = tempfile::Builder::new().prefix("crownest-shared-").tempdir_in("/tmp").unwrap();
    let root = shared.path().join("sandboxes");
    let a = server_on(&root);
    let mut b = server_on(&root);
    let (ia, ib) = (a.installation(), b.installation());
    assert_ne!(ia, ib, "each data directory makes its own installation id");
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));

    // A learns its shape and keeps a standby; it keeps a sandbox too.
    let warmup = api_a.run(json!({"command": "true"}), &archive()).await;
    assert_eq!(warmup["status"], "succeeded", "{warmup}");
    wait_warm(&a).await;
    let kept_a = api_a.run(json!({"command": "echo a > state.txt", "keepSandbox": true}), &archive()).await;
    let kept_a = kept_a["sandboxId"].as_str().unwrap().to_string();
    let kept_b = api_b.run(json!({"command": "echo b > state.txt", "keepSandbox": true}), &archive()).await;
    let kept_b = kept_b["sandboxId"].as_str().unwrap().to_string();

    // Long runs on A, then B restarts again and again underneath them,
    // each time with a run of its own in flight (a leftover to reap).
    let mut long_runs = Vec::new();
    for i in 0..3 {
        long_runs.push((i, start_run(&api_a, json!({"command": format!("sleep 7; echo survived-{i}")})).await));
    }
    let mut b_orphans: Vec<PathBuf> = Vec::new();
    for round in 0..4 {
        let api_b = Api::new(&b);
        let id = start_run(&api_b, json!({"command": "sleep 60"})).await;
        let cell = b.cells_dir().join(format!("sbx_{}", id.trim_start_matches("wsr_")));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cell.join("cell.json").exists() {
            assert!(Instant::now() < deadline, "B's run never got a sandbox");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_uids_unique(&root);
        if round % 2 == 0 {
            b.kill9();
        } else {
            b.stop();
        }
        b_orphans.push(cell);
        b.spawn();
        // B's restart reaped its own leftover and nothing of A's.
        for orphan in &b_orphans {
            assert!(!orphan.join("cell.json").exists(), "B left its own sandbox {} behind", orphan.display());
        }
        let cells_a: Vec<String> = live_cells(&root).into_keys().filter(|(i, _)| *i == ia).map(|(_, c)| c).collect();
        assert!(cells_a.contains(&kept_a), "A's kept sandbox is gone after B's restart: {cells_a:?}");
        assert_eq!(
            Api::new(&b).get(&format!("/v1/workspace-runs/{id}")).await.1["data"]["failureReason"],
            "host_restarted"
        );
    }

    // Every run on A ended on its own terms.
    for (i, id) in &long_runs {
        let run = api_a.wait(id).await;
        assert_eq!(run["status"], "succeeded", "run {i} on A: {run}");
        assert_eq!(api_a.output(id, "stdout").await, format!("survived-{i}\n"));
    }
    // Both kept sandboxes survived everything and are still usable.
    let again = api_a.run(json!({"command": "cat state.txt", "sandboxId": kept_a}), &archive()).await;
    assert_eq!(api_a.output(again["id"].as_str().unwrap(), "stdout").await, "a\n", "{again}");
    let b_api = Api::new(&b);
    let again = b_api.run(json!({"command": "cat state.txt", "sandboxId": kept_b}), &archive()).await;
    assert_eq!(b_api.output(again["id"].as_str().unwrap(), "stdout").await, "b\n", "{again}");

    // A's standby pool never lost a standby and is warm.
    wait_warm(&a).await;
    let p = pool(&a);
    for shape in p["shapes"].as_array().unwrap() {
        assert_eq!(shape["failuresTotal"], 0, "A's standbys died: {p}");
    }
    assert!(!a.log_text().contains("standby sandbox died"), "{}", a.log_text());
    assert_uids_unique(&root);

    // doctor names the installation, where its sandboxes live and its pool.
    let (code, out) = crownest(&a, &["doctor"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{:<22} {ia}", "installation")), "{out}");
    assert!(out.contains(&root.join(&ia).display().to_string()), "{out}");
    assert!(out.contains("standby pool") && out.contains("1 ready"), "{out}");
    assert!(out.contains("leased on this host"), "{out}");
    assert!(!out.contains(&ib), "A's doctor knows nothing of B: {out}");
    assert!(b.cells_dir().starts_with(root.join(&ib)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_killed_from_outside_is_replaced_and_the_pool_stays_warm() {
    let shared = tempfile::Builder::new().prefix("crownest-shared-").tempdir_in("/tmp").unwrap();
    let s = server_on(&shared.path().join("sandboxes"));
    let api = Api::new(&s);
    let first = api.run(json!({"command": "true"}), &archive()).await;
    assert_eq!(first["status"], "succeeded");
    wait_warm(&s).await;
    // Kill the standby's processes from outside, as another installation's
    // reaper once did.
    let standby = std::fs::read_dir(s.cells_dir())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("warm-"))
        .expect("a standby cell");
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(standby.path().join("cell.json")).unwrap()).unwrap();
    let uid = rec["uid"].as_u64().unwrap() as u32;
    let pids = processes_of(uid);
    assert!(!pids.is_empty(), "the standby runs as its own uid");
    for pid in &pids {
        // SAFETY: kill(2) on a pid of the standby's uid.
        unsafe { libc::kill(pid.parse().unwrap(), libc::SIGKILL) };
    }
    // The death is logged with its cause and a new standby takes its place.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = pool(&s);
        let shape = &p["shapes"][0];
        if shape["failuresTotal"] == 1 && shape["ready"] == 1 {
            assert!(shape["lastFailure"]["reason"].as_str().unwrap().contains("signal 9"), "{p}");
            break;
        }
        assert!(Instant::now() < deadline, "the standby was not replaced: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.log_text().contains("a standby sandbox died before it was used: killed by signal 9"), "{}", s.log_text());
    // The next run adopts the new standby (the pool is still on).
    let next = api.run(json!({"command": "true"}), &archive()).await;
    assert_eq!(next["status"], "succeeded");
    wait_warm(&s).await;
    assert_eq!(pool(&s)["shapes"][0]["failuresInARow"], 0, "an adoption resets the back-off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_commands_leave_the_servers_standbys_alone() {
    let shared = tempfile::Builder::new().prefix("crownest-shared-").tempdir_in("/tmp").unwrap();
    let s = server_on(&shared.path().join("sandboxes"));
    let api = Api::new(&s);
    api.run(json!({"command": "true"}), &archive()).await;
    wait_warm(&s).await;
    for args in [&["templates", "list"][..], &["doctor"][..], &["plugins", "list"][..]] {
        let (code, out) = crownest(&s, args);
        assert_eq!(code, 0, "{args:?}: {out}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = pool(&s);
    assert_eq!(p["shapes"][0]["failuresTotal"], 0, "{p}");
    assert_eq!(p["shapes"][0]["ready"], 1, "{p}");
    assert!(!s.log_text().contains("standby sandbox died"), "{}", s.log_text());
}
