//! What an agent or CI job hits, end to end against the real server and
//! CLI: streams that end, status codes and envelopes, idempotency by
//! meaning, destroyed sandboxes, environment variables, artifacts beyond
//! single files, runs whose archive never came, and output timing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn archive() -> Vec<u8> {
    targz(&[
        ("hello.txt", b"hi\n", 0o644),
        ("site/index.html", b"<p>hi</p>\n", 0o644),
        ("site/a/b.css", b"p{}\n", 0o644),
    ])
}

/// Run a CLI command with a deadline: (exit code, stdout, stderr), or
/// `None` if it was still running when the deadline passed (then killed).
fn cli_within(
    s: &crownest_test_support::server::Server,
    args: &[&str],
    within: Duration,
) -> Option<(i32, String, String)> {
    let mut child = s
        .cli()
        .env("CROWNEST_API_KEY", &s.api_key)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return Some((
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_at_the_end_of_a_finished_run_closes_the_stream_at_once() {
    let s = server(&[]);
    let api = Api::new(&s);
    let run = api.run(json!({"command": "echo done"}), &archive()).await;
    let id = run["id"].as_str().unwrap().to_string();
    let last = api.all_events(&id).await.last().unwrap()["seq"].as_u64().unwrap();
    // SSE with the cursor on the terminal event: the client has everything.
    let started = Instant::now();
    let resp = api
        .get_req(&format!("/v1/workspace-runs/{id}/events?afterSeq={last}"))
        .header("accept", "text/event-stream")
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("the stream ends instead of idling");
    assert!(!body.contains("event: heartbeat"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The same with Last-Event-ID, and through the CLI.
    let resp = api
        .get_req(&format!("/v1/workspace-runs/{id}/events"))
        .header("accept", "text/event-stream")
        .header("last-event-id", last.to_string())
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.is_ok());
    let r = cli_within(&s, &["workspace-runs", "logs", &id, "--after-seq", &last.to_string()], Duration::from_secs(15));
    let (code, out, err) = r.expect("`logs --after-seq <terminal>` returns");
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_the_envelope_with_the_documented_status() {
    let s = server(&[]);
    let api = Api::new(&s);
    let envelope = |st: u16, v: &Value, status: u16, code: &str| {
        assert_eq!((st, v["error"]["code"].as_str()), (status, Some(code)), "{v}");
        assert!(v["error"]["requestId"].as_str().is_some_and(|r| r.starts_with("req_")), "{v}");
        let m = v["error"]["message"].as_str().unwrap();
        for rust in ["struct ", "enum ", "ArtifactArg", "CreateBody", "u64`", "String"] {
            assert!(!m.contains(rust), "a Rust type name in `{m}`");
        }
    };
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "x".repeat(65 * 1024)})).await;
    envelope(st, &v, 400, "invalid_request");
    let big_meta: serde_json::Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "true", "metadata": big_meta})).await;
    envelope(st, &v, 400, "invalid_request");
    let many: Vec<String> = (0..65).map(|i| format!("f{i}")).collect();
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "true", "artifacts": many})).await;
    envelope(st, &v, 400, "invalid_request");
    // A body over the JSON limit is 413, not a 400 about buffering.
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "x".repeat(3 << 20)})).await;
    envelope(st, &v, 413, "request_too_large");
    // Wrong shapes say what was expected, without Rust's names for it.
    let (st, v) = api.post("/v1/workspace-runs", json!([1, 2])).await;
    envelope(st, &v, 400, "invalid_request");
    assert!(v["error"]["message"].as_str().unwrap().contains("a JSON object"), "{v}");
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "true", "artifacts": [5]})).await;
    envelope(st, &v, 400, "invalid_request");
    assert!(v["error"]["message"].as_str().unwrap().contains("a path string"), "{v}");
    // A part number that is not a number: the envelope, not text/plain.
    let run = api.create(json!({"command": "true"})).await;
    let id = run["id"].as_str().unwrap();
    let (_, t) = api.open_transfer(id, &archive()).await;
    let tid = t["data"]["id"].as_str().unwrap();
    let resp = api
        .http
        .put(format!("{}/v1/workspace-runs/{id}/archive-transfers/{tid}/parts/abc", s.url))
        .bearer_auth(&s.api_key)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let st = resp.status().as_u16();
    envelope(st, &resp.json().await.unwrap(), 400, "invalid_request");
    // A NUL in the command is refused at create; no message shows a host path.
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "echo a\u{0}b"})).await;
    envelope(st, &v, 400, "invalid_request");
    assert!(v["error"]["message"].as_str().unwrap().contains("NUL"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_in_another_key_order_replays() {
    let s = server(&[]);
    let api = Api::new(&s);
    let send = |body: &'static str| {
        api.send(
            api.http
                .post(format!("{}/v1/workspace-runs", s.url))
                .header("Idempotency-Key", "same-meaning")
                .header("content-type", "application/json")
                .body(body),
        )
    };
    let (a_st, a) = send(r#"{"command":"echo hi","metadata":{"a":"1","b":"2"}}"#).await;
    let (b_st, b) = send("{ \"metadata\" : { \"b\":\"2\", \"a\":\"1\" },\n  \"command\": \"echo hi\" }").await;
    assert_eq!((a_st, b_st), (201, 201), "{a} {b}");
    assert_eq!(a["data"]["id"], b["data"]["id"], "one run");
    let (st, v) = send(r#"{"command":"echo hi","metadata":{"a":"1","b":"3"}}"#).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("idempotency_key_reused")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_or_unknown_sandbox_is_refused_at_create() {
    let s = server(&[]);
    let api = Api::new(&s);
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "true", "sandboxId": "sbx_nope"})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")), "{v}");
    // A sandbox a run did not keep cannot be named.
    let plain = api.run(json!({"command": "true"}), &archive()).await;
    let plain_sbx = plain["sandboxId"].as_str().unwrap();
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "true", "sandboxId": plain_sbx})).await;
    // Destroyed just after the run's terminal state, or about to be.
    let code = v["error"]["code"].as_str();
    assert!(st == 409 && (code == Some("sandbox_destroyed") || code == Some("sandbox_not_kept")), "{v}");
    // Kept, then reused by a run that does not keep it: destroyed, with a tombstone.
    let kept = api.run(json!({"command": "true", "keepSandbox": true}), &archive()).await;
    let sbx = kept["sandboxId"].as_str().unwrap().to_string();
    let reuse = api.run(json!({"command": "true", "sandboxId": sbx}), &archive()).await;
    assert_eq!(reuse["status"], "succeeded", "{reuse}");
    // Its tombstone is written as the run's sandbox is destroyed, just
    // after the run reaches its terminal state.
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let (st, v) = api.post("/v1/workspace-runs", json!({"command": "true", "sandboxId": sbx})).await;
        assert_eq!(st, 409, "{v}");
        if v["error"]["code"] == "sandbox_destroyed" || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(v["error"]["code"], "sandbox_destroyed", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(reuse["id"].as_str().unwrap()), "{v}");
    // Killing it returns its state: destroyed, when and why.
    let (st, v) = api.post(&format!("/v1/sandboxes/{sbx}/kill"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["status"], "destroyed");
    assert!(v["data"]["destroyedAt"].as_str().is_some(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_get_their_environment_and_secrets_stay_out_of_the_records() {
    let s = server(&[]);
    let api = Api::new(&s);
    let secret = "s3cr3t-value-4242";
    let run = api
        .run(
            json!({"command": "echo \"ci=$CI greeting=$GREETING\"; printf %s \"$TOKEN\" | sha256sum | cut -c1-16",
                   "env": {"GREETING": "hello world"}, "secretEnv": {"TOKEN": secret}}),
            &archive(),
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let id = run["id"].as_str().unwrap();
    // The command saw the secret (its digest proves it without printing it).
    assert_eq!(
        api.output(id, "stdout").await,
        format!("ci=true greeting=hello world\n{}\n", &sha256(secret.as_bytes())[..16])
    );
    assert_eq!(run["env"]["GREETING"], "hello world");
    assert_eq!(run["secretEnv"], json!(["TOKEN"]));
    let (_, raw_run) = api.get(&format!("/v1/workspace-runs/{id}")).await;
    let evidence = api.bytes(&format!("/v1/workspace-runs/{id}/evidence")).await;
    let events = serde_json::to_string(&api.all_events(id).await).unwrap();
    for (what, text) in
        [("run", raw_run.to_string()), ("evidence", String::from_utf8(evidence).unwrap()), ("events", events)]
    {
        assert!(!text.contains(secret), "the secret is in the {what}");
    }
    assert!(!s.log_text().contains(secret), "the secret is in the server log");
    let ev = api.evidence(id).await;
    assert_eq!(ev["secretEnv"], json!(["TOKEN"]));
    assert_eq!(ev["env"]["GREETING"], "hello world");
    // Bad names are refused at create.
    for (env, why) in
        [(json!({"env": {"1X": "a"}}), "not a variable name"), (json!({"env": {"CROWNEST_X": "a"}}), "CROWNEST_")]
    {
        let mut body = env;
        body["command"] = json!("true");
        let (st, v) = api.post("/v1/workspace-runs", body).await;
        assert_eq!((st, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(why), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_with_any_name_directories_and_required_ones() {
    let s = server(&[]);
    let api = Api::new(&s);
    let run = api
        .run(
            json!({"command": "mkdir -p out && echo report > 'out/test report.html'",
                   "artifacts": [{"path": "out/test report.html", "name": "test report (final).html"}, "site"]}),
            &archive(),
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let id = run["id"].as_str().unwrap();
    let (_, list) = api.get(&format!("/v1/workspace-runs/{id}/artifacts")).await;
    let items = list["data"]["items"].as_array().unwrap().clone();
    let by_name =
        |n: &str| items.iter().find(|a| a["name"] == n).unwrap_or_else(|| panic!("no {n} in {items:?}")).clone();
    let report = by_name("test report (final).html");
    let resp = api.get_req(&format!("/v1/artifacts/{}/content", report["id"].as_str().unwrap())).send().await.unwrap();
    let cd = resp.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(cd.contains("filename*=UTF-8''test%20report%20%28final%29.html"), "{cd}");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"report\n");
    // The directory came as a .tar.gz of it.
    let site = by_name("site.tar.gz");
    let tgz = api.bytes(&format!("/v1/artifacts/{}/content", site["id"].as_str().unwrap())).await;
    let mut names = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&tgz[..]));
    for e in tar.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    for want in ["site/index.html", "site/a/b.css"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    // A required artifact that is missing fails a successful command.
    let run =
        api.run(json!({"command": "true", "artifacts": ["missing.txt"], "requireArtifacts": true}), &archive()).await;
    assert_eq!(
        (run["status"].as_str(), run["failureReason"].as_str()),
        (Some("failed"), Some("artifacts_missing")),
        "{run}"
    );
    assert_eq!(run["exitCode"], 0);
    // Without the flag the run succeeds and says what is missing.
    let run = api.run(json!({"command": "true", "artifacts": ["missing.txt"]}), &archive()).await;
    assert_eq!(run["status"], "succeeded");
    // Names that are not printable are refused.
    let (st, v) =
        api.post("/v1/workspace-runs", json!({"command": "true", "artifacts": [{"path": "a", "name": "a\nb"}]})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("invalid_artifact_name")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_archive_never_comes_expires_and_its_parts_go() {
    let s = server(&[("CROWNEST_RUNS__ARCHIVE_WAIT_SECS", "2")]);
    let api = Api::new(&s);
    let run = api.create(json!({"command": "true"})).await;
    let id = run["id"].as_str().unwrap().to_string();
    // A staged upload that got one part in and never completed.
    let data = noise(3 << 20, 7);
    let (st, t) = api.open_transfer(&id, &data).await;
    assert_eq!(st, 201, "{t}");
    let tid = t["data"]["id"].as_str().unwrap().to_string();
    let (st, _) = api
        .send(
            api.http
                .put(format!("{}/v1/workspace-runs/{id}/archive-transfers/{tid}/parts/0", s.url))
                .body(data[..1 << 20].to_vec()),
        )
        .await;
    assert_eq!(st, 200);
    let parts = s.data_dir.join("transfers").join(&tid);
    assert!(parts.exists());
    let deadline = Instant::now() + Duration::from_secs(20);
    let run = loop {
        let (_, v) = api.get(&format!("/v1/workspace-runs/{id}")).await;
        if v["data"]["status"] == "failed" {
            break v["data"].clone();
        }
        assert!(Instant::now() < deadline, "the run never expired: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["failureReason"], "archive_missing");
    assert!(run["failureMessage"].as_str().unwrap().contains("runs.archive_wait_secs"));
    api.evidence(&id).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while parts.exists() {
        assert!(Instant::now() < deadline, "the transfer's parts were not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_events_say_when_they_were_read() {
    let s = server(&[]);
    let api = Api::new(&s);
    let run = api.run(json!({"command": "echo out; sleep 0.3; echo err >&2"}), &archive()).await;
    let events = api.all_events(run["id"].as_str().unwrap()).await;
    let read_at =
        |kind: &str| events.iter().find(|e| e["type"] == kind).unwrap()["data"]["readAt"].as_str().unwrap().to_string();
    let (out, err) = (read_at("stdout"), read_at("stderr"));
    assert!(out.ends_with('Z') && out < err, "{out} then {err}");
}
