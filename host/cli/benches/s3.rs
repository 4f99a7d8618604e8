//! S3 artifact upload throughput (issue 5 target): a 256 MiB artifact put
//! through the s3-artifacts plugin reaches ≥ 70% of the throughput of
//! `curl --aws-sigv4 -T` of the same file to the same Garage, in one run.
//!
//! Run: `cargo bench -p crownest-cli --bench s3` (needs `garage`, from
//! `scripts/setup --test`).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crownest_core::PluginKind;
use crownest_core::config::{Config, Grants, PluginConfig};
use crownest_core::kv::SqliteKv;
use crownest_core::ports::{ArtifactStore, PutRequest};
use crownest_plugins::kinds::WasmArtifactStore;
use crownest_plugins::{PluginHost, PluginSource};
use crownest_test_support::garage::Garage;
use sha2::{Digest, Sha256};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let size: usize = 256 << 20;
    let path = dir.path().join("artifact.bin");
    let mut data = vec![0u8; size];
    let mut x: u64 = 7;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&path, &data).unwrap();
    let sha = hex::encode(Sha256::digest(&data));
    drop(data);

    let kv = Arc::new(SqliteKv::open(&dir.path().join("kv.db")).unwrap());
    let host = PluginHost::for_config(&Config::default(), kv).unwrap();
    let mut table = PluginConfig::default();
    table.config = toml::from_str(&g.plugin_config("bench/", 64 << 20)).unwrap();
    let grants = Grants { http: vec![g.authority()], ..Grants::default() };
    let store = WasmArtifactStore::new(
        host.load(PluginKind::ArtifactStore, PluginSource::Builtin("s3-artifacts".into()), &table, grants).unwrap(),
    )
    .unwrap();

    let (mut curl, mut ours) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let t = Instant::now();
        let s = Command::new("curl")
            .args([
                "-s",
                "-f",
                "-o",
                "/dev/null",
                "-H",
                "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                "--aws-sigv4",
                "aws:amz:garage:s3",
                "--user",
            ])
            .arg(format!("{}:{}", g.key_id, g.secret))
            .arg("-T")
            .arg(&path)
            .arg(format!("{}/{}/bench/curl-{i}", g.endpoint, g.bucket))
            .status()
            .unwrap();
        assert!(s.success());
        curl.push(t.elapsed());

        let t = Instant::now();
        let file = tokio::fs::File::open(&path).await.unwrap();
        let req = PutRequest {
            key: format!("artifacts/bench/{i}"),
            size: size as u64,
            sha256: sha.clone(),
            content_type: None,
            metadata: vec![],
        };
        store.put(req, Box::new(file)).await.unwrap();
        ours.push(t.elapsed());
    }
    let (c, o) = (median(curl), median(ours));
    let mib = (size >> 20) as f64;
    println!(
        "curl --aws-sigv4 -T 256 MiB:   median {:.0} ms ({:.0} MiB/s)",
        c.as_secs_f64() * 1e3,
        mib / c.as_secs_f64()
    );
    println!(
        "s3-artifacts put 256 MiB:      median {:.0} ms ({:.0} MiB/s), 64 MiB parts",
        o.as_secs_f64() * 1e3,
        mib / o.as_secs_f64()
    );
    println!("throughput ratio: {:.0}% of curl (target >= 70%)", 100.0 * c.as_secs_f64() / o.as_secs_f64());
}
