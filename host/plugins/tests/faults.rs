//! A misbehaving plugin fails one operation with a clear error and never the
//! host: traps, endless loops, unbounded memory growth and malformed return
//! values, each followed by proof that the host still serves.

mod common;

use std::time::{Duration, Instant};

use common::{host, host_with, misbehave};
use crownest_core::ports::{ArtifactStore, PutRequest};
use crownest_core::{ErrorKind, FaultKind};

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

async fn assert_still_serving(host: &crownest_plugins::PluginHost) {
    let healthy = misbehave(host, "ok");
    healthy.check().await.expect("a well-behaved plugin still works after the fault");
    let body: &'static [u8] = b"still here";
    let req = PutRequest {
        key: "k".into(),
        size: body.len() as u64,
        sha256: sha256_hex(body),
        content_type: None,
        metadata: vec![],
    };
    healthy.put(req, Box::new(body)).await.expect("put still works after the fault");
}

#[tokio::test]
async fn trap_fails_the_call_names_the_plugin_and_the_host_keeps_serving() {
    let host = host();
    let store = misbehave(&host, "trap");
    let err = store.check().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fault(FaultKind::Trap), "{err}");
    assert!(err.message.contains("plugin `misbehave` (artifact-store) trapped in `check`"), "{err}");
    // Instances are per call: the same plugin traps again rather than being
    // stuck, and other calls are unaffected.
    assert_eq!(store.check().await.unwrap_err().kind, ErrorKind::Fault(FaultKind::Trap));
    assert_still_serving(&host).await;
}

#[tokio::test]
async fn endless_loop_is_stopped_at_the_deadline() {
    let host = host_with(300, 128, None);
    let store = misbehave(&host, "loop");
    let started = Instant::now();
    let err = store.check().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fault(FaultKind::Deadline), "{err}");
    assert!(err.message.contains("300 ms deadline") && err.message.contains("call_timeout_ms"), "{err}");
    // Liveness, not speed: the call must come back at all.
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(err.kind.is_retryable());
    assert_still_serving(&host).await;
}

#[tokio::test]
async fn unbounded_memory_growth_hits_the_cap() {
    let host = host_with(10_000, 32, None);
    let store = misbehave(&host, "grow");
    let err = store.check().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fault(FaultKind::MemoryCap), "{err}");
    assert!(err.message.contains("memory cap of 32 MiB") && err.message.contains("memory_limit_mib"), "{err}");
    assert_still_serving(&host).await;
}

#[tokio::test]
async fn malformed_return_values_are_refused() {
    let host = host();
    let store = misbehave(&host, "malformed");
    let body: &'static [u8] = b"payload";
    let req = PutRequest {
        key: "k".into(),
        size: body.len() as u64,
        sha256: sha256_hex(body),
        content_type: None,
        metadata: vec![],
    };
    let err = store.put(req, Box::new(body)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fault(FaultKind::Malformed), "{err}");
    assert!(
        err.message.contains("returned a malformed value from `put`") && err.message.contains("not-a-sha256"),
        "{err}"
    );
    let err = store.stat("k").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fault(FaultKind::Malformed), "{err}");
    assert_still_serving(&host).await;
}

#[tokio::test]
async fn many_faulting_calls_do_not_exhaust_the_instance_pool() {
    // 64 instance slots (see common::host); three times as many traps.
    let host = host();
    let store = misbehave(&host, "trap");
    for _ in 0..192 {
        assert_eq!(store.check().await.unwrap_err().kind, ErrorKind::Fault(FaultKind::Trap));
    }
    assert_still_serving(&host).await;
}
