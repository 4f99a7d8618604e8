//! `crownest serve`: the server. Binds its address first (a bad or busy
//! address fails at once), loads and checks the plugins, opens the store
//! (creating org `default`, project `default`, an admin token and an API
//! key on first start, written to `credentials.json` only), fails and reaps
//! whatever a previous process left active, writes `server.json` (its pid
//! and URL, for the CLI) and serves the API until stopped.

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use crownest_core::config::Config;
use crownest_core::ports::{ArtifactStore, AuthScoper, Meter, RuntimeProvider};
use crownest_core::runs::Store;
use crownest_core::runs::executor::{Backends, Executor, ExecutorSettings};
use crownest_core::runs::hub::EventHub;
use crownest_core::runs::metering::Metering;
use crownest_core::runs::output::OutputSettings;
use crownest_plugins::{PluginHost, PluginSet};
use crownest_server::{AppState, Limits};
use tokio::net::TcpListener;

use crate::commands::prefix;
use crate::context::Context;
use crate::local_server::{self, Credentials};
use crate::{errln, logging};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (overrides `listen` in the config; default 127.0.0.1:7878).
    #[arg(long)]
    listen: Option<String>,
}

/// A start-up note for the operator: a `crownest: …` line on stderr, or an
/// info event when logs are JSON (so a log shipper reads one format).
fn note(message: impl Display) {
    if logging::is_json() {
        tracing::info!(target: "crownest::serve", "{message}");
    } else {
        errln!("crownest: {message}");
    }
}

/// Bind `listen` (`host:port`), or say what to write instead.
async fn bind(listen: &str) -> Result<TcpListener> {
    let hint = "set `listen` in the config (or --listen) to host:port, e.g. 127.0.0.1:7878 or 0.0.0.0:7878";
    let addrs: Vec<std::net::SocketAddr> = match tokio::net::lookup_host(listen).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => anyhow::bail!("cannot listen on `{listen}`: not an address ({e}); {hint}"),
    };
    if addrs.is_empty() {
        anyhow::bail!("cannot listen on `{listen}`: it resolves to no address; {hint}");
    }
    TcpListener::bind(&addrs[..]).await.with_context(|| format!("cannot listen on `{listen}`"))
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    let config = ctx.config()?;
    let listen = args.listen.or(config.listen.clone()).unwrap_or_else(|| "127.0.0.1:7878".into());
    // The address first: nothing is loaded or started yet when it fails.
    // (A failure after the sandbox pool started used to panic as the
    // runtime shut down under its standby starts.)
    let listener = bind(&listen).await?;
    let data_dir = ctx.prepare_data_dir(&config)?;
    let store = Store::open(&data_dir).context("cannot open the database")?;
    if let Some(b) = store.bootstrap().context("cannot initialize the database")? {
        // Never to stdout or the log: under systemd both land in the journal.
        let creds = Credentials {
            api_key: b.api_key.clone(),
            admin_token: b.admin_token.clone(),
            org_id: b.org_id.clone(),
            project_id: b.project_id.clone(),
        };
        let path = local_server::write_credentials(&data_dir, &creds)?;
        note(format_args!(
            "first start: created org `default`, project `default`, an admin token and an API key, written to {} (mode 0600)",
            path.display()
        ));
    }
    let (host, set) = ctx.load_plugins_serving(&config)?;
    let served = serve(&config, &data_dir, store, &host, set, listener).await;
    if served.is_err() {
        // A failed start: no standby start may still be running when the
        // runtime shuts down (it used to panic under one).
        close_standbys(&host).await;
    }
    served
}

/// Destroy the standby sandboxes, waiting for those being started.
async fn close_standbys(host: &PluginHost) {
    if let Some(sbx) = host.sandbox() {
        let sbx = sbx.clone();
        let _ = tokio::task::spawn_blocking(move || sbx.close_standbys()).await;
    }
}

async fn serve(
    config: &Config,
    data_dir: &Path,
    store: Store,
    host: &PluginHost,
    set: PluginSet,
    listener: TcpListener,
) -> Result<ExitCode> {
    let mut signals = super::shutdown::Signals::install()?;
    let (stop_streams, streams_stop) = tokio::sync::watch::channel(false);
    note(format_args!("data directory {}", data_dir.display()));
    if let Some(sbx) = host.sandbox() {
        // This process now serves the installation: its previous process's
        // standbys are dead; nobody else's are touched.
        let reaper = sbx.clone();
        tokio::task::spawn_blocking(move || reaper.reap_standbys()).await?;
        note(format_args!("installation {}: sandboxes in {}", sbx.config().installation, sbx.cells_root().display()));
        let r = sbx.report();
        note(format_args!("sandbox: cgroups {}, bubblewrap {}", r.cgroup_mode, r.bwrap_version));
        for e in &r.enforcement {
            let state = if e.enforced { "enforced" } else { "NOT ENFORCED" };
            note(format_args!("  {:<11} {state}: {}", e.name, e.detail));
        }
        match sbx.config().warm_standby {
            0 => note("  standby     off (sandbox.warm_standby = 0): every sandbox starts cold"),
            n => note(format_args!(
                "  standby     {n} started sandbox(es) kept per template shape (sandbox.warm_standby)"
            )),
        }
        note(format_args!("  scheduling  {}", sbx.config().scheduling_note()));
    }
    for p in set.infos() {
        note(format_args!("{:<16} {} ({}, sha256 {})", p.kind.name(), p.name, p.source, prefix(&p.sha256, 12)));
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
        note(format_args!(
            "{recovered} run(s) were active when the server last stopped: marked failed (host_restarted)"
        ));
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
    let addr = listener.local_addr().context("cannot read the address the server listens on")?;
    let url = local_server::url_for(addr);
    // For the CLI on this machine (`--data-dir` without a URL); removed
    // when this function returns.
    let _server_file = local_server::write_server_file(data_dir, &url)?;
    note(format_args!(
        "serving the API on http://{addr} (for the CLI: {url}, in {})",
        local_server::server_file_path(data_dir).display()
    ));
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
        note(format_args!("serving metrics on http://{}/metrics", metrics.local_addr()?));
        let app = crownest_server::metrics_router(metrics_state);
        tokio::spawn(async move { axum::serve(metrics, app).await });
    }
    let deadline = Duration::from_secs(config.shutdown_timeout_secs);
    super::shutdown::serve(listener, crownest_server::router(state), &mut signals, stop_streams, deadline).await?;
    // Runs in flight end as `host_restarted` now, before anything they
    // use is torn down (their sandboxes would die with us and be reported
    // as their commands' results).
    let grace = Duration::from_millis(config.sandbox.kill_grace_ms) + Duration::from_secs(2);
    let ended = tokio::select! {
        n = shutdown_executor.shutdown(grace) => n,
        _ = signals.next() => super::shutdown::exit_now(),
    };
    if ended > 0 {
        note(format_args!("{ended} active run(s) failed (host_restarted): the server stopped while they ran"));
    }
    close_standbys(host).await;
    Ok(ExitCode::SUCCESS)
}
