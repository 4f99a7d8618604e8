//! `linux-sandbox`: the default runtime provider.
//!
//! Policy only. Templates (see `templates/*.toml`) decide the read-only root
//! filesystem, environment, default limits and network of a sandbox; this
//! plugin merges them with the request and asks the host's
//! `crownest:host/sandbox` mechanisms for a cell and for processes in it. A
//! started command goes back to the host as a host-owned process and
//! streams, so no plugin call stays open while a command runs.
//!
//! Config (all optional): `templates.<name>` (extra or replacement
//! templates, same fields as the files), `max_memory_mib`, `max_pids`,
//! `max_cpu_millicores`, `max_disk_mib`, `max_open_files`, `max_timeout_ms`
//! (caps on per-request overrides), `archive_max_entries`,
//! `archive_max_depth`, `archive_max_compression_ratio`.

mod policy;
mod templates;

wit_bindgen::generate!({
    path: "../../wit/runtime-provider",
    world: "crownest:runtime-provider/runtime-provider",
    generate_all,
});

use crownest::host::sandbox::{self as mech, Cell};
use crownest::host::types::{Error, Progress};
use exports::crownest::runtime_provider::provider::{
    ExecSpec, Execution, ExportFile, ExtractReport, Guest, GuestSandbox, Limits, Sandbox, SandboxInfo, SandboxSpec,
    TemplateInfo,
};
use templates::Template;
use wasi::io::streams::InputStream;

const LABEL_TEMPLATE: &str = "crownest.template";
const LABEL_LIMITS: &str = "crownest.limits";
const LABEL_ENV: &str = "crownest.env";

struct LinuxSandbox;

export!(LinuxSandbox);

/// One sandbox: its cell and the policy it was created under.
struct SandboxState {
    cell: Cell,
    template: Template,
    limits: Limits,
    env: Vec<(String, String)>,
}

fn template(name: &str) -> Result<Template, Error> {
    let all = templates::all()?;
    let names: Vec<&str> = all.keys().map(String::as_str).collect();
    all.get(name)
        .cloned()
        .ok_or_else(|| Error::Invalid(format!("unknown template `{name}`; available: {}", names.join(", "))))
}

/// Why a template cannot be used on this host, if it cannot.
fn unusable(t: &Template) -> Option<String> {
    let present = mech::probe_paths(&t.requires);
    let missing: Vec<&str> = t.requires.iter().zip(present).filter(|(_, ok)| !ok).map(|(p, _)| p.as_str()).collect();
    (!missing.is_empty()).then(|| format!("missing on this host: {}", missing.join(", ")))
}

fn encode_limits(l: &Limits) -> String {
    let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    [
        n(l.memory_bytes),
        n(l.pids.map(u64::from)),
        n(l.cpu_millicores.map(u64::from)),
        n(l.disk_bytes),
        n(l.open_files.map(u64::from)),
        n(l.timeout_ms),
    ]
    .join(",")
}

fn decode_limits(s: &str) -> Limits {
    let v: Vec<Option<u64>> = s.split(',').map(|x| x.parse().ok()).collect();
    let get = |i: usize| v.get(i).copied().flatten();
    Limits {
        memory_bytes: get(0),
        pids: get(1).map(|x| x as u32),
        cpu_millicores: get(2).map(|x| x as u32),
        disk_bytes: get(3),
        open_files: get(4).map(|x| x as u32),
        timeout_ms: get(5),
    }
}

impl GuestSandbox for SandboxState {
    fn info(&self) -> SandboxInfo {
        SandboxInfo {
            id: self.cell.id(),
            template: self.template.name.clone(),
            template_digest: self.template.digest.clone(),
            compute_units: self.template.compute_units,
            limits: self.limits,
        }
    }

    fn extract_archive(&self, archive: InputStream, path: String, progress: &Progress) -> Result<ExtractReport, Error> {
        let dest = policy::workspace_relative(&path)?;
        let r = self.cell.extract_tar_gz(archive, &dest, policy::budgets(&self.limits)?, progress)?;
        Ok(ExtractReport { archive_bytes: r.archive_bytes, content_bytes: r.content_bytes, entries: r.entries })
    }

    fn exec(&self, spec: ExecSpec) -> Result<Execution, Error> {
        if spec.command.trim().is_empty() {
            return Err(Error::Invalid("the command is empty".into()));
        }
        let mut env = self.env.clone();
        env.extend(spec.env);
        let s = policy::spawn_spec(&self.template, &self.limits, &env, &spec.command, &spec.cwd);
        let spawned = self.cell.spawn(&s)?;
        // Commands get end-of-file on stdin.
        drop(spawned.stdin);
        Ok(Execution { process: spawned.process, stdout: spawned.stdout, stderr: spawned.stderr })
    }

    fn open_file(&self, path: String, max_bytes: u64) -> Result<ExportFile, Error> {
        let rel = policy::workspace_relative(&path)?;
        let f = self.cell.open_export(&rel, max_bytes)?;
        Ok(ExportFile { contents: f.contents, size: f.size })
    }

    fn write_file(&self, path: String, contents: InputStream) -> Result<u64, Error> {
        let rel = policy::workspace_relative(&path)?;
        self.cell.write_file(&rel, contents, 0o644)
    }

    fn destroy(&self) -> Result<(), Error> {
        self.cell.destroy()
    }
}

impl Guest for LinuxSandbox {
    type Sandbox = SandboxState;

    fn check() -> Result<(), Error> {
        config_keys::check(&crate::crownest::host::config::get_json(), "linux-sandbox", policy::CONFIG_KEYS)
            .map_err(Error::Invalid)?;
        let report = mech::describe_host();
        if report.bwrap_version == "none" {
            return Err(Error::Unavailable("bubblewrap is not installed: install the `bubblewrap` package".into()));
        }
        templates::all().map(|_| ())
    }

    fn list_templates() -> Result<Vec<TemplateInfo>, Error> {
        let none = Limits {
            memory_bytes: None,
            pids: None,
            cpu_millicores: None,
            disk_bytes: None,
            open_files: None,
            timeout_ms: None,
        };
        templates::all()?
            .into_values()
            .map(|t| {
                let reason = unusable(&t);
                Ok(TemplateInfo {
                    default_limits: policy::effective_limits(&t, &none)?,
                    name: t.name.clone(),
                    description: t.description.clone(),
                    digest: t.digest.clone(),
                    compute_units: t.compute_units,
                    usable: reason.is_none(),
                    unusable_reason: reason,
                    network_egress: t.egress(),
                })
            })
            .collect()
    }

    fn create_sandbox(spec: SandboxSpec) -> Result<Sandbox, Error> {
        let t = template(&spec.template)?;
        if let Some(why) = unusable(&t) {
            return Err(Error::Invalid(format!("template `{}` is not usable on this host ({why})", t.name)));
        }
        let limits = policy::effective_limits(&t, &spec.limits)?;
        let env_text: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut labels = spec.labels.clone();
        labels.push((LABEL_TEMPLATE.into(), t.name.clone()));
        labels.push((LABEL_LIMITS.into(), encode_limits(&limits)));
        labels.push((LABEL_ENV.into(), env_text.join("\0")));
        let cell = mech::create_cell(&spec.id, policy::cell_limits(&limits), &labels)?;
        Ok(Sandbox::new(SandboxState { cell, template: t, limits, env: spec.env }))
    }

    fn open_sandbox(id: String) -> Result<Sandbox, Error> {
        let cell = mech::open_cell(&id)?;
        let labels = cell.labels();
        let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let t = template(&label(LABEL_TEMPLATE).unwrap_or_else(|| "base".into()))?;
        let limits = decode_limits(&label(LABEL_LIMITS).unwrap_or_default());
        let env = label(LABEL_ENV)
            .unwrap_or_default()
            .split('\0')
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        Ok(Sandbox::new(SandboxState { cell, template: t, limits, env }))
    }

    fn list_sandboxes() -> Result<Vec<String>, Error> {
        mech::list_cells()
    }

    fn destroy_by_id(id: String) -> Result<(), Error> {
        match mech::open_cell(&id) {
            Ok(cell) => cell.destroy(),
            Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
