//! Plugin host benchmarks (issue 2 targets):
//! - host → plugin call overhead of a trivial async export (mean ≤ 1 µs);
//! - instantiation from an `InstancePre` (median ≤ 20 µs);
//! - start-up: loading all default plugins with a warm compile cache (≤ 20 ms),
//!   next to a cold load for comparison.
//!
//! Run: `cargo bench -p crownest-plugins --bench plugin_host`. Prints one line
//! per measurement; BENCHMARKS.md records results and method.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crownest_core::config::Config;
use crownest_core::kv::SqliteKv;
use crownest_core::{PluginKind, config::PluginConfig};
use crownest_plugins::{PluginHost, PluginSource, bench_support};

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p) as usize]
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn host(config: &Config) -> PluginHost {
    PluginHost::for_config(config, Arc::new(SqliteKv::in_memory().unwrap())).unwrap()
}

#[tokio::main]
async fn main() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.data_dir = Some(scratch.path().to_path_buf());

    let h = host(&config);
    println!("pooling allocator: {}", if h.engine.pooling { "on" } else { "off" });
    let scoper = h
        .load(
            PluginKind::AuthScoper,
            PluginSource::Builtin("scoped-keys".into()),
            &PluginConfig::default(),
            Default::default(),
        )
        .unwrap();

    const CALLS: u32 = 200_000;
    let (raw, guarded) = bench_support::trivial_calls(&scoper, CALLS).await;
    println!("trivial export call, raw:      mean {} over {CALLS} calls", us(raw));
    println!("trivial export call, guarded:  mean {} over {CALLS} calls (deadline armed per call)", us(guarded));

    const INSTANCES: u32 = 20_000;
    let mut samples = bench_support::instantiations(&scoper, INSTANCES).await;
    println!(
        "instantiate from InstancePre:  median {}  p90 {}  p99 {} over {INSTANCES}",
        us(percentile(&mut samples, 0.5)),
        us(percentile(&mut samples, 0.9)),
        us(percentile(&mut samples, 0.99))
    );

    // Start-up: the first load compiles and fills the cache; later loads hit it.
    let cold_started = Instant::now();
    let cold = host(&config);
    cold.load_all(&config).unwrap();
    let cold_time = cold_started.elapsed();
    drop(cold);
    let mut warm = Vec::new();
    let mut load_only = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let h = host(&config);
        let engine_ready = started.elapsed();
        let set = h.load_all(&config).unwrap();
        let total = started.elapsed();
        assert!(set.infos().iter().all(|p| p.cache == crownest_plugins::CacheOutcome::Hit));
        warm.push(total);
        load_only.push(total - engine_ready);
    }
    println!("start-up, cold cache (engine + compile all defaults): {}", ms(cold_time));
    println!(
        "start-up, warm cache: engine + load all defaults median {}, loading alone median {} (20 runs)",
        ms(percentile(&mut warm, 0.5)),
        ms(percentile(&mut load_only, 0.5))
    );
}
