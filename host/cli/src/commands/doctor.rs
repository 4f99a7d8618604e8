//! `crownest doctor`: what works on this host and what does not.

use std::process::ExitCode;

use anyhow::Result;
use crownest_core::ports::{ArtifactStore, AuthScoper, Meter, PutRequest, RuntimeProvider};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::context::Context;
use crate::outln;

#[derive(clap::Args)]
pub struct Args {}

fn line(ok: bool, what: &str, detail: impl std::fmt::Display) -> bool {
    outln!("{}  {what:<22} {detail}", if ok { "ok  " } else { "FAIL" });
    ok
}

pub async fn run(ctx: &Context, _args: Args) -> Result<ExitCode> {
    let config = ctx.config()?;
    let (host, set) = ctx.load_plugins(&config)?;
    let mut healthy = true;
    line(true, "data directory", config.data_dir().display());
    let pooling = match &host.engine.pooling_note {
        Some(note) => note.clone(),
        None if host.engine.pooling => "pooling allocator".into(),
        None => "on-demand allocation (pooling disabled in config)".into(),
    };
    line(true, "wasm engine", pooling);
    line(true, "compile cache", config.cache_dir().display());
    if let Some(sbx) = host.sandbox() {
        let r = sbx.report();
        line(
            true,
            "sandbox",
            format!(
                "cgroups {}, bubblewrap {}, workspaces in {}",
                r.cgroup_mode,
                r.bwrap_version,
                sbx.config().root.display()
            ),
        );
        for e in &r.enforcement {
            if e.enforced {
                line(true, &format!("  {}", e.name), &e.detail);
            } else {
                outln!("warn  {:<22} NOT ENFORCED: {}", format!("  {}", e.name), e.detail);
            }
        }
        line(true, "  scheduling", sbx.config().scheduling_note());
        healthy &= r.bwrap_version != "none";
        installation_lines(sbx);
    }

    match &set.artifact_store {
        Some(store) => {
            let name = &store.plugin().info.name;
            healthy &= match store.check().await {
                Ok(()) => line(true, "artifact store", format!("{name}: ready")),
                Err(e) => line(false, "artifact store", format!("{name}: {e}")),
            };
            healthy &= match round_trip(store).await {
                Ok(locator) => line(true, "artifact round trip", format!("wrote, read back and deleted `{locator}`")),
                Err(e) => line(false, "artifact round trip", e),
            };
        }
        None => healthy &= line(false, "artifact store", "none configured"),
    }
    if let Some(s) = &set.auth_scoper {
        let name = &s.plugin().info.name;
        healthy &= match s.check().await {
            Ok(()) => line(true, "auth scoper", format!("{name}: ready")),
            Err(e) => line(false, "auth scoper", format!("{name}: {e}")),
        };
    }
    if let Some(m) = &set.meter {
        let name = &m.plugin().info.name;
        healthy &= match m.check().await {
            Ok(()) => line(true, "meter", format!("{name}: ready")),
            Err(e) => line(false, "meter", format!("{name}: {e}")),
        };
    }
    match &set.runtime_provider {
        Some(r) => {
            let name = &r.plugin().info.name;
            healthy &= match r.check().await {
                Ok(()) => line(true, "runtime provider", format!("{name}: ready")),
                Err(e) => line(false, "runtime provider", format!("{name}: {e}")),
            };
        }
        None => {
            line(false, "runtime provider", "none configured: workspace runs cannot execute");
            healthy = false;
        }
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Which installation this is, where its sandboxes live, the host's uid
/// leases, and the standby pool of the server serving it.
fn installation_lines(sbx: &crownest_sandbox::SandboxHost) {
    let cfg = sbx.config();
    line(true, "installation", &cfg.installation);
    line(true, "  cells", sbx.cells_root().display());
    for parent in sbx.cgroup_parents() {
        line(true, "  cgroups", parent.display());
    }
    if let Some(leases) = sbx.uid_leases() {
        let held = leases.list();
        let mine = held.iter().filter(|(_, cell)| cell.starts_with(sbx.cells_root())).count();
        line(
            true,
            "  host uids",
            format!(
                "{}..{} (sandbox.uid_base/uid_count); {} leased on this host, {mine} by this installation ({})",
                cfg.uid_base,
                u64::from(cfg.uid_base) + u64::from(cfg.uid_count) - 1,
                held.len(),
                leases.dir().display()
            ),
        );
    }
    match sbx.served_standby_status() {
        None => {
            line(true, "  standby pool", "no server is running for this installation");
        }
        Some(p) if p.shapes.is_empty() => {
            line(
                true,
                "  standby pool",
                format!("server pid {}: no shape learned yet ({} per shape)", p.pid, p.per_shape),
            );
        }
        Some(p) => {
            line(true, "  standby pool", format!("server pid {}, {} per shape", p.pid, p.per_shape));
            for shape in &p.shapes {
                let mut detail = format!(
                    "{}: {} ready, {} starting, {} failed since start",
                    shape.template.as_deref().unwrap_or(&shape.owner),
                    shape.ready,
                    shape.starting,
                    shape.failures_total
                );
                if let Some(f) = &shape.last_failure {
                    detail.push_str(&format!("; last at {}: {}", crownest_core::runs::ids::rfc3339(f.at_ms), f.reason));
                }
                if let Some(ms) = shape.retry_in_ms {
                    detail.push_str(&format!("; next standby in {ms} ms"));
                }
                if shape.failures_in_a_row == 0 {
                    line(true, "    shape", detail);
                } else {
                    outln!("warn  {:<22} {detail}", "    shape");
                }
            }
        }
    };
}

async fn round_trip(store: &crownest_plugins::kinds::WasmArtifactStore) -> Result<String, String> {
    let body: &'static [u8] = b"crownest doctor probe\n";
    let sha256 = hex::encode(Sha256::digest(body));
    let req = PutRequest {
        key: "doctor/probe.txt".into(),
        size: body.len() as u64,
        sha256,
        content_type: Some("text/plain".into()),
        metadata: vec![],
    };
    let info = store.put(req, Box::new(body)).await.map_err(|e| format!("put: {e}"))?;
    let mut back = Vec::new();
    store
        .get(&info.locator)
        .await
        .map_err(|e| format!("get: {e}"))?
        .read_to_end(&mut back)
        .await
        .map_err(|e| format!("get: {e}"))?;
    if back != body {
        return Err(format!("read back {} bytes that differ from the probe", back.len()));
    }
    store.delete(&info.locator).await.map_err(|e| format!("delete: {e}"))?;
    Ok(info.locator)
}
