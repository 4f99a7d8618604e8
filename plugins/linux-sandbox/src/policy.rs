//! The policy: how a template and a request become cell limits and a spawn
//! spec. Mechanisms (namespaces, seccomp, cgroups) are the host's.

use crate::crownest::host::config;
use crate::crownest::host::sandbox::{self as mech, Bind, Mount, Network, SpawnSpec};
use crate::crownest::host::types::Error;
use crate::exports::crownest::runtime_provider::provider::Limits;
use crate::templates::Template;

const MIB: u64 = 1 << 20;
pub const WORKSPACE: &str = "/workspace";

/// Every key of the provider's config table.
pub const CONFIG_KEYS: &[&str] = &[
    "templates",
    "max_memory_mib",
    "max_pids",
    "max_cpu_millicores",
    "max_disk_mib",
    "max_open_files",
    "max_timeout_ms",
    "archive_max_entries",
    "archive_max_depth",
    "archive_max_compression_ratio",
];

/// Upper bounds a request may raise limits to (config `max_*`).
struct Caps {
    memory_mib: u64,
    pids: u32,
    cpu_millicores: u32,
    disk_mib: u64,
    open_files: u32,
    timeout_ms: u64,
}

fn cap(key: &str, default: u64) -> Result<u64, Error> {
    match config::get(key) {
        None => Ok(default),
        Some(v) => {
            v.parse().map_err(|_| Error::Invalid(format!("config `{key}` must be a positive integer, got `{v}`")))
        }
    }
}

fn caps() -> Result<Caps, Error> {
    Ok(Caps {
        memory_mib: cap("max_memory_mib", 8192)?,
        pids: cap("max_pids", 4096)? as u32,
        cpu_millicores: cap("max_cpu_millicores", 4000)? as u32,
        disk_mib: cap("max_disk_mib", 16384)?,
        open_files: cap("max_open_files", 65536)? as u32,
        timeout_ms: cap("max_timeout_ms", 3_600_000)?,
    })
}

/// The template's defaults overridden by the request, within the caps.
pub fn effective_limits(t: &Template, req: &Limits) -> Result<Limits, Error> {
    let c = caps()?;
    let over = |what: &str, asked: u64, max: u64, unit: &str| {
        Error::QuotaExceeded(format!("{what} of {asked}{unit} is above this provider's limit of {max}{unit}"))
    };
    let memory = req.memory_bytes.unwrap_or(t.limits.memory_mib * MIB);
    if memory > c.memory_mib * MIB {
        return Err(over("memory", memory / MIB, c.memory_mib, " MiB"));
    }
    let pids = req.pids.unwrap_or(t.limits.pids);
    if pids > c.pids {
        return Err(over("pids", u64::from(pids), u64::from(c.pids), ""));
    }
    let cpu = req.cpu_millicores.unwrap_or(t.limits.cpu_millicores);
    if cpu > c.cpu_millicores {
        return Err(over("cpu", u64::from(cpu), u64::from(c.cpu_millicores), " millicores"));
    }
    let disk = req.disk_bytes.unwrap_or(t.limits.disk_mib * MIB);
    if disk > c.disk_mib * MIB {
        return Err(over("disk", disk / MIB, c.disk_mib, " MiB"));
    }
    let files = req.open_files.unwrap_or(t.limits.open_files);
    if files > c.open_files {
        return Err(over("open files", u64::from(files), u64::from(c.open_files), ""));
    }
    let timeout = req.timeout_ms.unwrap_or(t.limits.timeout_ms);
    if timeout > c.timeout_ms {
        return Err(over("timeout", timeout, c.timeout_ms, " ms"));
    }
    if memory < 16 * MIB || pids < 8 || cpu < 10 || disk < MIB || files < 16 || timeout == 0 {
        return Err(Error::Invalid(
            "limits too small to run anything (minimum 16 MiB memory, 8 pids, 10 millicores, 1 MiB disk, 16 files, 1 ms)".into(),
        ));
    }
    Ok(Limits {
        memory_bytes: Some(memory),
        pids: Some(pids),
        cpu_millicores: Some(cpu),
        disk_bytes: Some(disk),
        open_files: Some(files),
        timeout_ms: Some(timeout),
    })
}

pub fn cell_limits(l: &Limits) -> mech::Limits {
    mech::Limits {
        memory_bytes: l.memory_bytes,
        pids: l.pids,
        cpu_millicores: l.cpu_millicores,
        disk_bytes: l.disk_bytes,
        open_files: l.open_files,
    }
}

/// Extraction budgets: content up to the workspace size.
pub fn budgets(l: &Limits) -> Result<mech::ExtractBudgets, Error> {
    Ok(mech::ExtractBudgets {
        max_total_bytes: l.disk_bytes.unwrap_or(1 << 30),
        max_entries: cap("archive_max_entries", 200_000)?,
        max_depth: cap("archive_max_depth", 64)? as u32,
        max_path_bytes: 4096,
        max_compression_ratio: cap("archive_max_compression_ratio", 250)? as u32,
    })
}

/// A path inside the sandbox as a path relative to the workspace root.
pub fn workspace_relative(path: &str) -> Result<String, Error> {
    let rel = if path == WORKSPACE {
        ""
    } else if let Some(rest) = path.strip_prefix("/workspace/") {
        rest
    } else if path.starts_with('/') {
        return Err(Error::Invalid(format!(
            "`{path}` is outside {WORKSPACE}; only workspace files can be read or written"
        )));
    } else {
        path
    };
    Ok(rel.trim_end_matches('/').to_string())
}

const PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n";

/// The spawn spec for `command` in a sandbox of template `t`.
pub fn spawn_spec(t: &Template, limits: &Limits, env: &[(String, String)], command: &str, cwd: &str) -> SpawnSpec {
    let mut mounts = Vec::new();
    for b in &t.rootfs.binds {
        mounts.push(Mount::RoBind(Bind { source: b.clone(), target: b.clone(), optional: false }));
    }
    for b in &t.rootfs.optional_binds {
        mounts.push(Mount::RoBind(Bind { source: b.clone(), target: b.clone(), optional: true }));
    }
    if t.egress() {
        // Certificates only matter to a sandbox that can reach the network.
        for b in ["/etc/ssl/certs", "/etc/ca-certificates", "/etc/pki"] {
            mounts.push(Mount::RoBind(Bind { source: b.into(), target: b.into(), optional: true }));
        }
    }
    for [target, link] in &t.rootfs.symlinks {
        mounts.push(Mount::Symlink((target.clone(), link.clone())));
    }
    mounts.push(Mount::Proc("/proc".into()));
    mounts.push(Mount::Dev("/dev".into()));
    mounts.push(Mount::Tmpfs(("/tmp".into(), t.limits.tmp_mib * MIB)));
    mounts.push(Mount::Tmpfs(("/home/sandbox".into(), t.limits.tmp_mib * MIB)));
    mounts.push(Mount::Workspace(WORKSPACE.into()));
    mounts.push(Mount::File(("/etc/passwd".into(), PASSWD.into())));
    mounts.push(Mount::File(("/etc/group".into(), GROUP.into())));
    mounts.push(Mount::File(("/etc/hosts".into(), HOSTS.into())));
    let mut vars: Vec<(String, String)> = t.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (k, v) in env {
        vars.retain(|(existing, _)| existing != k);
        vars.push((k.clone(), v.clone()));
    }
    SpawnSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), command.into()],
        env: vars,
        cwd: if cwd.is_empty() { WORKSPACE.into() } else { cwd.into() },
        mounts,
        network: if t.egress() { Network::Host } else { Network::None },
        hostname: "sandbox".into(),
        limits: mech::Limits {
            memory_bytes: None,
            pids: None,
            cpu_millicores: None,
            disk_bytes: None,
            open_files: limits.open_files,
        },
    }
}
