//! Workspace Runs end to end: the real `crownest serve` process over HTTP
//! and the real CLI, with real sandboxes and the embedded plugins.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn py_archive() -> Vec<u8> {
    targz(&[
        ("main.py", b"import sys\nprint('hello', sys.argv[1:])\nopen('out/report.txt','w').write('report')\nsys.stderr.write('warned\\n')\n", 0o644),
        ("out/.keep", b"", 0o644),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_writes_credentials_once_and_every_request_needs_a_key() {
    let mut s = server(&[]);
    let creds = s.data_dir.join("credentials.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
    for f in ["apiKey", "adminToken", "orgId", "projectId"] {
        assert!(v[f].as_str().is_some_and(|x| !x.is_empty()), "{f} missing: {v}");
    }
    assert!(v["apiKey"].as_str().unwrap().starts_with("cn_live_"));
    let api = Api::new(&s);
    for bad in ["", "cn_live_nope", &format!("{}x", s.api_key)] {
        let (st, body) = api.with_key(bad).get("/v1/workspace-runs").await;
        assert_eq!(st, 401, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized");
        assert!(body["error"]["requestId"].as_str().unwrap().starts_with("req_"));
    }
    let (st, _) = api.send(api.http.get(format!("{}/v1/workspace-runs", s.url))).await;
    assert_eq!(st, 200);
    // A restart keeps the credentials and prints no new key.
    let key = s.api_key.clone();
    s.kill9();
    s.spawn();
    assert_eq!(s.api_key, key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_streams_ordered_events_keeps_artifacts_and_writes_evidence() {
    let s = server(&[]);
    let api = Api::new(&s);
    let archive = py_archive();
    let run = api
        .run(
            json!({"command": "python3 main.py a b", "metadata": {"repo": "acme/app", "ref": "main"},
                   "artifacts": [{"path": "out/report.txt", "name": "report"}, "/workspace/main.py", "missing.txt"]}),
            &archive,
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["exitCode"], 0);
    let id = run["id"].as_str().unwrap();
    let events = api.all_events(id).await;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gap-free");
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"status"));
    assert_eq!(kinds.last(), Some(&"terminal"));
    assert!(kinds.contains(&"archive_progress"));
    let text = |k: &str| stream_text(&events, k);
    assert_eq!(text("stdout"), "hello ['a', 'b']\n");
    assert_eq!(text("stderr"), "warned\n");
    assert_eq!(kinds.iter().filter(|k| **k == "artifact_collected").count(), 2);
    let err = events.iter().find(|e| e["type"] == "artifact_error").unwrap();
    assert_eq!(err["data"]["code"], "artifact_not_found");
    assert_eq!(err["data"]["name"], "missing.txt");

    let ev = api.evidence(id).await;
    assert_eq!(ev["schemaVersion"], "crownest.evidence/v1");
    assert_eq!(ev["runId"], id);
    assert_eq!(ev["status"], "succeeded");
    assert_eq!(ev["exitCode"], 0);
    assert_eq!(ev["command"], "python3 main.py a b");
    assert_eq!(ev["template"]["name"], "python-node");
    assert_eq!(ev["template"]["digest"].as_str().unwrap().len(), 64);
    assert_eq!(ev["archive"]["sha256"], sha256(&archive));
    assert_eq!(ev["archive"]["sizeBytes"], archive.len());
    assert_eq!(ev["source"]["metadata"]["repo"], "acme/app");
    assert_eq!(ev["streams"]["stdout"]["sha256"], sha256(b"hello ['a', 'b']\n"));
    assert_eq!(ev["streams"]["stdout"]["truncated"], false);
    assert_eq!(ev["events"]["count"], events.len());
    assert_eq!(ev["terminalEvent"]["type"], "terminal");
    assert!(ev["timestamps"]["finishedAt"].is_string() && ev["durationsMs"]["running"].is_u64());
    assert!(ev["metering"]["computeUnitSeconds"].as_u64().unwrap() >= 1);
    assert_eq!(ev["artifactErrors"][0]["name"], "missing.txt");
    // Artifacts: ids in the run, the evidence and the events agree; bytes download intact.
    let ids: Vec<&str> = run["artifactIds"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    let report = ev["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == "report").unwrap();
    assert_eq!(report["sha256"], sha256(b"report"));
    let aid = report["id"].as_str().unwrap();
    assert!(ids.contains(&aid));
    let bytes = api.bytes(&format!("/v1/artifacts/{aid}/content")).await;
    assert_eq!(&bytes[..], b"report");
    // The evidence served is the stored bytes, and its digest header matches them.
    let resp = api.get_req(&format!("/v1/workspace-runs/{id}/evidence")).send().await.unwrap();
    let digest = resp.headers()["x-evidence-sha256"].to_str().unwrap().to_string();
    let raw = resp.bytes().await.unwrap();
    let inner = &raw[b"{\"data\":".len()..raw.len() - 1];
    assert_eq!(sha256(inner), digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_signals_and_timeouts_become_failed_runs() {
    let s = server(&[]);
    let api = Api::new(&s);
    let archive = py_archive();
    let r = api.run(json!({"command": "exit 7"}), &archive).await;
    assert_eq!(
        (r["status"].as_str(), r["exitCode"].as_i64(), r["failureReason"].as_str()),
        (Some("failed"), Some(7), Some("exit_code"))
    );
    let r = api.run(json!({"command": "kill -9 $$"}), &archive).await;
    assert_eq!((r["exitCode"].as_i64(), r["failureReason"].as_str()), (Some(137), Some("signal")), "{r}");
    let started = std::time::Instant::now();
    let r =
        api.run(json!({"command": "trap '' TERM; (setsid sleep 300 &); sleep 300", "timeoutMs": 500}), &archive).await;
    assert_eq!((r["status"].as_str(), r["failureReason"].as_str()), (Some("failed"), Some("timeout")), "{r}");
    assert!(started.elapsed() < Duration::from_secs(60));
    // The whole tree is gone: the sandbox's uid owns no process.
    let sandbox = r["sandboxId"].as_str().unwrap().to_string();
    let cell = s.cells_dir().join(&sandbox);
    assert!(!cell.join("cell.json").exists(), "the sandbox was destroyed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_an_active_run_and_leaves_a_terminal_one_alone() {
    let s = server(&[]);
    let api = Api::new(&s);
    let run = api.create(json!({"command": "echo started; sleep 300"})).await;
    let id = run["id"].as_str().unwrap();
    api.upload(id, &py_archive()).await;
    api.start(id).await;
    // Wait until the command printed, then cancel.
    for _ in 0..200 {
        let events = api.all_events(id).await;
        if events.iter().any(|e| e["type"] == "stdout") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, v) = api.post(&format!("/v1/workspace-runs/{id}/cancel"), json!({})).await;
    assert!(st == 202 || st == 200, "{v}");
    let done = api.wait(id).await;
    assert_eq!(done["status"], "canceled");
    let (st, again) = api.post(&format!("/v1/workspace-runs/{id}/cancel"), json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(again["data"]["status"], "canceled");
    assert_eq!(again["data"]["finishedAt"], done["finishedAt"], "unchanged");
    // Canceling before it ever ran.
    let run = api.create(json!({"command": "true"})).await;
    let id2 = run["id"].as_str().unwrap();
    api.post(&format!("/v1/workspace-runs/{id2}/cancel"), json!({})).await;
    let r = api.wait(id2).await;
    assert_eq!(r["status"], "canceled");
    assert_eq!(api.evidence(id2).await["status"], "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resume_exactly_after_a_cursor_and_bad_cursors_are_refused() {
    let s = server(&[]);
    let api = Api::new(&s);
    let r = api.run(json!({"command": "for i in 1 2 3; do echo line$i; sleep 0.2; done"}), &py_archive()).await;
    let id = r["id"].as_str().unwrap();
    let all = api.all_events(id).await;
    let n = all.len() as u64;
    // A bounded page.
    let (_, page) = api.get(&format!("/v1/workspace-runs/{id}/events?afterSeq=2&limit=2")).await;
    let seqs: Vec<u64> = page["data"]["items"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(page["data"]["hasMore"], true);
    // SSE from a cursor, and from Last-Event-ID: exactly the rest, ending at terminal.
    for (query, header) in [(format!("?afterSeq={}", n - 3), None), (String::new(), Some((n - 3).to_string()))] {
        let mut req =
            api.get_req(&format!("/v1/workspace-runs/{id}/events{query}")).header("accept", "text/event-stream");
        if let Some(h) = header {
            req = req.header("last-event-id", h);
        }
        let body = req.send().await.unwrap().text().await.unwrap();
        let ids: Vec<u64> = body
            .lines()
            .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
            .map(|v| v.trim().parse().unwrap())
            .collect();
        assert_eq!(ids, vec![n - 2, n - 1, n], "{body}");
        assert!(body.contains("event: terminal"));
    }
    let (st, v) = api.get(&format!("/v1/workspace-runs/{id}/events?afterSeq={}", n + 5)).await;
    assert_eq!(st, 409);
    assert_eq!(v["error"]["code"], "cursor_out_of_range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sse_sends_heartbeats_and_closes_after_terminal() {
    let s = server(&[]);
    let api = Api::new(&s);
    let run = api.create(json!({"command": "sleep 2.5; echo done"})).await;
    let id = run["id"].as_str().unwrap();
    api.upload(id, &py_archive()).await;
    api.start(id).await;
    let resp = api
        .get_req(&format!("/v1/workspace-runs/{id}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(60), resp.text())
        .await
        .expect("the stream closes after terminal")
        .unwrap();
    assert!(body.contains("event: heartbeat"), "heartbeats while idle: {body}");
    assert!(body.trim_end().lines().rev().find(|l| l.starts_with("event:")).unwrap().contains("terminal"));
    assert!(body.contains("\"text\":\"done\\n\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_cap_is_announced_counted_and_hashed() {
    let s = server(&[("CROWNEST_RUNS__OUTPUT_CAP_BYTES", "1000")]);
    let api = Api::new(&s);
    let r = api.run(json!({"command": "head -c 5000 /dev/zero | tr '\\0' x"}), &py_archive()).await;
    let id = r["id"].as_str().unwrap();
    let events = api.all_events(id).await;
    let out: Vec<_> = events.iter().filter(|e| e["type"] == "stdout").collect();
    let stored: usize = out.iter().map(|e| e["data"]["text"].as_str().unwrap_or("").len()).sum();
    assert_eq!(stored, 1000);
    assert!(out.iter().any(|e| e["data"]["truncated"] == true), "the cap is an event");
    let ev = api.evidence(id).await;
    assert_eq!(ev["streams"]["stdout"]["bytes"], 5000);
    assert_eq!(ev["streams"]["stdout"]["storedBytes"], 1000);
    assert_eq!(ev["streams"]["stdout"]["truncated"], true);
    assert_eq!(ev["streams"]["stdout"]["sha256"], sha256(&[b'x'; 5000]));
    // Each output event commits to everything stored up to its end.
    let last_stored = out.iter().rev().find(|e| e["data"]["bytes"].as_u64() > Some(0)).unwrap();
    assert_eq!(last_stored["data"]["streamSha256"], sha256(&[b'x'; 1000]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_events_carry_the_digest_of_the_stream_so_far() {
    let s = server(&[("CROWNEST_RUNS__OUTPUT_FLUSH_MS", "1")]);
    let api = Api::new(&s);
    // Three separate writes, far enough apart to land in separate events,
    // of sizes that do not fall on block boundaries.
    let r = api
        .run(
            json!({"command": "head -c 5000 /dev/zero | tr '\\0' a; sleep 0.3; head -c 4097 /dev/zero | tr '\\0' b; sleep 0.3; printf c"}),
            &py_archive(),
        )
        .await;
    let id = r["id"].as_str().unwrap();
    let events = api.all_events(id).await;
    let out: Vec<_> = events.iter().filter(|e| e["type"] == "stdout").collect();
    assert!(out.len() >= 3, "{out:?}");
    let mut stream = Vec::new();
    for e in &out {
        assert_eq!(e["data"]["offset"].as_u64().unwrap(), stream.len() as u64);
        stream.extend_from_slice(e["data"]["text"].as_str().unwrap().as_bytes());
        assert_eq!(e["data"]["streamSha256"], sha256(&stream), "prefix digest of {e}");
    }
    let expected: Vec<u8> = [vec![b'a'; 5000], vec![b'b'; 4097], vec![b'c']].concat();
    assert_eq!(stream, expected);
    assert_eq!(api.evidence(id).await["streams"]["stdout"]["sha256"], sha256(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_transfers_are_resumable_and_verified() {
    let s = server(&[]);
    let api = Api::new(&s);
    // ~3 MiB of incompressible data in 1 MiB parts.
    let noise = noise(3 << 20, 0x1234_5678);
    let archive = targz(&[("blob.bin", &noise, 0o644)]);
    let run = api.create(json!({"command": "sha256sum blob.bin"})).await;
    let id = run["id"].as_str().unwrap();
    let (st, t) = api.open_transfer(id, &archive).await;
    assert_eq!(st, 201, "{t}");
    let tid = t["data"]["id"].as_str().unwrap();
    let parts = t["data"]["partCount"].as_u64().unwrap();
    assert!(parts >= 3);
    let part = |n: u64| archive[(n as usize) << 20..archive.len().min(((n + 1) as usize) << 20)].to_vec();
    let put = |n: u64, body: Vec<u8>| {
        api.send(api.http.put(format!("{}/v1/workspace-runs/{id}/archive-transfers/{tid}/parts/{n}", s.url)).body(body))
    };
    // Upload the last parts first, then try to complete: refused, naming what is missing.
    for n in 1..parts {
        let (st, v) = put(n, part(n)).await;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = api.post(&format!("/v1/workspace-runs/{id}/archive-transfers/{tid}/complete"), json!({})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("transfer_incomplete")));
    let (_, v) = api.get(&format!("/v1/workspace-runs/{id}/archive-transfers/{tid}")).await;
    assert_eq!(v["data"]["missingParts"], json!([0]));
    let (st, v) = put(0, part(0)[..100].to_vec()).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("part_size_mismatch")));
    let (st, _) = put(0, part(0)).await;
    assert_eq!(st, 200);
    let (st, v) = api.post(&format!("/v1/workspace-runs/{id}/archive-transfers/{tid}/complete"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["archive"]["upload"], "staged");
    api.start(id).await;
    let r = api.wait(id).await;
    assert_eq!(r["status"], "succeeded");
    let out = api.output(id, "stdout").await;
    assert!(out.starts_with(&sha256(&noise)), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_a_staged_transfer_starts_an_auto_start_run_once() {
    let s = server(&[]);
    let api = Api::new(&s);
    let archive = py_archive();
    let run = api.create(json!({"command": "cat main.py", "autoStart": true})).await;
    let id = run["id"].as_str().unwrap();
    let (st, t) = api.open_transfer(id, &archive).await;
    assert_eq!(st, 201, "{t}");
    let tid = t["data"]["id"].as_str().unwrap();
    let (st, v) = api
        .send(
            api.http
                .put(format!("{}/v1/workspace-runs/{id}/archive-transfers/{tid}/parts/0", s.url))
                .body(archive.clone()),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = api.post(&format!("/v1/workspace-runs/{id}/archive-transfers/{tid}/complete"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_ne!(v["data"]["status"], "awaiting_archive", "started by the completion: {v}");
    assert!(v["data"].get("autoStartError").is_none(), "{v}");
    let (_, t) = api.get(&format!("/v1/workspace-runs/{id}/archive-transfers/{tid}")).await;
    assert_eq!(t["data"]["status"], "complete", "{t}");
    assert_eq!(api.wait(id).await["status"], "succeeded");
    let events = api.all_events(id).await;
    let queued = events.iter().filter(|e| e["type"] == "status" && e["data"]["status"] == "queued").count();
    assert_eq!(queued, 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_transfer_with_a_wrong_checksum_attaches_nothing() {
    let s = server(&[]);
    let api = Api::new(&s);
    let archive = py_archive();
    let run = api.create(json!({"command": "true"})).await;
    let id = run["id"].as_str().unwrap();
    let (_, t) = api
        .post(
            &format!("/v1/workspace-runs/{id}/archive-transfers"),
            json!({"sizeBytes": archive.len(), "sha256": sha256(b"other")}),
        )
        .await;
    let tid = t["data"]["id"].as_str().unwrap();
    api.send(
        api.http.put(format!("{}/v1/workspace-runs/{id}/archive-transfers/{tid}/parts/0", s.url)).body(archive.clone()),
    )
    .await;
    let (st, v) = api.post(&format!("/v1/workspace-runs/{id}/archive-transfers/{tid}/complete"), json!({})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("archive_checksum_mismatch")), "{v}");
    let (_, r) = api.get(&format!("/v1/workspace-runs/{id}")).await;
    assert!(r["data"]["archive"].is_null());
    let (st, v) = api
        .post(
            &format!("/v1/workspace-runs/{id}/archive-transfers"),
            json!({"sizeBytes": 2u64 << 30, "sha256": sha256(b"x")}),
        )
        .await;
    assert_eq!((st, v["error"]["code"].as_str()), (413, Some("archive_too_large")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_stable_code_and_changes_nothing() {
    let s = server(&[]);
    let api = Api::new(&s);
    let count = async || api.get("/v1/workspace-runs?limit=200").await.1["data"]["items"].as_array().unwrap().len();
    let before = count().await;

    let (st, v) = api
        .send(
            api.http
                .post(format!("{}/v1/workspace-runs", s.url))
                .header("content-type", "application/json")
                .body("{\"command\": "),
        )
        .await;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("malformed_json")));
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "  "})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{v}");
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "true", "template": "cobol"})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("unknown_template")));
    assert!(v["error"]["message"].as_str().unwrap().contains("python-node"));
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "true", "bogus": 1})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{v}");
    let (st, v) = api.post("/v1/workspace-runs", json!({"command": "true", "artifacts": ["../etc/passwd"]})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("invalid_artifact_path")));
    assert_eq!(count().await, before, "nothing was created");

    let (st, v) = api.get("/v1/workspace-runs/wsr_doesnotexist").await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")));

    let run = api.create(json!({"command": "true"})).await;
    let id = run["id"].as_str().unwrap();
    let (st, v) = api.start(id).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("archive_missing")));
    let (st, v) = api.get(&format!("/v1/workspace-runs/{id}/evidence")).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("evidence_not_ready")));

    let archive = py_archive();
    // Checksum and size mismatches: refused, nothing attached.
    let path =
        |size: usize, sha: &str| format!("{}/v1/workspace-runs/{id}/archive?sizeBytes={size}&sha256={sha}", s.url);
    let (st, v) = api.send(api.http.put(path(archive.len(), &sha256(b"nope"))).body(archive.clone())).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("archive_checksum_mismatch")));
    let (st, v) = api.send(api.http.put(path(archive.len() + 1, &sha256(&archive))).body(archive.clone())).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("archive_size_mismatch")));
    let text = b"definitely not gzip".to_vec();
    let (st, v) = api.send(api.http.put(path(text.len(), &sha256(&text))).body(text)).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("archive_not_gzip")));
    let (st, v) = api.send(api.http.put(path(9 << 20, &sha256(b"big"))).body(vec![0u8; 16])).await;
    assert_eq!((st, v["error"]["code"].as_str()), (413, Some("archive_too_large")));
    assert!(v["error"]["message"].as_str().unwrap().contains("staged transfer"));
    let (_, r) = api.get(&format!("/v1/workspace-runs/{id}")).await;
    assert!(r["data"]["archive"].is_null() && r["data"]["status"] == "awaiting_archive");
    // A good upload, then a second one.
    assert_eq!(api.upload(id, &archive).await.0, 200);
    let (st, v) = api.upload(id, &archive).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("archive_already_uploaded")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_that_are_not_tar_or_are_hostile_fail_the_run_clearly() {
    let s = server(&[]);
    let api = Api::new(&s);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &[b'z'; 4000]).unwrap();
    let not_tar = gz.finish().unwrap();
    let r = api.run(json!({"command": "true"}), &not_tar).await;
    assert_eq!((r["status"].as_str(), r["failureReason"].as_str()), (Some("failed"), Some("archive_invalid")), "{r}");
    let hostile = targz_raw_name(b"../../etc/cron.d/evil", b"* * * * * root sh\n");
    let r = api.run(json!({"command": "true"}), &hostile).await;
    assert_eq!(r["failureReason"], "archive_invalid");
    assert!(r["failureMessage"].as_str().unwrap().contains("`../../etc/cron.d/evil`"), "{r}");
    let events = api.all_events(r["id"].as_str().unwrap()).await;
    assert!(events.iter().any(|e| e["type"] == "error" && e["data"]["code"] == "archive_invalid"));
    assert_eq!(events.last().unwrap()["type"], "terminal");
    assert_eq!(api.evidence(r["id"].as_str().unwrap()).await["failureReason"], "archive_invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_refuse_mismatches_and_in_flight_duplicates() {
    let s = server(&[]);
    let api = Api::new(&s);
    let body = json!({"command": "echo once"});
    let post = |key: &'static str, b: serde_json::Value| {
        api.send(api.http.post(format!("{}/v1/workspace-runs", s.url)).header("Idempotency-Key", key).json(&b))
    };
    let (s1, a) = post("k-1", body.clone()).await;
    let (s2, b) = post("k-1", body.clone()).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(a["data"]["id"], b["data"]["id"], "one run");
    let (st, v) = post("k-1", json!({"command": "echo other"})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("idempotency_key_reused")));

    // An upload still streaming its body holds the key: a duplicate is a conflict.
    let id = a["data"]["id"].as_str().unwrap().to_string();
    let archive = py_archive();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let slow = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }));
    let url =
        format!("{}/v1/workspace-runs/{id}/archive?sizeBytes={}&sha256={}", s.url, archive.len(), sha256(&archive));
    let first = api.http.put(&url).bearer_auth(&s.api_key).header("Idempotency-Key", "up-1").body(slow).send();
    let first = tokio::spawn(first);
    tx.send(Ok(archive[..10].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (st, v) = api.send(api.http.put(&url).header("Idempotency-Key", "up-1").body(archive.clone())).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("idempotency_in_progress")), "{v}");
    tx.send(Ok(archive[10..].to_vec())).await.unwrap();
    drop(tx);
    let resp = first.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let (st, replay) = api.send(api.http.put(&url).header("Idempotency-Key", "up-1").body(archive.clone())).await;
    assert_eq!(st, 200, "replayed, not re-uploaded: {replay}");
    // Start twice with one key: one run.
    let start =
        || api.send(api.http.post(format!("{}/v1/workspace-runs/{id}/start", s.url)).header("Idempotency-Key", "st-1"));
    let (a, _) = start().await;
    let (b, _) = start().await;
    assert_eq!((a, b), (202, 202));
    let r = api.wait(&id).await;
    let events = api.all_events(&id).await;
    assert_eq!(events.iter().filter(|e| e["type"] == "status" && e["data"]["status"] == "running").count(), 1);
    assert_eq!(r["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_started_upload_is_replayed_byte_for_byte_and_runs_once() {
    let s = server(&[]);
    let api = Api::new(&s);
    let create = || {
        api.http
            .post(format!("{}/v1/workspace-runs", s.url))
            .bearer_auth(&s.api_key)
            .header("Idempotency-Key", "c-auto")
            .json(&json!({"command": "echo once", "autoStart": true}))
            .send()
    };
    let first = create().await.unwrap();
    assert_eq!(first.status(), 201);
    let first_body = first.bytes().await.unwrap();
    let again = create().await.unwrap();
    assert_eq!(again.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(again.bytes().await.unwrap(), first_body, "the stored response, byte for byte");
    let run: serde_json::Value = serde_json::from_slice(&first_body).unwrap();
    let id = run["data"]["id"].as_str().unwrap().to_string();

    let archive = py_archive();
    let url =
        format!("{}/v1/workspace-runs/{id}/archive?sizeBytes={}&sha256={}", s.url, archive.len(), sha256(&archive));
    let upload =
        || api.http.put(&url).bearer_auth(&s.api_key).header("Idempotency-Key", "u-auto").body(archive.clone()).send();
    let first = upload().await.unwrap();
    assert_eq!(first.status(), 200);
    let first_body = first.bytes().await.unwrap();
    let view: serde_json::Value = serde_json::from_slice(&first_body).unwrap();
    assert_eq!(view["data"]["status"], "queued", "started by the upload: {view}");
    assert!(view["data"].get("autoStartError").is_none());
    let again = upload().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(again.bytes().await.unwrap(), first_body, "the stored response, byte for byte");

    let r = api.wait(&id).await;
    assert_eq!(r["status"], "succeeded");
    let events = api.all_events(&id).await;
    let queued = events.iter().filter(|e| e["type"] == "status" && e["data"]["status"] == "queued").count();
    assert_eq!(queued, 1, "queued once");
    assert_eq!(api.output(&id, "stdout").await, "once\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_sandbox_is_reused_by_the_next_run() {
    let s = server(&[]);
    let api = Api::new(&s);
    let a = api.run(json!({"command": "echo kept > /workspace/state.txt", "keepSandbox": true}), &py_archive()).await;
    assert_eq!(a["status"], "succeeded");
    let sbx = a["sandboxId"].as_str().unwrap();
    assert!(s.cells_dir().join(sbx).join("cell.json").exists(), "kept");
    let b = api.run(json!({"command": "cat /workspace/state.txt", "sandboxId": sbx}), &py_archive()).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    let out = api.output(b["id"].as_str().unwrap(), "stdout").await;
    assert_eq!(out, "kept\n");
    assert!(!s.cells_dir().join(sbx).join("cell.json").exists(), "destroyed after the run that did not keep it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_runs_loses_no_acknowledged_event_and_fails_them_on_restart() {
    let mut s = server(&[]);
    let api = Api::new(&s);
    let run = api.create(json!({"command": "for i in $(seq 1 1000); do echo tick$i; sleep 0.05; done"})).await;
    let id = run["id"].as_str().unwrap().to_string();
    api.upload(&id, &py_archive()).await;
    api.start(&id).await;
    // Read some events live, remember the last acknowledged one.
    let resp = api
        .get_req(&format!("/v1/workspace-runs/{id}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    use futures_util::StreamExt;
    let mut seen = String::new();
    while !seen.contains("tick5") {
        seen.push_str(&String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()));
    }
    let last_ack: u64 = seen
        .lines()
        .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
        .map(|v| v.trim().parse().unwrap())
        .max()
        .unwrap();
    let (_, r) = api.get(&format!("/v1/workspace-runs/{id}")).await;
    let sandbox = r["data"]["sandboxId"].as_str().unwrap().to_string();
    let cell = s.cells_dir().join(&sandbox);
    let uid: u32 = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(cell.join("cell.json")).unwrap())
        .unwrap()["uid"]
        .as_u64()
        .unwrap() as u32;
    s.kill9();
    drop(stream);
    s.spawn();
    let api = Api::new(&s);
    let r = api.wait(&id).await;
    assert_eq!((r["status"].as_str(), r["failureReason"].as_str()), (Some("failed"), Some("host_restarted")), "{r}");
    let events = api.all_events(&id).await;
    assert!(events.len() as u64 > last_ack, "every acknowledged event survived");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap()["type"], "terminal");
    assert_eq!(api.evidence(&id).await["failureReason"], "host_restarted");
    assert!(!cell.join("cell.json").exists(), "the orphaned sandbox was reaped");
    // Dying processes take a moment to leave the process table.
    let mut left = processes_of(uid);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = processes_of(uid);
    }
    assert!(left.is_empty(), "no process of the sandbox survived: {left:?}");
}

/// `crownest` runs the API client commands without `crownest-host` beside
/// it, and a command that hosts plugins names the executable it lacks.
#[test]
fn the_client_executable_runs_alone_and_names_the_host_it_needs() {
    let s = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("crownest");
    // A hard link: the executable then finds its siblings in `dir`.
    if std::fs::hard_link(exe(), &lone).is_err() {
        std::fs::copy(exe(), &lone).unwrap();
    }
    let tgz = dir.path().join("repo.tgz");
    std::fs::write(&tgz, py_archive()).unwrap();
    let command = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&lone);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("CROWNEST_")) {
            cmd.env_remove(k);
        }
        cmd.env("CROWNEST_API_URL", &s.url).env("CROWNEST_API_KEY", &s.api_key).args(args).output().unwrap()
    };
    let out = command(&["workspace-runs", "run-archive", tgz.to_str().unwrap(), "--", "echo alone"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alone\n");
    let out = command(&["doctor"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("crownest-host") && err.contains("installed next to crownest"), "{err}");
}

#[test]
fn the_cli_runs_an_archive_and_reports_like_the_docs_say() {
    let s = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let tgz = dir.path().join("repo.tgz");
    std::fs::write(&tgz, py_archive()).unwrap();
    let run = |args: &[&str]| s.cli().args(args).output().unwrap();
    let out = run(&[
        "workspace-runs",
        "run-archive",
        tgz.to_str().unwrap(),
        "--artifact",
        "out/report.txt=report.txt",
        "--metadata",
        "repo=acme/app",
        "--",
        "python3",
        "main.py",
        "x y",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello ['x y']\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("warned\n"));
    let out = run(&["workspace-runs", "run-archive", tgz.to_str().unwrap(), "--", "exit 9"]);
    assert_eq!(out.status.code(), Some(9));
    let out = run(&["workspace-runs", "run-archive", tgz.to_str().unwrap(), "--timeout-ms", "300", "--", "sleep 30"]);
    assert_eq!(out.status.code(), Some(124));
    let out = run(&["workspace-runs", "run-archive", tgz.to_str().unwrap(), "--json", "--", "echo hi"]);
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().all(|l| l["data"]["seq"].is_u64()));
    assert_eq!(lines.last().unwrap()["data"]["type"], "terminal");
    // Step by step.
    let created = run(&["workspace-runs", "create", "--command", "cat main.py | wc -l", "--json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&created.stdout).unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(run(&["workspace-runs", "upload", &id, tgz.to_str().unwrap()]).status.success());
    let dup = run(&["workspace-runs", "upload", &id, tgz.to_str().unwrap()]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("archive_already_uploaded"));
    assert!(run(&["workspace-runs", "start", &id]).status.success());
    let logs = run(&["workspace-runs", "logs", &id]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout).trim(), "4");
    let status = run(&["workspace-runs", "status", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["data"]["status"], "succeeded");
    let list = String::from_utf8_lossy(&run(&["workspace-runs", "list"]).stdout).to_string();
    assert!(list.starts_with("RUN") && list.contains(&id));
    let ev = dir.path().join("evidence.json");
    assert!(run(&["workspace-runs", "evidence", &id, "--output", ev.to_str().unwrap()]).status.success());
    let bundle: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ev).unwrap()).unwrap();
    assert_eq!(bundle["runId"], id.as_str());
    // Input the CLI refuses before calling the API.
    let d = run(&["workspace-runs", "upload", &id, dir.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&d.stderr).contains("is a directory"), "{}", String::from_utf8_lossy(&d.stderr));
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "x").unwrap();
    let t = run(&["workspace-runs", "upload", &id, txt.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&t.stderr).contains("not a .tgz or .tar.gz"));
    let bad = s.cli().env("CROWNEST_API_KEY", "cn_live_wrong").args(["workspace-runs", "list"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unauthorized"));
}

#[test]
fn the_cli_uploads_large_archives_in_stages() {
    let s = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let noise = noise(10 << 20, 42);
    let tgz = dir.path().join("big.tar.gz");
    std::fs::write(&tgz, targz(&[("noise.bin", &noise, 0o644)])).unwrap();
    let out = s
        .cli()
        .args(["workspace-runs", "run-archive", tgz.to_str().unwrap(), "--", "sha256sum noise.bin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&sha256(&noise)));
}

/// Megabytes of output reach a live reader (`run-archive`'s SSE stream)
/// byte for byte, run after run. The server reuses its output buffers:
/// chunk buffers across runs, SSE frame buffers within a stream; the runs
/// here write different, shrinking outputs of several chunks each, so a
/// reused buffer that kept anything of what it held before would show.
#[test]
fn large_output_streams_exactly_run_after_run() {
    let s = server(&[("CROWNEST_RUNS__OUTPUT_CAP_BYTES", "67108864")]);
    let dir = tempfile::tempdir().unwrap();
    let tgz = dir.path().join("tiny.tgz");
    std::fs::write(&tgz, targz(&[("README", b"x", 0o644)])).unwrap();
    for (first, last) in [(1u64, 3_000_000u64), (5, 2_000_000), (999, 1_200_000)] {
        let out = s
            .cli()
            .args(["workspace-runs", "run-archive", tgz.to_str().unwrap(), "--", &format!("seq {first} {last}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let expected: String = (first..=last).map(|i| format!("{i}\n")).collect();
        assert_eq!(out.stdout.len(), expected.len(), "seq {first} {last}: every byte, no more");
        assert!(out.stdout == expected.as_bytes(), "seq {first} {last}: the bytes differ");
    }
}

/// Output piped from `run-archive` (to `grep`, `tee`, an agent) goes
/// through a pipe the CLI widens to 1 MiB: an output event holds up to
/// 4 MiB, and through the default 64 KiB the CLI would sleep and be woken
/// ~64 times per event.
#[test]
fn the_cli_widens_the_pipe_its_output_goes_to() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let s = server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let tgz = dir.path().join("tiny.tgz");
    std::fs::write(&tgz, targz(&[("README", b"x", 0o644)])).unwrap();
    let mut child = s
        .cli()
        .args(["workspace-runs", "run-archive", tgz.to_str().unwrap(), "--", "echo piped"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // SAFETY: F_GETPIPE_SZ on the pipe's read end, which we own.
    let before = unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_GETPIPE_SZ) };
    let mut text = String::new();
    stdout.read_to_string(&mut text).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(text, "piped\n");
    // SAFETY: as above.
    let after = unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_GETPIPE_SZ) };
    assert_eq!(after, 1 << 20, "the pipe's size after the CLI ran (it was {before} bytes before)");
    assert!(before < after, "a pipe starts smaller ({before} bytes)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_staged_transfers_are_swept() {
    let s = server(&[("CROWNEST_RUNS__ABANDONED_TRANSFER_SECS", "2")]);
    let api = Api::new(&s);
    let run = api.create(json!({"command": "true"})).await;
    let id = run["id"].as_str().unwrap();
    let (st, t) = api
        .post(
            &format!("/v1/workspace-runs/{id}/archive-transfers"),
            json!({"sizeBytes": 3 << 20, "sha256": "0".repeat(64), "partSizeBytes": 1 << 20}),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    let tid = t["data"]["id"].as_str().unwrap().to_string();
    let (st, _) = api
        .send(
            api.http
                .put(format!("{}/v1/workspace-runs/{id}/archive-transfers/{tid}/parts/0", s.url))
                .body(vec![1u8; 1 << 20]),
        )
        .await;
    assert_eq!(st, 200);
    let parts_dir = s.data_dir.join("transfers").join(&tid);
    assert!(parts_dir.join("part-0").exists());
    let mut swept = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !parts_dir.exists() {
            swept = true;
            break;
        }
    }
    assert!(swept, "the abandoned parts are still on disk");
    let (st, _) = api.get(&format!("/v1/workspace-runs/{id}/archive-transfers/{tid}")).await;
    assert_eq!(st, 404);
    // The run itself is untouched and can still get its archive.
    assert_eq!(api.upload(id, &targz(&[("a", b"a", 0o644)])).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_start_runs_the_command_once_the_upload_is_verified() {
    let s = server(&[]);
    let api = Api::new(&s);
    let run = api.create(json!({"command": "cat main.py", "autoStart": true})).await;
    assert_eq!(run["autoStart"], true);
    let id = run["id"].as_str().unwrap();
    // A bad upload starts nothing and loses nothing.
    let archive = py_archive();
    let bad = format!("/v1/workspace-runs/{id}/archive?sizeBytes={}&sha256={}", archive.len(), "0".repeat(64));
    let (st, v) = api.send(api.http.put(format!("{}{bad}", api.url)).body(archive.clone())).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("archive_checksum_mismatch")), "{v}");
    assert_eq!(api.get(&format!("/v1/workspace-runs/{id}")).await.1["data"]["status"], "awaiting_archive");
    // The verified upload answers with the run already queued.
    let (st, v) = api.upload(id, &archive).await;
    assert_eq!(st, 200, "{v}");
    assert_ne!(v["data"]["status"], "awaiting_archive", "{v}");
    assert!(v["data"].get("autoStartError").is_none(), "{v}");
    let done = api.wait(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // One run, started once; an explicit start afterwards changes nothing.
    let events = api.all_events(id).await;
    let queued = events.iter().filter(|e| e["type"] == "status" && e["data"]["status"] == "queued").count();
    assert_eq!(queued, 1, "{events:?}");
    let (st, v) = api.start(id).await;
    assert_eq!((st, v["data"]["status"].as_str()), (200, Some("succeeded")), "{v}");
    assert_eq!(api.all_events(id).await.len(), events.len());
}

/// Standby sandboxes ready under the server's sandbox root.
fn standbys(s: &crownest_test_support::server::Server) -> usize {
    let dir = s.cells_dir();
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("cell.json")).is_ok_and(|t| t.contains("\"standby\": true"))
                })
                .count()
        })
        .unwrap_or(0)
}

async fn wait_for_standby(s: &crownest_test_support::server::Server) {
    for _ in 0..400 {
        if standbys(s) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no standby sandbox was prepared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_a_standby_sandbox_behaves_like_one_in_a_new_sandbox() {
    let s = server(&[]);
    let api = Api::new(&s);
    let probe = "env | grep -v '^CROWNEST_RUN_ID=' | sort; pwd; id; hostname; ls -a /workspace; ulimit -n";
    let cold = api.run(json!({"command": probe}), &py_archive()).await;
    assert_eq!(cold["status"], "succeeded", "{cold}");
    // The first run taught the server this template's shape.
    wait_for_standby(&s).await;
    let warm = api.run(json!({"command": probe, "keepSandbox": true}), &py_archive()).await;
    assert_eq!(warm["status"], "succeeded", "{warm}");
    let sbx = warm["sandboxId"].as_str().unwrap();
    let link = s.cells_dir().join(sbx);
    assert!(
        std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
        "the kept sandbox is an adopted standby"
    );
    let cold_out = api.output(cold["id"].as_str().unwrap(), "stdout").await;
    let warm_out = api.output(warm["id"].as_str().unwrap(), "stdout").await;
    assert_eq!(cold_out, warm_out, "same environment, directory, identity, files and limits");
    // Each run sees its own run id.
    let id_of = |r: &serde_json::Value| r["id"].as_str().unwrap().to_string();
    let again = api.run(json!({"command": "echo $CROWNEST_RUN_ID", "sandboxId": sbx}), &py_archive()).await;
    assert_eq!(api.output(&id_of(&again), "stdout").await, format!("{}\n", id_of(&again)));
    assert!(std::fs::symlink_metadata(&link).is_err(), "destroyed with its id link");

    // A timeout in a standby sandbox ends the whole tree like anywhere else.
    wait_for_standby(&s).await;
    let t = api.run(json!({"command": "sleep 60 & sleep 60", "timeoutMs": 1000}), &py_archive()).await;
    assert_eq!((t["status"].as_str(), t["failureReason"].as_str()), (Some("failed"), Some("timeout")), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_output_capture_is_an_error_event_not_silence() {
    let s = server(&[]);
    let api = Api::new(&s);
    let run = api.create(json!({"command": "echo lost"})).await;
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(api.upload(&id, &py_archive()).await.0, 200);
    // Where the run's output logs go, a file: storing output fails.
    std::fs::create_dir_all(s.data_dir.join("runs")).unwrap();
    std::fs::write(s.data_dir.join("runs").join(&id), "in the way").unwrap();
    assert_eq!(api.start(&id).await.0, 202);
    let done = api.wait(&id).await;
    assert_eq!(done["status"], "succeeded", "the command itself ran: {done}");
    let events = api.all_events(&id).await;
    let err = events
        .iter()
        .find(|e| e["type"] == "error" && e["data"]["code"] == "output_capture_failed")
        .unwrap_or_else(|| panic!("no error event: {events:?}"));
    assert_eq!(err["data"]["stream"], "stdout");
    assert_eq!(events.last().unwrap()["type"], "terminal");
    assert!(api.evidence(&id).await["streams"].get("stdout").is_none());
}
