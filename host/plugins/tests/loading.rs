//! Load-time refusals: each bad plugin gets a clear error naming the plugin
//! and what to do, before it can run.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

use common::{host, host_with, load};
use crownest_core::config::{Grants, PluginConfig};
use crownest_core::ports::ArtifactStore;
use crownest_core::{ErrorKind, FaultKind, PluginKind};
use crownest_plugins::kinds::WasmArtifactStore;
use crownest_plugins::{CacheOutcome, PluginSource};
use crownest_test_support::{core_module, fixture};

fn load_error(source: PluginSource, kind: PluginKind, grants: Grants) -> String {
    let err = match host().load(kind, source, &PluginConfig::default(), grants) {
        Ok(_) => panic!("the plugin should have been refused"),
        Err(e) => e,
    };
    assert_eq!(err.kind, ErrorKind::Fault(FaultKind::Load), "{err}");
    err.message
}

#[test]
fn missing_file() {
    let msg =
        load_error(PluginSource::Path("/nonexistent/store.wasm".into()), PluginKind::ArtifactStore, Grants::default());
    assert!(msg.contains("/nonexistent/store.wasm not found") && msg.contains("`source`"), "{msg}");
}

#[test]
fn not_webassembly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.wasm");
    std::fs::write(&path, "just some text").unwrap();
    let msg = load_error(PluginSource::Path(path), PluginKind::ArtifactStore, Grants::default());
    assert!(msg.contains("plugin `notes` is not a WebAssembly file"), "{msg}");
}

#[test]
fn core_module_instead_of_component() {
    let dir = tempfile::tempdir().unwrap();
    let msg = load_error(PluginSource::Path(core_module(dir.path())), PluginKind::Meter, Grants::default());
    assert!(msg.contains("core WebAssembly module, not a component") && msg.contains("wasm32-wasip2"), "{msg}");
}

#[test]
fn unknown_builtin_lists_the_real_ones() {
    let msg = load_error(PluginSource::Builtin("s4-artifacts".into()), PluginKind::ArtifactStore, Grants::default());
    assert!(msg.contains("unknown builtin plugin `builtin:s4-artifacts`") && msg.contains("fs-artifacts"), "{msg}");
}

#[test]
fn builtin_of_another_kind() {
    let msg = load_error(PluginSource::Builtin("scoped-keys".into()), PluginKind::Meter, Grants::default());
    assert!(msg.contains("`builtin:scoped-keys` implements the auth-scoper world, not meter"), "{msg}");
}

#[test]
fn component_of_the_wrong_world() {
    let msg = load_error(PluginSource::Path(fixture("wrong-world")), PluginKind::ArtifactStore, Grants::default());
    assert!(msg.contains("does not implement the artifact-store world"), "{msg}");
    assert!(msg.contains("crownest:auth-scoper/scoper@0.1.0") && msg.contains("[plugins.auth_scoper]"), "{msg}");
}

#[test]
fn ungranted_http_import_is_refused_naming_the_import_and_the_grant() {
    let msg = load_error(PluginSource::Path(fixture("http-probe")), PluginKind::ArtifactStore, Grants::default());
    assert!(msg.contains("imports `wasi:http/outgoing-handler@0.2.12`"), "{msg}");
    assert!(msg.contains("grants.http") && msg.contains("[plugins.artifact_store]"), "{msg}");
}

/// A one-shot HTTP server on loopback answering 200 to every request.
fn http_ok_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    port
}

#[tokio::test]
async fn granted_http_reaches_only_the_allow_listed_authority() {
    let allowed = http_ok_server();
    let other = http_ok_server();
    let host = host();
    let grants = Grants { http: vec![format!("127.0.0.1:{allowed}")], ..Grants::default() };
    let probe = |port: u16| {
        let url = format!("http://127.0.0.1:{port}/health");
        let plugin =
            load(&host, PluginKind::ArtifactStore, &fixture("http-probe"), &[("url", &url)], grants.clone()).unwrap();
        WasmArtifactStore::new(plugin).unwrap()
    };
    probe(allowed).check().await.expect("the allow-listed authority is reachable");
    let err = probe(other).check().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    assert!(err.message.contains("denied"), "{err}");
}

#[test]
fn compile_cache_hits_on_reload_and_survives_a_corrupt_entry() {
    let cache = tempfile::tempdir().unwrap();
    let load = || {
        host_with(5_000, 128, Some(cache.path().to_path_buf()))
            .load(
                PluginKind::ArtifactStore,
                PluginSource::Path(fixture("cas-artifacts")),
                &PluginConfig::default(),
                Grants::default(),
            )
            .unwrap()
    };
    assert_eq!(load().info.cache, CacheOutcome::Miss);
    assert_eq!(load().info.cache, CacheOutcome::Hit);
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    assert_eq!(load().info.cache, CacheOutcome::Miss, "a corrupt entry is a miss, not an error");
    assert_eq!(load().info.cache, CacheOutcome::Hit, "and it is rewritten");
}
