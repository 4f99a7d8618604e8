//! The S3 artifact store end to end, against a real single-node Garage: the
//! same artifact suite as fs-artifacts, objects checked with an independent
//! client (`curl --aws-sigv4`), outages, bad credentials, a missing bucket,
//! and the conformance suite. Backends switch by configuration only.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use crownest_core::config::{Config, Grants, PluginConfig};
use crownest_core::kv::SqliteKv;
use crownest_core::ports::{ArtifactStore, PutRequest};
use crownest_core::{ErrorKind, PluginKind};
use crownest_plugins::kinds::WasmArtifactStore;
use crownest_plugins::{PluginHost, PluginSource};
use crownest_test_support::garage::Garage;
use crownest_test_support::server::Server;
use serde_json::json;

/// Server settings selecting s3-artifacts on `g` (the secret through `${env:…}`).
fn s3_env(g: &Garage, prefix: &str) -> Vec<(String, String)> {
    vec![
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__SOURCE".into(), "builtin:s3-artifacts".into()),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__ENDPOINT".into(), g.endpoint.clone()),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__REGION".into(), g.region.clone()),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__BUCKET".into(), g.bucket.clone()),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__PREFIX".into(), prefix.into()),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__ACCESS_KEY_ID".into(), g.key_id.clone()),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__SECRET_ACCESS_KEY".into(), "${env:TEST_GARAGE_SECRET}".into()),
        ("TEST_GARAGE_SECRET".into(), g.secret.clone()),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__PART_SIZE_BYTES".into(), (8u64 << 20).to_string()),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__REQUEST_TIMEOUT_MS".into(), "30000".into()),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__MAX_ATTEMPTS".into(), "2".into()),
    ]
}

fn server_with(env: &[(String, String)]) -> Server {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    server(&pairs)
}

/// The same checks for any store: three declared artifacts (small, 40 MiB,
/// missing) → two kept, one error; bytes and digests agree everywhere.
async fn artifact_suite(s: &Server) -> Vec<serde_json::Value> {
    let api = Api::new(s);
    let archive = targz(&[("README", b"suite\n", 0o644)]);
    let run = api
        .run(
            json!({"command": "echo small > small.txt && head -c 41943040 /dev/urandom > big.bin",
                   "artifacts": ["small.txt", "big.bin", "missing.txt"]}),
            &archive,
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let id = run["id"].as_str().unwrap();
    let events = api.all_events(id).await;
    let collected: Vec<_> = events.iter().filter(|e| e["type"] == "artifact_collected").collect();
    let errors: Vec<_> = events.iter().filter(|e| e["type"] == "artifact_error").collect();
    assert_eq!((collected.len(), errors.len()), (2, 1), "{events:?}");
    assert_eq!(errors[0]["data"]["name"], "missing.txt");
    let ev = api.evidence(id).await;
    let mut out = Vec::new();
    for a in ev["artifacts"].as_array().unwrap() {
        let aid = a["id"].as_str().unwrap();
        let (_, meta) = api.get(&format!("/v1/artifacts/{aid}")).await;
        let meta = meta["data"].clone();
        assert_eq!(meta["sha256"], a["sha256"]);
        let bytes = api.bytes(&format!("/v1/artifacts/{aid}/content")).await;
        assert_eq!(sha256(&bytes), a["sha256"].as_str().unwrap(), "download matches the evidence");
        assert_eq!(bytes.len() as u64, a["sizeBytes"].as_u64().unwrap());
        out.push(meta);
    }
    // The CLI lists and fetches them too.
    let list = s.cli().args(["artifacts", "list", "--run", id]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("big.bin"));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("small.txt");
    let aid = out.iter().find(|m| m["name"] == "small.txt").unwrap()["id"].as_str().unwrap();
    let got = s.cli().args(["artifacts", "get", aid, "--output", dest.to_str().unwrap()]).output().unwrap();
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert_eq!(std::fs::read(&dest).unwrap(), b"small\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_artifact_suite_passes_on_fs_artifacts() {
    let s = server(&[]);
    let metas = artifact_suite(&s).await;
    assert!(metas.iter().all(|m| m["store"] == "fs-artifacts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_artifact_suite_passes_on_s3_artifacts_and_the_bucket_holds_the_bytes() {
    let g = Garage::start();
    let s = server_with(&s3_env(&g, "ci/"));
    let metas = artifact_suite(&s).await;
    for m in &metas {
        assert_eq!(m["store"], "s3-artifacts");
        let object = format!("ci/{}", m["locator"].as_str().unwrap());
        let bytes = g.curl_get(&object).unwrap_or_else(|| panic!("{object} is not in the bucket"));
        assert_eq!(sha256(&bytes), m["sha256"].as_str().unwrap(), "independent client sees the same bytes");
    }
    assert!(!g.multipart_uploads().contains("<UploadId>"), "no multipart upload left open");
    // Nothing secret leaks into what users see.
    let api = Api::new(&s);
    let (_, runs) = api.get("/v1/workspace-runs").await;
    let id = runs["data"]["items"][0]["id"].as_str().unwrap().to_string();
    let ev = api.evidence(&id).await.to_string();
    let events = serde_json::to_string(&api.all_events(&id).await).unwrap();
    assert!(!ev.contains(&g.secret) && !events.contains(&g.secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_alone_switches_a_running_installation_between_stores() {
    let g = Garage::start();
    let mut s = server(&[]);
    let api = Api::new(&s);
    let archive = targz(&[("README", b"x\n", 0o644)]);
    let a = api.run(json!({"command": "echo one > one.txt", "artifacts": ["one.txt"]}), &archive).await;
    let (_, meta) = api.get(&format!("/v1/artifacts/{}", a["artifactIds"][0].as_str().unwrap())).await;
    assert_eq!(meta["data"]["store"], "fs-artifacts");
    s.kill9();
    s.env.extend(s3_env(&g, "switched/"));
    s.spawn();
    let api = Api::new(&s);
    let b = api.run(json!({"command": "echo two > two.txt", "artifacts": ["two.txt"]}), &archive).await;
    let (_, meta) = api.get(&format!("/v1/artifacts/{}", b["artifactIds"][0].as_str().unwrap())).await;
    assert_eq!(meta["data"]["store"], "s3-artifacts");
    assert_eq!(g.curl_get(&format!("switched/{}", meta["data"]["locator"].as_str().unwrap())).unwrap(), b"two\n");
    // The earlier artifact is still described, and its download says where it is.
    let old = a["artifactIds"][0].as_str().unwrap();
    let (st, v) = api.get(&format!("/v1/artifacts/{old}/content")).await;
    assert_eq!((st, v["error"]["code"].as_str()), (410, Some("artifact_in_other_store")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("fs-artifacts"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_only_the_artifact_with_a_retryable_code() {
    let mut g = Garage::start();
    let s = server_with(&s3_env(&g, "outage/"));
    let api = Api::new(&s);
    let run =
        api.create(json!({"command": "echo kept-output; echo data > a.txt; sleep 2", "artifacts": ["a.txt"]})).await;
    let id = run["id"].as_str().unwrap().to_string();
    api.upload(&id, &targz(&[("README", b"x\n", 0o644)])).await;
    // The archive went in before the outage; the artifact goes out during it.
    api.start(&id).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    g.stop();
    let r = api.wait(&id).await;
    assert_eq!(r["status"], "succeeded", "the run's own result is intact: {r}");
    let events = api.all_events(&id).await;
    let err = events.iter().find(|e| e["type"] == "artifact_error").expect("an artifact_error");
    assert_eq!(err["data"]["code"], "artifact_store_unavailable", "{err}");
    assert_eq!(stream_text(&events, "stdout"), "kept-output\n");
    assert_eq!(api.evidence(&id).await["artifactErrors"][0]["code"], "artifact_store_unavailable");
    g.restart();
}

/// A body that stops after `first` bytes until told to go on.
struct Gated {
    data: Vec<u8>,
    pos: usize,
    first: usize,
    gate: Arc<tokio::sync::Notify>,
    waiting: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    opened: bool,
}

impl tokio::io::AsyncRead for Gated {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.pos >= self.first && !self.opened {
            if self.waiting.is_none() {
                let gate = self.gate.clone();
                self.waiting = Some(Box::pin(async move { gate.notified().await }));
            }
            match self.waiting.as_mut().unwrap().as_mut().poll(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                std::task::Poll::Ready(()) => self.opened = true,
            }
        }
        let end = if self.opened { self.data.len() } else { self.first };
        let n = buf.remaining().min(end - self.pos);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_cut_off_by_an_outage_leaves_no_orphaned_parts_once_back() {
    let mut g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(SqliteKv::open(&dir.path().join("kv.db")).unwrap());
    let host = PluginHost::for_config(&Config::default(), kv).unwrap();
    let mut table = PluginConfig::default();
    table.config = toml::from_str(&g.plugin_config("cut/", 5 << 20)).unwrap();
    let grants = Grants { http: vec![g.authority()], ..Grants::default() };
    let store = WasmArtifactStore::new(
        host.load(PluginKind::ArtifactStore, PluginSource::Builtin("s3-artifacts".into()), &table, grants).unwrap(),
    )
    .unwrap();

    let data: Vec<u8> = (0..(24u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let gate = Arc::new(tokio::sync::Notify::new());
    let body = Gated { data: data.clone(), pos: 0, first: 12 << 20, gate: gate.clone(), waiting: None, opened: false };
    let req = PutRequest {
        key: "artifacts/cut/big".into(),
        size: data.len() as u64,
        sha256: sha256(&data),
        content_type: None,
        metadata: vec![],
    };
    let put = tokio::spawn({
        let store = Arc::new(store);
        let s2 = store.clone();
        async move { (s2.put(req, Box::new(body)).await, store) }
    });
    // Two parts are up; the third waits for the body. Now the outage.
    for _ in 0..200 {
        if g.multipart_uploads().contains("<UploadId>") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(g.multipart_uploads().contains("<UploadId>"), "the upload is in progress");
    tokio::time::sleep(Duration::from_millis(500)).await;
    g.stop();
    gate.notify_one();
    let (result, store) = put.await.unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    assert!(err.kind.is_retryable());
    g.restart();
    assert!(g.multipart_uploads().contains("<UploadId>"), "the abort could not reach the service during the outage");
    // The next check sweeps what the outage left.
    store.check().await.unwrap();
    assert!(!g.multipart_uploads().contains("<UploadId>"), "orphaned parts aborted: {}", g.multipart_uploads());
}

#[test]
fn wrong_credentials_and_a_missing_bucket_are_reported_clearly() {
    let g = Garage::start();
    let run_doctor = |extra: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(exe());
        for (k, _) in std::env::vars() {
            if k.starts_with("CROWNEST_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--data-dir").arg(dir.path()).arg("doctor").env("CROWNEST_SANDBOX__ROOT", dir.path().join("sbx"));
        for (k, v) in s3_env(&g, "doc/") {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run_doctor(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("s3-artifacts: ready") && out.contains("artifact round trip"), "{out}");
    let (code, out) =
        run_doctor(&[("TEST_GARAGE_SECRET", "0000000000000000000000000000000000000000000000000000000000000000")]);
    assert_eq!(code, Some(1));
    assert!(out.contains("denied") && out.contains("check the credentials"), "{out}");
    let (code, out) = run_doctor(&[("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__BUCKET", "no-such-bucket")]);
    assert_eq!(code, Some(1));
    assert!(out.contains("bucket `no-such-bucket` does not exist"), "{out}");
}

#[test]
fn the_s3_plugin_passes_the_conformance_suite() {
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s3.toml");
    std::fs::write(&cfg, g.plugin_config("conformance/", 5 << 20)).unwrap();
    let out = std::process::Command::new(exe())
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "plugins",
            "check",
            "artifact-store",
            "builtin:s3-artifacts",
            "--plugin-config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("PASS  put-large-streamed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_presigning_enabled_staged_parts_and_downloads_go_straight_to_the_bucket() {
    let g = Garage::start();
    let mut env = s3_env(&g, "pre/");
    env.push(("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__PRESIGN_UPLOADS".into(), "true".into()));
    env.push(("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__PRESIGN_DOWNLOADS".into(), "true".into()));
    let s = server_with(&env);
    let api = Api::new(&s);
    let archive = targz(&[("blob.bin", &noise(3 << 20, 99), 0o644), ("hello.txt", b"hi\n", 0o644)]);
    let run = api.create(json!({"command": "sha256sum blob.bin > sum.txt", "artifacts": ["sum.txt"]})).await;
    let id = run["id"].as_str().unwrap();
    let base = format!("/v1/workspace-runs/{id}/archive-transfers");
    let (st, t) = api
        .post(&base, json!({"sizeBytes": archive.len(), "sha256": sha256(&archive), "partSizeBytes": 1 << 20}))
        .await;
    assert_eq!(st, 201, "{t}");
    let t = t["data"].clone();
    let tid = t["id"].as_str().unwrap().to_string();
    assert_eq!(t["mode"], "presigned", "{t}");
    let count = t["partCount"].as_u64().unwrap();
    assert!(count >= 3, "{t}");
    let urls: Vec<String> =
        t["uploadUrls"].as_array().unwrap().iter().map(|u| u["url"].as_str().unwrap().to_string()).collect();
    assert_eq!(urls.len() as u64, count);
    assert!(urls.iter().all(|u| u.starts_with(&g.endpoint) && u.contains("X-Amz-Signature")), "{urls:?}");
    assert!(urls.iter().all(|u| !u.contains(&g.secret)), "no secret in a presigned URL");

    // Parts do not go through the API for such a transfer.
    let (st, v) = api.send(api.http.put(format!("{}{base}/{tid}/parts/0", s.url)).body(vec![0u8; 4])).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("transfer_is_presigned")), "{v}");

    // Completing before every part is there names the missing part.
    let part = |n: usize| archive[n << 20..((n + 1) << 20).min(archive.len())].to_vec();
    let plain = reqwest::Client::new();
    for (n, url) in urls.iter().enumerate().skip(1) {
        let r = plain.put(url).body(part(n)).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let (st, v) = api.post(&format!("{base}/{tid}/complete"), json!({})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("transfer_incomplete")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("part 0"), "{v}");

    // A part of the wrong size is named too; re-uploading it fixes the transfer.
    plain.put(&urls[0]).body(part(0)[..1000].to_vec()).send().await.unwrap();
    let (st, v) = api.post(&format!("{base}/{tid}/complete"), json!({})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("part_size_mismatch")), "{v}");
    // Fresh URLs come with a GET of the transfer.
    let (_, again) = api.get(&format!("{base}/{tid}")).await;
    let fresh = again["data"]["uploadUrls"][0]["url"].as_str().unwrap().to_string();
    assert!(plain.put(&fresh).body(part(0)).send().await.unwrap().status().is_success());
    let (st, v) = api.post(&format!("{base}/{tid}/complete"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["archive"]["upload"], "staged", "{v}");
    assert!(g.curl_get(&format!("pre/transfers/{tid}/part-0")).is_none(), "parts are deleted once the archive is kept");

    let (st, v) = api.start(id).await;
    assert_eq!(st, 202, "{v}");
    let done = api.wait(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // The artifact download is a redirect to a presigned GET on the bucket.
    let aid = done["artifactIds"][0].as_str().unwrap();
    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r =
        no_follow.get(format!("{}/v1/artifacts/{aid}/content", s.url)).bearer_auth(&s.api_key).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&g.endpoint), "{location}");
    let sum = plain.get(&location).send().await.unwrap().text().await.unwrap();
    let blob_sha = sha256(&noise(3 << 20, 99));
    assert!(sum.starts_with(&blob_sha), "{sum}");

    // The CLI takes the same path for an archive above the direct limit.
    let dir = tempfile::tempdir().unwrap();
    let big = targz(&[("big.bin", &noise(9 << 20, 7), 0o644)]);
    let path = dir.path().join("big.tgz");
    std::fs::write(&path, &big).unwrap();
    let out = s
        .cli()
        .args(["workspace-runs", "run-archive", path.to_str().unwrap(), "--", "wc -c < big.bin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), (9u64 << 20).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_presigned_transfers_are_swept_from_the_bucket() {
    let g = Garage::start();
    let mut env = s3_env(&g, "sweep/");
    env.push(("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__PRESIGN_UPLOADS".into(), "true".into()));
    env.push(("CROWNEST_RUNS__ABANDONED_TRANSFER_SECS".into(), "2".into()));
    let s = server_with(&env);
    let api = Api::new(&s);
    let run = api.create(json!({"command": "true"})).await;
    let id = run["id"].as_str().unwrap();
    let archive = targz(&[("blob.bin", &noise(2 << 20, 5), 0o644)]);
    let (st, t) = api.open_transfer(id, &archive).await;
    assert_eq!(st, 201, "{t}");
    let tid = t["data"]["id"].as_str().unwrap().to_string();
    let url = t["data"]["uploadUrls"][0]["url"].as_str().unwrap();
    assert!(
        reqwest::Client::new().put(url).body(archive[..1 << 20].to_vec()).send().await.unwrap().status().is_success()
    );
    let object = format!("sweep/transfers/{tid}/part-0");
    assert!(g.curl_get(&object).is_some());
    // The sweeper deletes the parts first and the record after them (so a
    // failed delete is retried from the record): wait for both.
    let (mut part_gone, mut status) = (false, 0);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        part_gone = g.curl_get(&object).is_none();
        status = api.get(&format!("/v1/workspace-runs/{id}/archive-transfers/{tid}")).await.0;
        if part_gone && status == 404 {
            break;
        }
    }
    assert!(part_gone, "the abandoned part is still in the bucket");
    assert_eq!(status, 404, "the abandoned transfer is still listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_name_the_public_endpoint_when_one_is_set() {
    let g = Garage::start();
    // The same service under another name, as clients behind a proxy see it.
    let public = g.endpoint.replace("127.0.0.1", "localhost");
    assert_ne!(public, g.endpoint);
    let mut env = s3_env(&g, "pub/");
    env.push(("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__PRESIGN_DOWNLOADS".into(), "true".into()));
    env.push(("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__PUBLIC_ENDPOINT".into(), public.clone()));
    let s = server_with(&env);
    let api = Api::new(&s);
    let done = api
        .run(json!({"command": "echo public > out.txt", "artifacts": ["out.txt"]}), &targz(&[("a", b"a", 0o644)]))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let aid = done["artifactIds"][0].as_str().unwrap();
    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r =
        no_follow.get(format!("{}/v1/artifacts/{aid}/content", s.url)).bearer_auth(&s.api_key).send().await.unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&public), "{location}");
    // Signed for that host: the service accepts it there.
    let body = reqwest::get(&location).await.unwrap();
    assert!(body.status().is_success(), "{}", body.status());
    assert_eq!(body.text().await.unwrap(), "public\n");
}
