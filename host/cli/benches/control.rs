//! Control-plane costs (issue 6 targets):
//! - authorization of one request (API key lookup + the auth scoper
//!   plugin's decision) adds ≤ 100 µs median;
//! - metering ticks for 200 concurrent sandboxes use < 5% of one core.
//!
//! Run: `cargo bench -p crownest-cli --bench control` (`BENCH_ONLY=metering`
//! skips most of the authorization rounds).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crownest_core::PluginKind;
use crownest_core::config::{Config, Grants, PluginConfig};
use crownest_core::kv::{KeyValueStore, SqliteKv};
use crownest_core::ports::{AuthRequest, AuthScoper, Decision, Principal, PrincipalKind};
use crownest_core::runs::Store;
use crownest_core::runs::metering::Metering;
use crownest_plugins::kinds::{WasmAuthScoper, WasmMeter};
use crownest_plugins::{PluginHost, PluginSource};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let boot = store.bootstrap().unwrap().unwrap();
    let kv: Arc<dyn KeyValueStore> = Arc::new(SqliteKv::open(&dir.path().join("crownest.db")).unwrap());
    let host = PluginHost::for_config(&Config::default(), kv.clone()).unwrap();

    // --- Authorization: what every request pays before its handler runs.
    let scoper = WasmAuthScoper::new(
        host.load(
            PluginKind::AuthScoper,
            PluginSource::Builtin("scoped-keys".into()),
            &PluginConfig::default(),
            Grants::default(),
        )
        .unwrap(),
    )
    .unwrap();
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let (mut lookup, mut decide, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let rounds = if only == "metering" { 1001 } else { 20_000 };
    for i in 0..rounds {
        let t0 = Instant::now();
        let rec = store.verify_api_key(boot.api_key.clone()).await.unwrap().unwrap();
        let t1 = Instant::now();
        let req = AuthRequest {
            principal: Principal {
                kind: PrincipalKind::ApiKey,
                id: format!("key_{}", rec.id),
                org_id: rec.org_id.clone(),
                project_id: rec.project_id.clone(),
                scopes: rec.scopes.clone(),
            },
            action: "workspace_runs:read".into(),
            project_id: rec.project_id.clone(),
        };
        let d = scoper.authorize(&req).await.unwrap();
        let t2 = Instant::now();
        assert_eq!(d, Decision::Allow);
        if i >= 1000 {
            lookup.push(t1 - t0);
            decide.push(t2 - t1);
            total.push(t2 - t0);
        }
    }
    for v in [&mut lookup, &mut decide, &mut total] {
        v.sort();
    }
    println!(
        "authorization, {} requests: key lookup p50 {:.1} µs, plugin decision p50 {:.1} µs, total p50 {:.1} µs / p99 {:.1} µs (target p50 <= 100 µs)",
        total.len(),
        percentile(&lookup, 0.5).as_secs_f64() * 1e6,
        percentile(&decide, 0.5).as_secs_f64() * 1e6,
        percentile(&total, 0.5).as_secs_f64() * 1e6,
        percentile(&total, 0.99).as_secs_f64() * 1e6,
    );

    // --- Metering: 200 sandboxes ticked every second for 20 seconds.
    let mut table = PluginConfig::default();
    table.config = toml::from_str("max_concurrent_sandboxes = 1000").unwrap();
    let meter = WasmMeter::new(
        host.load(PluginKind::Meter, PluginSource::Builtin("compute-meter".into()), &table, Grants::default()).unwrap(),
    )
    .unwrap();
    let units: HashMap<String, u32> = [("python-node".to_string(), 1)].into();
    let metering = Metering::new(Some(Arc::new(meter)), Some(kv.clone()), units);
    for i in 0..200 {
        metering.begin(&format!("sbx_bench{i:04}"), &boot.org_id, &boot.project_id, "python-node").await.unwrap();
    }
    metering.start();
    let secs = 20;
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
    let mut cus = 0;
    for i in 0..200 {
        let usage = metering.end(&format!("sbx_bench{i:04}"), true).await.unwrap();
        cus += usage["computeUnitSeconds"].as_u64().unwrap();
    }
    println!(
        "metering 200 sandboxes for {:.1} s: {:.1} ms CPU = {:.2}% of one core (target < 5%); {cus} compute_unit_seconds recorded",
        wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e3,
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
    );
}
