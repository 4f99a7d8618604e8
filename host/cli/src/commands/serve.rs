//! `crownest serve`: the server. Loads and checks the plugins, opens the
//! store (creating org `default`, project `default`, an admin token and an API
//! key on first start), fails and reaps whatever a previous process left
//! active, and serves the API until stopped.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use crownest_core::ports::{ArtifactStore, AuthScoper, Meter, RuntimeProvider};
use crownest_core::runs::Store;
use crownest_core::runs::executor::{Backends, Executor, ExecutorSettings};
use crownest_core::runs::hub::EventHub;
use crownest_core::runs::metering::Metering;
use crownest_core::runs::output::OutputSettings;
use crownest_server::{AppState, Limits};

use crate::context::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (overrides `listen` in the config; default 127.0.0.1:7878).
    #[arg(long)]
    listen: Option<String>,
}

/// Credentials written on first start, for the CLI and for people.
fn write_credentials(dir: &std::path::Path, b: &crownest_core::runs::store::Bootstrap) -> Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("credentials.json");
    let body = serde_json::json!({
        "apiKey": b.api_key, "adminToken": b.admin_token, "orgId": b.org_id, "projectId": b.project_id,
    });
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(serde_json::to_string_pretty(&body)?.as_bytes())?;
    f.sync_all()?;
    Ok(path)
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    let config = ctx.config()?;
    let mut signals = super::shutdown::Signals::install()?;
    let (stop_streams, streams_stop) = tokio::sync::watch::channel(false);
    let listen = args.listen.or(config.listen.clone()).unwrap_or_else(|| "127.0.0.1:7878".into());
    let data_dir = ctx.prepare_data_dir(&config)?;
    let store = Store::open(&data_dir).context("cannot open the database")?;
    if let Some(b) = store.bootstrap().context("cannot initialize the database")? {
        let path = write_credentials(&data_dir, &b)?;
        eprintln!("crownest: first start: created org `default`, project `default` and an API key.");
        eprintln!("crownest: API key (shown once; also in {}, mode 0600):", path.display());
        println!("{}", b.api_key);
    }

    let (host, set) = ctx.load_plugins_serving(&config)?;
    eprintln!("crownest: data directory {}", data_dir.display());
    if let Some(sbx) = host.sandbox() {
        // This process now serves the installation: its previous process's
        // standbys are dead; nobody else's are touched.
        let reaper = sbx.clone();
        tokio::task::spawn_blocking(move || reaper.reap_standbys()).await?;
        eprintln!("crownest: installation {}: sandboxes in {}", sbx.config().installation, sbx.cells_root().display());
        let r = sbx.report();
        eprintln!("crownest: sandbox: cgroups {}, bubblewrap {}", r.cgroup_mode, r.bwrap_version);
        for e in &r.enforcement {
            let state = if e.enforced { "enforced" } else { "NOT ENFORCED" };
            eprintln!("crownest:   {:<11} {state}: {}", e.name, e.detail);
        }
        match sbx.config().warm_standby {
            0 => eprintln!("crownest:   standby     off (sandbox.warm_standby = 0): every sandbox starts cold"),
            n => eprintln!(
                "crownest:   standby     {n} started sandbox(es) kept per template shape (sandbox.warm_standby)"
            ),
        }
        eprintln!("crownest:   scheduling  {}", sbx.config().scheduling_note());
    }
    for p in set.infos() {
        eprintln!("crownest: {:<16} {} ({}, sha256 {})", p.kind.name(), p.name, p.source, &p.sha256[..12]);
    }
    let runtime: Arc<dyn RuntimeProvider> =
        Arc::new(set.runtime_provider.context("no runtime provider is configured")?);
    let artifacts = set.artifact_store.context("no artifact store is configured")?;
    let store_name = artifacts.plugin().info.name.clone();
    let artifacts: Arc<dyn ArtifactStore> = Arc::new(artifacts);
    runtime.check().await.map_err(|e| anyhow::anyhow!("runtime provider check failed: {}", e.message))?;
    artifacts.check().await.map_err(|e| anyhow::anyhow!("artifact store check failed: {}", e.message))?;
    let auth: Arc<dyn AuthScoper> = Arc::new(set.auth_scoper.context("no auth scoper is configured")?);
    auth.check().await.map_err(|e| anyhow::anyhow!("auth scoper check failed: {}", e.message))?;
    let meter: Option<Arc<dyn Meter>> = match set.meter {
        Some(m) => {
            m.check().await.map_err(|e| anyhow::anyhow!("meter check failed: {}", e.message))?;
            Some(Arc::new(m))
        }
        None => None,
    };
    let templates =
        runtime.list_templates().await.map_err(|e| anyhow::anyhow!("cannot list templates: {}", e.message))?;

    let r = &config.runs;
    let settings = ExecutorSettings {
        output: OutputSettings {
            cap_bytes: r.output_cap_bytes,
            chunk_bytes: 4 << 20,
            flush_interval: Duration::from_millis(r.output_flush_ms.max(1)),
        },
        kill_grace: Duration::from_millis(config.sandbox.kill_grace_ms),
        max_artifact_bytes: r.max_artifact_bytes,
        max_concurrent_runs: r.max_concurrent_runs,
        artifact_store_name: store_name,
    };
    let units = templates.iter().map(|t| (t.name.clone(), t.compute_units)).collect();
    let metering = Metering::new(meter, Some(host.kv().clone()), units);
    metering.start();
    let hub = Arc::new(EventHub::default());
    let executor = Executor::new(
        store.clone(),
        hub,
        Backends { runtime, artifacts: artifacts.clone(), metering: metering.clone() },
        settings,
    );
    executor.watch_meter_stops();
    let recovered = executor.recover().await.context("crash recovery failed")?;
    if recovered > 0 {
        eprintln!(
            "crownest: {recovered} run(s) were active when the server last stopped: marked failed (host_restarted)"
        );
    }
    let shutdown_executor = executor.clone();
    let transfers_dir = data_dir.join("transfers");
    std::fs::create_dir_all(&transfers_dir)?;
    let state = AppState {
        store: store.clone(),
        executor,
        artifacts,
        auth,
        metering,
        templates: Arc::new(templates),
        limits: Limits {
            direct_upload_bytes: r.direct_upload_max_bytes,
            staged_upload_bytes: r.staged_upload_max_bytes,
            part_bytes: r.part_size_bytes,
            max_timeout_ms: r.max_timeout_ms,
            heartbeat: Duration::from_secs(r.heartbeat_secs.max(1)),
        },
        transfers_dir,
        shutdown: streams_stop,
        trusted_proxies: Arc::new(
            crownest_core::ip_ranges::IpRanges::parse(&config.trusted_proxies).map_err(|e| anyhow::anyhow!(e))?,
        ),
    };
    // Idempotency records are kept at least 24 hours (purged after 48);
    // staged transfers left open are swept after `abandoned_transfer_secs`.
    let abandoned = Duration::from_secs(r.abandoned_transfer_secs.max(1));
    let archive_wait = Duration::from_secs(r.archive_wait_secs.max(1));
    let every = (abandoned.min(archive_wait) / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let sweeper = state.clone();
    tokio::spawn(async move {
        let mut last_purge: Option<std::time::Instant> = None;
        loop {
            if last_purge.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                let _ = store.purge_older_than(48 * 3600 * 1000).await;
                last_purge = Some(std::time::Instant::now());
            }
            // Runs that never got an archive end first, so their
            // transfers are swept in the same round.
            sweeper.executor.expire_awaiting(archive_wait).await;
            crownest_server::sweep_abandoned_transfers(&sweeper, abandoned).await;
            tokio::time::sleep(every).await;
        }
    });

    let metrics_state = state.clone();
    let listener =
        tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("crownest: serving the API on http://{}", listener.local_addr()?);
    // Events are many small writes: without TCP_NODELAY, Nagle's algorithm
    // and the client's delayed ACK stall each one by up to 40 ms.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Some(addr) = &config.metrics.listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
        eprintln!("crownest: serving metrics on http://{}/metrics", metrics.local_addr()?);
        let app = crownest_server::metrics_router(metrics_state);
        tokio::spawn(async move { axum::serve(metrics, app).await });
    }
    let deadline = Duration::from_secs(config.shutdown_timeout_secs);
    super::shutdown::serve(listener, crownest_server::router(state), &mut signals, stop_streams, deadline).await?;
    let grace = Duration::from_millis(config.sandbox.kill_grace_ms) + Duration::from_secs(2);
    let ended = tokio::select! {
        n = shutdown_executor.shutdown(grace) => n,
        _ = signals.next() => super::shutdown::exit_now(),
    };
    if ended > 0 {
        eprintln!("crownest: {ended} active run(s) failed (host_restarted): the server stopped while they ran");
    }
    if let Some(sbx) = host.sandbox() {
        let sbx = sbx.clone();
        let _ = tokio::task::spawn_blocking(move || sbx.close_standbys()).await;
    }
    Ok(ExitCode::SUCCESS)
}
