//! What a self-hoster hits, end to end: configuration from the
//! environment, probes, audit noise, names for projects, bounded keys,
//! audit filters, and a database written by a newer release.

mod common;

use common::*;
use crownest_test_support::server::Server;
use serde_json::json;

fn admin(s: &Server) -> Api {
    Api::new(s).with_key(&s.admin_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crownest_variables_that_are_not_config_keys_are_left_alone() {
    // The README's S3 example keeps its secret in CROWNEST_S3_SECRET; before,
    // every CROWNEST_* variable was read as a config key and serve refused.
    let s = server(&[("CROWNEST_S3_SECRET", "not-a-config-key"), ("CROWNEST_SOMETHING_ELSE", "1")]);
    assert_eq!(Api::new(&s).get("/v1/workspace-runs").await.0, 200);
    // A real key in the environment still is one, and a typo under it is named.
    let out = s.cli().args(["doctor"]).env("CROWNEST_RUNS__PART_SIZE_BYTES", "0").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("runs.part_size_bytes = 0"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_need_no_key_and_write_no_audit_rows() {
    let s = server(&[]);
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        for _ in 0..5 {
            let r = http.get(format!("{}{path}", s.url)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert!(v["status"] == "ok" || v["status"] == "ready", "{v}");
        }
    }
    let r: serde_json::Value = http.get(format!("{}/readyz", s.url)).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = r["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["database", "artifact_store", "plugins"], "{r}");
    // Repeated anonymous refusals fold into one row a minute.
    for _ in 0..5 {
        assert_eq!(http.get(format!("{}/v1/health", s.url)).send().await.unwrap().status(), 401);
    }
    let (_, audit) = admin(&s).get("/v1/audit-events?actor=anonymous").await;
    let items = audit["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{audit}");
    assert_eq!(items[0]["action"], "GET /v1/health");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_are_named_or_numbered_everywhere_and_keys_expire_in_bounds() {
    let s = server(&[]);
    let admin = admin(&s);
    let (st, p) = admin.post("/v1/projects", json!({"name": "team-b"})).await;
    assert_eq!(st, 201, "{p}");
    let id = p["data"]["id"].as_str().unwrap().to_string();
    // Created in team-b by its name; listed by name and by id (with a key
    // of the whole organization: the first key is the default project's).
    let (st, k) = admin.post("/v1/keys", json!({"scopes": ["workspace_runs:*", "usage:read"]})).await;
    assert_eq!(st, 201, "{k}");
    let org_key = k["data"]["key"].as_str().unwrap().to_string();
    let api = Api::new(&s).with_key(&org_key);
    let run = api.create(json!({"command": "true", "projectId": "team-b"})).await;
    assert_eq!(run["projectId"], id.as_str());
    for p in ["team-b", id.as_str()] {
        let (st, v) = api.get(&format!("/v1/workspace-runs?projectId={p}")).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["data"]["items"].as_array().unwrap().len(), 1, "{p}: {v}");
    }
    let (st, _) = api.get("/v1/usage?projectId=team-b").await;
    assert_eq!(st, 200);
    let (st, v) = api.get("/v1/workspace-runs?projectId=team-nope").await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")));
    // The CLI takes the name too.
    let out = s
        .cli()
        .env("CROWNEST_API_KEY", &org_key)
        .args(["workspace-runs", "list", "--project", "team-b", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(run["id"].as_str().unwrap()));
    // A key that would expire in the year 584 556 019 is refused, naming the bound.
    let (st, v) = admin.post("/v1/keys", json!({"scopes": ["usage:read"], "expiresInSecs": u64::MAX})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("10 years"), "{v}");
    let (st, _) = admin.post("/v1/keys", json!({"scopes": ["usage:read"], "expiresInSecs": 86400})).await;
    assert_eq!(st, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_filters_take_times_and_name_the_actions_that_exist() {
    let s = server(&[]);
    let admin = admin(&s);
    admin.post("/v1/projects", json!({"name": "p1"})).await;
    let (st, v) = admin.get("/v1/audit-events?action=projects:create&since=2020-01-01T00:00:00Z").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["items"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = admin.get("/v1/audit-events?action=projects:create&since=2999-01-01").await;
    assert!(v["data"]["items"].as_array().unwrap().is_empty(), "{v}");
    let (st, v) = admin.get("/v1/audit-events?action=bogus").await;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("keys:create"), "{v}");
    let (st, v) = admin.get("/v1/audit-events?until=yesterday").await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("RFC 3339"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_release_is_refused_at_start() {
    let mut s = server(&[]);
    s.stop();
    let db = s.data_dir.join("crownest.db");
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA user_version = 999'); c.commit()",
        ])
        .arg(&db)
        .status()
        .unwrap();
    assert!(status.success());
    let out = std::process::Command::new(exe())
        .arg("--data-dir")
        .arg(&s.data_dir)
        .env("CROWNEST_SANDBOX__ROOT", &s.sandbox_root)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("schema version 999") && err.contains("newer"), "{err}");
}

/// `crownest doctor` on a fresh data directory with `env`: (success, output).
fn doctor(env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::Builder::new().prefix("crownest-doctor-").tempdir_in("/tmp").unwrap();
    let cache = crownest_test_support::target_dir().join("e2e-compile-cache");
    let mut cmd = std::process::Command::new(exe());
    for (k, _) in std::env::vars() {
        if k.starts_with("CROWNEST_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("doctor")
        .env("CROWNEST_SANDBOX__ROOT", dir.path().join("sbx"))
        .env("CROWNEST_ENGINE__CACHE_DIR", &cache)
        .envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn plugin_config_typos_are_named_with_the_key() {
    for (var, value, plugin, key, hint) in [
        (
            "CROWNEST_PLUGINS__METER__CONFIG__MAX_CONCURENT_SANDBOXES",
            "3",
            "compute-meter",
            "max_concurent_sandboxes",
            "max_concurrent_sandboxes",
        ),
        (
            "CROWNEST_PLUGINS__RUNTIME_PROVIDER__CONFIG__MAX_MEMORY_MB",
            "512",
            "linux-sandbox",
            "max_memory_mb",
            "max_memory_mib",
        ),
        ("CROWNEST_PLUGINS__AUTH_SCOPER__CONFIG__ALLOWED", "x", "scoped-keys", "allowed", ""),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__ROOT", "/srv", "fs-artifacts", "root", ""),
    ] {
        let (ok, out) = doctor(&[(var, value)]);
        assert!(!ok, "{var}: {out}");
        assert!(out.contains(&format!("{plugin}: unknown config key `{key}`")), "{var}: {out}");
        assert!(out.contains(hint), "{var}: {out}");
    }
    // The S3 store's own table, as a file would set it.
    let s3 = [
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__SOURCE", "builtin:s3-artifacts"),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__ENDPOINT", "http://127.0.0.1:9"),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__BUCKET", "b"),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__ACCESS_KEY_ID", "k"),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__SECRET_ACCESS_KEY", "s"),
    ];
    let mut typo = s3.to_vec();
    typo.push(("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__PREFX", "prod/"));
    let (ok, out) = doctor(&typo);
    assert!(!ok && out.contains("unknown config key `prefx` (did you mean `prefix`?)"), "{out}");
    let mut yes = s3.to_vec();
    yes.push(("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__PATH_STYLE", "yes"));
    let (ok, out) = doctor(&yes);
    assert!(!ok && out.contains("`path_style` must be true or false, got `yes`"), "{out}");
}

#[test]
fn s3_endpoint_problems_name_the_endpoint_not_a_grant() {
    let base = [
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__SOURCE", "builtin:s3-artifacts"),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__BUCKET", "b"),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__ACCESS_KEY_ID", "k"),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__SECRET_ACCESS_KEY", "s"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut env = base.to_vec();
        env.extend_from_slice(extra);
        doctor(&env)
    };
    let (ok, out) = with(&[]);
    assert!(!ok && out.contains("s3-artifacts has no `endpoint`"), "{out}");
    let (ok, out) = with(&[("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__ENDPOINT", "127.0.0.1:7947")]);
    assert!(!ok && out.contains("not an http:// or https:// URL"), "{out}");
    let (ok, out) = with(&[("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__ENDPOINT", "${env:S3_ENDPOINT_UNSET_HERE}")]);
    assert!(!ok && out.contains("S3_ENDPOINT_UNSET_HERE is not set"), "{out}");
    // Set, the endpoint is granted: the failure is reaching it, not a grant.
    let (ok, out) = with(&[
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__ENDPOINT", "${env:S3_ENDPOINT_FOR_TEST}"),
        ("S3_ENDPOINT_FOR_TEST", "http://127.0.0.1:9"),
    ]);
    assert!(!ok, "{out}");
    assert!(!out.contains("grants.http") && !out.contains("not granted"), "{out}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_on_their_own_listener() {
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let s = server(&[("CROWNEST_METRICS__LISTEN", addr.as_str())]);
    let api = Api::new(&s);
    let archive = targz(&[("a.txt", b"a\n", 0o644)]);
    let run = api.run(json!({"command": "echo hi"}), &archive).await;
    assert_eq!(run["status"], "succeeded");
    let run = api.run(json!({"command": "exit 3"}), &archive).await;
    assert_eq!(run["status"], "failed");
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    // Every sample line is `name{labels} number`; every family has a type.
    let mut samples = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_string(), value);
        let name = series.split('{').next().unwrap();
        let family = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        assert!(
            text.contains(&format!("# TYPE {family} ")) || text.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    let get = |k: &str| *samples.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    assert_eq!(get(r#"crownest_runs_finished_total{status="succeeded",reason=""}"#), 1.0);
    assert_eq!(get(r#"crownest_runs_finished_total{status="failed",reason="exit_code"}"#), 1.0);
    assert_eq!(get(r#"crownest_runs{status="succeeded"}"#), 1.0);
    assert_eq!(get("crownest_queue_depth"), 0.0);
    assert_eq!(get("crownest_run_duration_seconds_count"), 2.0);
    assert!(get("crownest_event_append_seconds_count") >= 2.0);
    assert!(
        samples.keys().any(|k| k.starts_with(r#"crownest_plugin_call_seconds_count{plugin="linux-sandbox""#)),
        "{text}"
    );
    assert!(samples.contains_key("crownest_sandboxes_live"));
    // Not on the API listener.
    assert_eq!(reqwest::get(format!("{}/metrics", s.url)).await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_event_streams_and_a_second_signal_exits_at_once() {
    let mut s = server(&[("CROWNEST_SANDBOX__KILL_GRACE_MS", "60000")]);
    let api = Api::new(&s);
    // An idle stream of a run that is waiting for its archive.
    let waiting = api.create(json!({"command": "true"})).await;
    let id = waiting["id"].as_str().unwrap().to_string();
    let resp = api
        .get_req(&format!("/v1/workspace-runs/{id}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let body = tokio::spawn(async move { resp.text().await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pid = s.child.as_ref().unwrap().id() as i32;
    let started = std::time::Instant::now();
    // SAFETY: kill(2) on the server we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let text = tokio::time::timeout(std::time::Duration::from_secs(8), body)
        .await
        .expect("the stream ended")
        .unwrap()
        .unwrap();
    assert!(text.contains(": the server is shutting down; resume with Last-Event-ID"), "{text}");
    let status = loop {
        if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(8), "the server did not stop");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    s.child = None;

    // A command that ignores SIGTERM holds the shutdown for its grace
    // period (a minute here); a second signal ends it at once.
    s.spawn();
    let api = Api::new(&s);
    let run = api.create(json!({"command": "trap '' TERM; echo up; sleep 120"})).await;
    let id = run["id"].as_str().unwrap().to_string();
    api.upload(&id, &targz(&[("a", b"a", 0o644)])).await;
    api.start(&id).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !api.output(&id, "stdout").await.contains("up") {
        assert!(std::time::Instant::now() < deadline, "the command never started");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let pid = s.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) on the server we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(s.child.as_mut().unwrap().try_wait().unwrap().is_none(), "still waiting for the command");
    let started = std::time::Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = loop {
        if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "a second signal must exit at once");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(130));
    s.child = None;
    // The run was ended the documented way before the exit.
    s.spawn();
    let run = Api::new(&s).wait(&id).await;
    assert_eq!(run["failureReason"], "host_restarted", "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_name_the_client_behind_a_trusted_proxy_only() {
    let s = server(&[("CROWNEST_TRUSTED_PROXIES", r#"["127.0.0.1"]"#)]);
    let admin = admin(&s);
    let forwarded =
        admin.http.post(format!("{}/v1/projects", s.url)).header("x-forwarded-for", "203.0.113.50, 127.0.0.1");
    let (st, _) = admin.send(forwarded.json(&json!({"name": "via-proxy"}))).await;
    assert_eq!(st, 201);
    let (_, v) = admin.get("/v1/audit-events?action=projects:create").await;
    assert_eq!(v["data"]["items"][0]["clientIp"], "203.0.113.50", "{v}");
    // Without trusting the peer, its header is the client's word and ignored.
    let s2 = server(&[]);
    let admin2 = Api::new(&s2).with_key(&s2.admin_token);
    let forged = admin2.http.post(format!("{}/v1/projects", s2.url)).header("x-forwarded-for", "203.0.113.50");
    admin2.send(forged.json(&json!({"name": "direct"}))).await;
    let (_, v) = admin2.get("/v1/audit-events?action=projects:create").await;
    assert_eq!(v["data"]["items"][0]["clientIp"], "127.0.0.1", "{v}");
}
