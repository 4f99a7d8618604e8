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
