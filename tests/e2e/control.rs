//! The control plane end to end with the real server: scopes on every
//! endpoint, project isolation, revocation, keys-can't-mint-keys, metering
//! and caps, plan limits, the audit trail, and no key in any record.

mod common;

use std::time::Duration;

use common::*;
use crownest_test_support::server::Server;
use serde_json::{Value, json};

fn admin(s: &Server) -> Api {
    Api::new(s).with_key(&s.admin_token)
}

/// Create a key through the admin API; returns the full key.
async fn key(s: &Server, project: Option<&str>, scopes: &[&str]) -> String {
    let (st, v) = admin(s).post("/v1/keys", json!({"projectId": project, "scopes": scopes})).await;
    assert_eq!(st, 201, "{v}");
    v["data"]["key"].as_str().unwrap().to_string()
}

async fn project(s: &Server, name: &str) -> String {
    let (st, v) = admin(s).post("/v1/projects", json!({"name": name})).await;
    assert_eq!(st, 201, "{v}");
    v["data"]["id"].as_str().unwrap().to_string()
}

const ALL: &[&str] = &[
    "workspace_runs:create",
    "workspace_runs:read",
    "workspace_runs:cancel",
    "artifacts:read",
    "usage:read",
    "audit:read",
    "projects:read",
];

/// (method, path, body, scope) for every scoped endpoint.
fn endpoints(run: &str, fresh: &str, tid: &str, art: &str) -> Vec<(&'static str, String, Option<Value>, &'static str)> {
    vec![
        ("POST", "/v1/workspace-runs".into(), Some(json!({"command": "true"})), "workspace_runs:create"),
        ("GET", "/v1/workspace-runs".into(), None, "workspace_runs:read"),
        ("GET", format!("/v1/workspace-runs/{run}"), None, "workspace_runs:read"),
        ("GET", format!("/v1/workspace-runs/{run}/events"), None, "workspace_runs:read"),
        ("GET", format!("/v1/workspace-runs/{run}/evidence"), None, "workspace_runs:read"),
        (
            "PUT",
            format!("/v1/workspace-runs/{fresh}/archive?sizeBytes=4&sha256={}", "0".repeat(64)),
            None,
            "workspace_runs:create",
        ),
        (
            "POST",
            format!("/v1/workspace-runs/{fresh}/archive-transfers"),
            Some(json!({"sizeBytes": 10, "sha256": "0".repeat(64)})),
            "workspace_runs:create",
        ),
        ("GET", format!("/v1/workspace-runs/{fresh}/archive-transfers/{tid}"), None, "workspace_runs:create"),
        ("PUT", format!("/v1/workspace-runs/{fresh}/archive-transfers/{tid}/parts/0"), None, "workspace_runs:create"),
        (
            "POST",
            format!("/v1/workspace-runs/{fresh}/archive-transfers/{tid}/complete"),
            Some(json!({})),
            "workspace_runs:create",
        ),
        ("POST", format!("/v1/workspace-runs/{fresh}/start"), Some(json!({})), "workspace_runs:create"),
        ("POST", format!("/v1/workspace-runs/{run}/cancel"), Some(json!({})), "workspace_runs:cancel"),
        ("GET", format!("/v1/workspace-runs/{run}/artifacts"), None, "artifacts:read"),
        ("GET", format!("/v1/artifacts/{art}"), None, "artifacts:read"),
        ("GET", format!("/v1/artifacts/{art}/content"), None, "artifacts:read"),
        ("GET", "/v1/usage".into(), None, "usage:read"),
        ("GET", "/v1/audit-events".into(), None, "audit:read"),
        ("GET", "/v1/projects".into(), None, "projects:read"),
    ]
}

async fn call(api: &Api, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let url = format!("{}{path}", api.url);
    let req = match method {
        "GET" => api.http.get(url),
        "POST" => api.http.post(url).json(body.unwrap_or(&json!({}))),
        "PUT" => api.http.put(url).body(b"abcd".to_vec()),
        "DELETE" => api.http.delete(url),
        _ => unreachable!(),
    };
    api.send(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_its_scope_and_names_it_when_missing() {
    let s = server(&[]);
    let api = Api::new(&s);
    let archive = targz(&[("README", b"x\n", 0o644)]);
    let done = api.run(json!({"command": "echo hi > out.txt", "artifacts": ["out.txt"]}), &archive).await;
    let run = done["id"].as_str().unwrap().to_string();
    let art = done["artifactIds"][0].as_str().unwrap().to_string();
    let fresh = api.create(json!({"command": "true"})).await["id"].as_str().unwrap().to_string();
    let (_, t) = api
        .post(
            &format!("/v1/workspace-runs/{fresh}/archive-transfers"),
            json!({"sizeBytes": 10, "sha256": "0".repeat(64)}),
        )
        .await;
    let tid = t["data"]["id"].as_str().unwrap().to_string();

    for (method, path, body, scope) in endpoints(&run, &fresh, &tid, &art) {
        let others: Vec<&str> = ALL.iter().copied().filter(|s| *s != scope).collect();
        let without = api.with_key(&key(&s, None, &others).await);
        let (st, v) = call(&without, method, &path, body.as_ref()).await;
        assert_eq!(st, 403, "{method} {path} without {scope}: {v}");
        assert_eq!(v["error"]["code"], "forbidden");
        assert!(v["error"]["message"].as_str().unwrap().contains(scope), "{method} {path}: {v}");
        let only = api.with_key(&key(&s, None, &[scope]).await);
        let (st, v) = call(&only, method, &path, body.as_ref()).await;
        assert!(st != 401 && st != 403, "{method} {path} with only {scope}: {st} {v}");
    }
    // `resource:*` covers the resource's actions.
    let wildcard = api.with_key(&key(&s, None, &["workspace_runs:*"]).await);
    assert_eq!(wildcard.get(&format!("/v1/workspace-runs/{run}")).await.0, 200);
    assert_eq!(wildcard.get("/v1/usage").await.0, 403);
    // Unknown scopes are refused at creation, naming the valid ones.
    let (st, v) = admin(&s).post("/v1/keys", json!({"scopes": ["runs:everything"]})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("invalid_scope")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("workspace_runs:create"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_restricted_to_one_project_cannot_see_another() {
    let s = server(&[]);
    let api = Api::new(&s);
    let b = project(&s, "team-b").await;
    let archive = targz(&[("README", b"x\n", 0o644)]);
    let in_a = api.run(json!({"command": "echo a > a.txt", "artifacts": ["a.txt"]}), &archive).await;
    let a_run = in_a["id"].as_str().unwrap().to_string();
    let a_project = in_a["projectId"].as_str().unwrap().to_string();
    let a_art = in_a["artifactIds"][0].as_str().unwrap().to_string();
    let kb = api.with_key(&key(&s, Some(&b), ALL).await);

    for path in [
        format!("/v1/workspace-runs/{a_run}"),
        format!("/v1/workspace-runs/{a_run}/events"),
        format!("/v1/workspace-runs/{a_run}/evidence"),
        format!("/v1/workspace-runs/{a_run}/artifacts"),
        format!("/v1/artifacts/{a_art}"),
        format!("/v1/artifacts/{a_art}/content"),
        format!("/v1/workspace-runs?projectId={a_project}"),
        format!("/v1/usage?projectId={a_project}"),
        format!("/v1/audit-events?projectId={a_project}"),
    ] {
        let (st, v) = kb.get(&path).await;
        assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")), "{path}: {v}");
    }
    let (st, _) = kb.post(&format!("/v1/workspace-runs/{a_run}/cancel"), json!({})).await;
    assert_eq!(st, 404);
    let (st, _) = kb.post("/v1/workspace-runs", json!({"command": "true", "projectId": a_project})).await;
    assert_eq!(st, 404);
    // Its own project works, and lists only its runs.
    let mine = kb.run(json!({"command": "true"}), &archive).await;
    assert_eq!(mine["projectId"], b.as_str());
    let (_, list) = kb.get("/v1/workspace-runs").await;
    let ids: Vec<&str> = list["data"]["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![mine["id"].as_str().unwrap()]);
    let (_, audit) = kb.get("/v1/audit-events").await;
    assert!(audit["data"]["items"].as_array().unwrap().iter().all(|e| e["projectId"] == b.as_str()), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_immediate_and_keys_cannot_mint_keys() {
    let s = server(&[]);
    let api = Api::new(&s);
    let k = key(&s, None, ALL).await;
    let kapi = api.with_key(&k);
    assert_eq!(kapi.get("/v1/workspace-runs").await.0, 200);
    let (_, list) = admin(&s).get("/v1/keys").await;
    let id = list["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| k.contains(x["id"].as_str().unwrap().trim_start_matches("key_")))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!list.to_string().contains(&k), "listing never shows a key's secret");
    let (st, v) = admin(&s).post(&format!("/v1/keys/{id}/revoke"), json!({})).await;
    assert_eq!((st, v["data"]["status"].as_str()), (200, Some("revoked")), "{v}");
    let (st, revoked) = kapi.get("/v1/workspace-runs").await;
    assert_eq!(st, 401, "the very next request is refused");

    // Unknown, wrong-secret, expired and revoked keys are indistinguishable.
    let mut wrong = s.api_key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let expiring = {
        let (_, v) = admin(&s).post("/v1/keys", json!({"scopes": ["workspace_runs:read"], "expiresInSecs": 1})).await;
        v["data"]["key"].as_str().unwrap().to_string()
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for bad in [wrong.as_str(), "cn_live_aaaaaaaaaaaaaaaaaaaa_bbbb", expiring.as_str(), "nonsense"] {
        let (st, v) = api.with_key(bad).get("/v1/workspace-runs").await;
        assert_eq!(st, 401);
        assert_eq!(v["error"]["code"], revoked["error"]["code"]);
        assert_eq!(v["error"]["message"], revoked["error"]["message"]);
    }

    // No API key can create, list or revoke keys, whatever its scopes.
    for path in ["/v1/keys", "/v1/projects"] {
        let (st, v) = api.post(path, json!({"scopes": ["usage:read"], "name": "x"})).await;
        assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")), "{path}: {v}");
    }
    assert_eq!(api.get("/v1/keys").await.0, 403);
    assert_eq!(api.post(&format!("/v1/keys/{id}/revoke"), json!({})).await.0, 403);
    let (st, v) = admin(&s).post("/v1/keys", json!({"scopes": ["keys:create"]})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("invalid_scope")), "not even grantable: {v}");

    // The CLI does the same with the admin credential from credentials.json.
    let out = s.cli().args(["keys", "create", "--scope", "usage:read", "--expires-in", "1h"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli_key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(cli_key.starts_with("cn_live_"), "{cli_key}");
    assert_eq!(api.with_key(&cli_key).get("/v1/usage").await.0, 200);
    let out = s.cli().args(["keys", "list"]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("revoked") && listing.contains("usage:read"), "{listing}");
    let out = s.cli().args(["projects", "create", "cli-made"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A key restricted to a project named on the command line.
    let out = s
        .cli()
        .args(["keys", "create", "--project", "cli-made", "--scope", "workspace_runs:read", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(made["data"]["projectId"].as_str().unwrap().starts_with("prj_"), "{made}");
    let out = s.cli().args(["keys", "create", "--project", "no-such", "--scope", "usage:read"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not_found"));
    let out = s.cli().args(["projects", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli-made"));
    // An API key in CROWNEST_ADMIN_TOKEN is still just an API key.
    let out = s
        .cli()
        .env("CROWNEST_ADMIN_TOKEN", &s.api_key)
        .args(["keys", "create", "--scope", "usage:read"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The run's metered compute-unit-seconds from its evidence.
async fn metered(api: &Api, id: &str) -> u64 {
    let ev = api.evidence(id).await;
    ev["metering"]["computeUnitSeconds"].as_u64().unwrap_or_else(|| panic!("no metering in {ev}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_second_run_is_metered_as_three_to_four_compute_unit_seconds() {
    let s = server(&[]);
    let api = Api::new(&s);
    let archive = targz(&[("README", b"x\n", 0o644)]);
    let run = api.run(json!({"command": "sleep 3"}), &archive).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let cus = metered(&api, run["id"].as_str().unwrap()).await;
    assert!((3..=4).contains(&cus), "metered {cus}");
    let ev = api.evidence(run["id"].as_str().unwrap()).await;
    assert_eq!(ev["metering"]["pricingVersion"], "2026-11-01", "{ev}");
    let (_, usage) = api.get("/v1/usage").await;
    let u = &usage["data"];
    assert_eq!(u["totals"]["computeUnitSeconds"].as_u64(), Some(cus), "{u}");
    assert_eq!(u["items"][0]["pricingVersion"], "2026-11-01");
    // $0.12 per sandbox-hour: 1 s of one unit is 33.34 micro-dollars (rounded up).
    assert_eq!(u["totals"]["amountMicroUsd"].as_u64(), Some((cus * 120_000).div_ceil(3600)), "{u}");
    let out = s.cli().args(["usage", "--json"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["data"]["totals"]["computeUnitSeconds"].as_u64(), Some(cus));
    let (st, v) = api.get("/v1/usage?from=2026-13").await;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compute_cap_stops_a_long_run_at_the_cap_and_refuses_the_next() {
    let s = server(&[("CROWNEST_PLUGINS__METER__CONFIG__CAP_COMPUTE_UNIT_SECONDS", "5")]);
    let api = Api::new(&s);
    let archive = targz(&[("README", b"x\n", 0o644)]);
    let started = std::time::Instant::now();
    let run = api.run(json!({"command": "sleep 60"}), &archive).await;
    assert!(started.elapsed() < Duration::from_secs(40), "stopped long before sleep 60 ended");
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["failureReason"], "quota_exceeded", "{run}");
    let id = run["id"].as_str().unwrap();
    let cus = metered(&api, id).await;
    assert!((5..=6).contains(&cus), "usage {cus} must not pass the cap of 5 by more than a second");
    let events = api.all_events(id).await;
    assert!(events.iter().any(|e| e["type"] == "error" && e["data"]["code"] == "quota_exceeded"), "{events:?}");
    // The next run is refused before anything starts.
    let next = api.create(json!({"command": "true"})).await;
    let nid = next["id"].as_str().unwrap();
    assert_eq!(api.upload(nid, &archive).await.0, 200);
    let (st, v) = api.start(nid).await;
    assert_eq!((st, v["error"]["code"].as_str()), (429, Some("quota_exceeded")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("cap_compute_unit_seconds"), "{v}");
    let (_, still) = api.get(&format!("/v1/workspace-runs/{nid}")).await;
    assert_eq!(still["data"]["status"], "awaiting_archive", "refused runs stay startable");
    // The kill is audited.
    let (_, audit) = admin(&s).get("/v1/audit-events?action=sandboxes:kill").await;
    assert!(audit["data"]["items"][0]["detail"].as_str().unwrap_or("").contains("quota_exceeded"), "{audit}");
}

async fn wait_running(api: &Api, id: &str) {
    for _ in 0..400 {
        let (_, v) = api.get(&format!("/v1/workspace-runs/{id}")).await;
        if v["data"]["status"] == "running" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_concurrent_sandbox_is_refused_on_the_default_plan() {
    let s = server(&[("CROWNEST_PLUGINS__METER__CONFIG__MAX_CONCURRENT_SANDBOXES", "2")]);
    let api = Api::new(&s);
    let archive = targz(&[("README", b"x\n", 0o644)]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = api.create(json!({"command": "sleep 30"})).await;
        let id = r["id"].as_str().unwrap().to_string();
        assert_eq!(api.upload(&id, &archive).await.0, 200);
        ids.push(id);
    }
    for id in &ids[..2] {
        assert_eq!(api.start(id).await.0, 202);
    }
    for id in &ids[..2] {
        wait_running(&api, id).await;
    }
    let (st, v) = api.start(&ids[2]).await;
    assert_eq!((st, v["error"]["code"].as_str()), (429, Some("quota_exceeded")), "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("max_concurrent_sandboxes") && msg.contains('2'), "{msg}");
    // Once one ends there is room again.
    api.post(&format!("/v1/workspace-runs/{}/cancel", ids[0]), json!({})).await;
    api.wait(&ids[0]).await;
    let (st, v) = api.start(&ids[2]).await;
    assert_eq!(st, 202, "{v}");
    for id in &ids[1..] {
        api.post(&format!("/v1/workspace-runs/{id}/cancel"), json!({})).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_start_refused_by_the_meter_keeps_the_upload_and_stays_startable() {
    let s = server(&[("CROWNEST_PLUGINS__METER__CONFIG__MAX_CONCURRENT_SANDBOXES", "1")]);
    let api = Api::new(&s);
    let archive = targz(&[("README", b"x\n", 0o644)]);
    let first = api.create(json!({"command": "sleep 30", "autoStart": true})).await;
    let first = first["id"].as_str().unwrap().to_string();
    assert_eq!(api.upload(&first, &archive).await.0, 200);
    wait_running(&api, &first).await;
    let second = api.create(json!({"command": "true", "autoStart": true})).await;
    let second = second["id"].as_str().unwrap().to_string();
    let (st, v) = api.upload(&second, &archive).await;
    assert_eq!(st, 200, "the archive is kept: {v}");
    assert_eq!(v["data"]["status"], "awaiting_archive", "{v}");
    assert_eq!(v["data"]["autoStartError"]["code"], "quota_exceeded", "{v}");
    assert_eq!(v["data"]["archive"]["sizeBytes"], archive.len());
    // Once there is room, an explicit start runs it.
    api.post(&format!("/v1/workspace-runs/{first}/cancel"), json!({})).await;
    api.wait(&first).await;
    assert_eq!(api.start(&second).await.0, 202);
    assert_eq!(api.wait(&second).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_is_audited_and_no_full_key_appears_anywhere() {
    let s = server(&[("CROWNEST_LOG", "debug")]);
    let api = Api::new(&s);
    let adm = admin(&s);
    let archive = targz(&[("README", b"x\n", 0o644)]);
    let created = key(&s, None, ALL).await;
    let capi = api.with_key(&created);
    let done = capi.run(json!({"command": "echo ok"}), &archive).await;
    let run = done["id"].as_str().unwrap().to_string();
    let long = capi.create(json!({"command": "sleep 30"})).await;
    let long_id = long["id"].as_str().unwrap().to_string();
    capi.upload(&long_id, &archive).await;
    capi.start(&long_id).await;
    wait_running(&capi, &long_id).await;
    capi.post(&format!("/v1/workspace-runs/{long_id}/cancel"), json!({})).await;
    capi.wait(&long_id).await;
    let narrow = api.with_key(&key(&s, None, &["usage:read"]).await);
    assert_eq!(narrow.get(&format!("/v1/workspace-runs/{run}")).await.0, 403);
    assert_eq!(api.with_key("cn_live_aaaaaaaaaaaaaaaaaaaa_bbbb").get("/v1/usage").await.0, 401);
    let (_, keys) = adm.get("/v1/keys").await;
    let victim = keys["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| created.contains(k["id"].as_str().unwrap().trim_start_matches("key_")))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    adm.post(&format!("/v1/keys/{victim}/revoke"), json!({})).await;

    let (_, page) = adm.get("/v1/audit-events?limit=1000").await;
    let items = page["data"]["items"].as_array().unwrap().clone();
    let find = |action: &str, outcome: &str| {
        items
            .iter()
            .find(|e| e["action"] == action && e["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {outcome} {action} in {items:?}"))
            .clone()
    };
    let create = find("workspace_runs:create", "success");
    assert_eq!(create["actor"], victim.as_str());
    assert!(create["requestId"].as_str().unwrap().starts_with("req_"));
    assert!(create["projectId"].is_string() && create["at"].is_string());
    find("workspace_runs:start", "success");
    let cancel = find("workspace_runs:cancel", "success");
    assert_eq!(cancel["target"], long_id.as_str());
    find("keys:create", "success");
    assert_eq!(find("keys:revoke", "success")["target"], victim.as_str());
    let denied = find("workspace_runs:read", "denied");
    assert!(denied["detail"].as_str().unwrap().contains("forbidden"));
    assert!(items.iter().any(|e| e["actor"] == "anonymous" && e["outcome"] == "denied"));
    // Destroyed sandboxes leave tombstones.
    assert!(items.iter().any(|e| e["action"] == "sandboxes:destroy"), "{items:?}");
    // Filters work, pages chain without gaps or repeats, and the CLI lists them.
    let (_, only) = adm.get("/v1/audit-events?action=keys:revoke").await;
    assert_eq!(only["data"]["items"].as_array().unwrap().len(), 1);
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit-events?limit=7&cursor={c}"),
            None => "/v1/audit-events?limit=7".to_string(),
        };
        let (_, p) = adm.get(&path).await;
        paged.extend(p["data"]["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()));
        match p["data"]["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let all: Vec<String> = items.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    // (A sandbox destroyed after the listing may come first: compare the rest.)
    let known: Vec<String> = paged.iter().filter(|id| all.contains(id)).cloned().collect();
    assert_eq!(known, all, "pages, newest first, match the one-page listing");
    let unique: std::collections::HashSet<&String> = paged.iter().collect();
    assert_eq!(unique.len(), paged.len(), "no event on two pages");
    let out = s.cli().args(["audit", "list", "--admin", "--action", "keys:create"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("keys:create"), "{}", String::from_utf8_lossy(&out.stderr));

    // No full key in any log line, event, evidence or audit record.
    let mut haystack = s.log_text();
    haystack.push_str(&page.to_string());
    for id in [&run, &long_id] {
        haystack.push_str(&serde_json::to_string(&api.all_events(id).await).unwrap());
        haystack.push_str(&api.evidence(id).await.to_string());
    }
    for secret in [&created, &s.api_key, &s.admin_token] {
        let tail = &secret[secret.len() - 24..];
        assert!(!haystack.contains(tail), "a key's secret leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifetime_limit_stops_runs_and_kept_sandboxes() {
    let s = server(&[("CROWNEST_PLUGINS__METER__CONFIG__MAX_LIFETIME_SECS", "2")]);
    let api = Api::new(&s);
    let archive = targz(&[("README", b"x\n", 0o644)]);
    let run = api.run(json!({"command": "sleep 30"}), &archive).await;
    assert_eq!(
        (run["status"].as_str(), run["failureReason"].as_str()),
        (Some("failed"), Some("lifetime_exceeded")),
        "{run}"
    );
    assert!(run["failureMessage"].as_str().unwrap().contains("2 s"), "the limit and its value: {run}");
    // A kept sandbox is metered while it exists, and stopped at the limit too.
    let kept = api.run(json!({"command": "true", "keepSandbox": true}), &archive).await;
    assert_eq!(kept["status"], "succeeded", "{kept}");
    let sandbox = kept["sandboxId"].as_str().unwrap().to_string();
    let adm = admin(&s);
    let mut killed = false;
    for _ in 0..100 {
        let (_, page) = adm.get(&format!("/v1/audit-events?action=sandboxes:kill&target={sandbox}")).await;
        if !page["data"]["items"].as_array().unwrap().is_empty() {
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(killed, "the kept sandbox {sandbox} was not stopped at its lifetime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_sandbox_is_metered_again_after_a_crash() {
    let mut s = server(&[("CROWNEST_PLUGINS__METER__CONFIG__MAX_LIFETIME_SECS", "3")]);
    let api = Api::new(&s);
    let archive = targz(&[("README", b"x\n", 0o644)]);
    let kept = api.run(json!({"command": "true", "keepSandbox": true}), &archive).await;
    assert_eq!(kept["status"], "succeeded", "{kept}");
    let sandbox = kept["sandboxId"].as_str().unwrap().to_string();
    s.kill9();
    s.spawn();
    let restarted = std::time::Instant::now();
    // Metered from the restart on: the lifetime limit stops it there.
    let adm = admin(&s);
    let mut killed = None;
    for _ in 0..150 {
        let (_, page) = adm.get(&format!("/v1/audit-events?action=sandboxes:kill&target={sandbox}")).await;
        if let Some(e) = page["data"]["items"].as_array().unwrap().first() {
            killed = Some(e.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed = killed.unwrap_or_else(|| panic!("the kept sandbox {sandbox} was not metered after the restart"));
    assert!(restarted.elapsed() >= Duration::from_secs(2), "stopped at its lifetime, not at once: {killed}");
    let api = Api::new(&s);
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "true", "sandboxId": sandbox})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("sandbox_destroyed")), "{v}");
    let (_, usage) = api.get("/v1/usage").await;
    assert!(usage["data"]["totals"]["computeUnitSeconds"].as_u64().unwrap() >= 3, "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metered_seconds_survive_a_crash_of_the_server() {
    let mut s = server(&[]);
    let api = Api::new(&s);
    let archive = targz(&[("README", b"x\n", 0o644)]);
    let r = api.create(json!({"command": "sleep 30"})).await;
    let id = r["id"].as_str().unwrap().to_string();
    api.upload(&id, &archive).await;
    api.start(&id).await;
    wait_running(&api, &id).await;
    let ran = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    s.kill9();
    let lived = ran.elapsed().as_secs();
    s.spawn();
    let api = Api::new(&s);
    let (_, usage) = api.get("/v1/usage").await;
    let cus = usage["data"]["totals"]["computeUnitSeconds"].as_u64().unwrap();
    // At most the last second is lost.
    assert!(cus + 1 >= lived && cus <= lived + 1, "{cus} metered for ~{lived} s before the crash");
    let done = api.wait(&id).await;
    assert_eq!(done["failureReason"], "host_restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_team_replaces_the_auth_policy_by_configuration() {
    let policy = crownest_test_support::fixture("read-only-scoper").display().to_string();
    let mut s = server(&[("CROWNEST_PLUGINS__AUTH_SCOPER__SOURCE", policy.as_str())]);
    let api = Api::new(&s);
    // The key holds every scope, but this policy lets keys only read.
    assert_eq!(api.get("/v1/workspace-runs").await.0, 200);
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "true"})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("read-only policy"), "{v}");
    // The host's own rule stands whatever the plugin says.
    assert_eq!(api.post("/v1/keys", json!({"scopes": ["usage:read"]})).await.0, 403);
    // Its config hides projects outside the allowed list.
    s.kill9();
    s.env.push(("CROWNEST_PLUGINS__AUTH_SCOPER__CONFIG__ALLOWED_PROJECTS".into(), "prj_elsewhere".into()));
    s.spawn();
    let api = Api::new(&s);
    let (st, v) = api.get("/v1/workspace-runs").await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_sandboxes_count_against_the_plan_until_killed() {
    let s = server(&[("CROWNEST_PLUGINS__METER__CONFIG__MAX_CONCURRENT_SANDBOXES", "2")]);
    let api = Api::new(&s);
    let archive = targz(&[("README", b"x\n", 0o644)]);
    let plain = api.run(json!({"command": "true"}), &archive).await;
    let mut kept = Vec::new();
    for _ in 0..2 {
        let run = api.run(json!({"command": "echo kept > /workspace/mark", "keepSandbox": true}), &archive).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        kept.push(run["sandboxId"].as_str().unwrap().to_string());
    }
    // Two kept sandboxes fill the default plan.
    let third = api.create(json!({"command": "true"})).await;
    let third_id = third["id"].as_str().unwrap().to_string();
    api.upload(&third_id, &archive).await;
    let (st, v) = api.start(&third_id).await;
    assert_eq!((st, v["error"]["code"].as_str()), (429, Some("quota_exceeded")), "{v}");
    // A key without the scope cannot kill; a run's sandbox that was not
    // kept was destroyed with its run: killing it returns that state.
    let narrow = api.with_key(&key(&s, None, &["workspace_runs:read"]).await);
    let (st, v) = narrow.post(&format!("/v1/sandboxes/{}/kill", kept[0]), json!({})).await;
    assert_eq!(st, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("sandboxes:kill"));
    let (st, v) = api.post(&format!("/v1/sandboxes/{}/kill", plain["sandboxId"].as_str().unwrap()), json!({})).await;
    assert_eq!((st, v["data"]["status"].as_str()), (200, Some("destroyed")), "{v}");
    assert!(v["data"]["reason"].as_str().unwrap().contains(plain["id"].as_str().unwrap()), "{v}");
    assert_eq!(api.post("/v1/sandboxes/sbx_nope/kill", json!({})).await.0, 404);
    // The CLI kills one; the plan has room again and its time is in the usage.
    let out = s.cli().args(["sandboxes", "kill", &kept[0]]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (st, v) = api.start(&third_id).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(api.wait(&third_id).await["status"], "succeeded");
    // Killing again reports the tombstone; reusing it is refused up front.
    let (st, v) = api.post(&format!("/v1/sandboxes/{}/kill", kept[0]), json!({})).await;
    assert_eq!((st, v["data"]["status"].as_str()), (200, Some("destroyed")), "{v}");
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "true", "sandboxId": kept[0]})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("sandbox_destroyed")), "{v}");
    // The other kept sandbox still works for reuse and keeps its files.
    let reuse = api.run(json!({"command": "cat /workspace/mark", "sandboxId": kept[1]}), &archive).await;
    assert_eq!(reuse["status"], "succeeded", "{reuse}");
    let (_, audit) = admin(&s).get(&format!("/v1/audit-events?action=sandboxes:kill&target={}", kept[0])).await;
    assert_eq!(audit["data"]["items"][0]["outcome"], "success", "{audit}");
}
