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
