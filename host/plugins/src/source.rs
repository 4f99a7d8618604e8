//! Where a plugin's component comes from: embedded in the binary or a file.

use std::fmt;
use std::path::PathBuf;

use crownest_core::PluginKind;
use crownest_core::config::{Config, Grants, PluginConfig};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
}

/// The embedded plugins: name, kind, default grants.
const BUILTINS: &[(&str, PluginKind)] = &[
    ("fs-artifacts", PluginKind::ArtifactStore),
    ("scoped-keys", PluginKind::AuthScoper),
    ("compute-meter", PluginKind::Meter),
    ("linux-sandbox", PluginKind::RuntimeProvider),
    ("s3-artifacts", PluginKind::ArtifactStore),
];

/// A plugin's origin as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// `builtin:<name>`
    Builtin(String),
    /// A `.wasm` component on disk.
    Path(PathBuf),
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::Builtin(n) => write!(f, "builtin:{n}"),
            PluginSource::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl PluginSource {
    pub fn parse(s: &str) -> PluginSource {
        match s.strip_prefix("builtin:") {
            Some(name) => PluginSource::Builtin(name.to_string()),
            None => PluginSource::Path(PathBuf::from(s)),
        }
    }

    /// A short name for logs and listings: the builtin name or file stem.
    pub fn plugin_name(&self) -> String {
        match self {
            PluginSource::Builtin(n) => n.clone(),
            PluginSource::Path(p) => p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        }
    }

    /// The component bytes. Errors say what to do.
    pub fn read(&self, kind: PluginKind) -> Result<Vec<u8>, String> {
        match self {
            PluginSource::Builtin(name) => match builtin(name) {
                Some((k, bytes)) if k == kind => Ok(bytes.to_vec()),
                Some((k, _)) => Err(format!(
                    "`builtin:{name}` implements the {k} world, not {kind}; builtin {kind} plugins: {}",
                    list_or_none(&builtin_names(kind))
                )),
                None => Err(format!(
                    "unknown builtin plugin `builtin:{name}`; builtin {kind} plugins: {}",
                    list_or_none(&builtin_names(kind))
                )),
            },
            PluginSource::Path(path) => std::fs::read(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("plugin file {} not found; check the `source` path in the config", path.display())
                }
                _ => format!("cannot read plugin file {}: {e}", path.display()),
            }),
        }
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() { "none yet".to_string() } else { names.join(", ") }
}

fn builtin(name: &str) -> Option<(PluginKind, &'static [u8])> {
    let kind = BUILTINS.iter().find(|(n, _)| *n == name)?.1;
    let bytes = embedded::EMBEDDED.iter().find(|(n, _)| *n == name)?.1;
    Some((kind, bytes))
}

/// Names of the builtin plugins of one kind.
pub fn builtin_names(kind: PluginKind) -> Vec<&'static str> {
    BUILTINS.iter().filter(|(_, k)| *k == kind).map(|(n, _)| *n).collect()
}

/// The builtin used for `kind` when the config names none.
pub fn default_builtin(kind: PluginKind) -> Option<&'static str> {
    builtin_names(kind).first().copied()
}

/// `host:port` of an `http(s)://` URL.
pub fn authority_of(url: &str) -> Option<String> {
    let (rest, default_port) = match url.strip_prefix("https://") {
        Some(r) => (r, 443),
        None => (url.strip_prefix("http://")?, 80),
    };
    let host_port = rest.split(['/', '?']).next()?;
    if host_port.is_empty() {
        return None;
    }
    Some(if host_port.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host_port.to_ascii_lowercase()
    } else {
        format!("{}:{default_port}", host_port.to_ascii_lowercase())
    })
}

/// Grants a builtin gets when its config table has no `grants`.
fn default_grants(name: &str, table: &PluginConfig) -> Grants {
    match name {
        "fs-artifacts" => Grants { filesystem: Some("${data_dir}/artifacts".into()), ..Grants::default() },
        "linux-sandbox" => Grants { sandbox: true, ..Grants::default() },
        // Outgoing HTTP to the configured endpoint and nowhere else (its
        // `${env:…}` resolved first, as the plugin will see it).
        "s3-artifacts" => Grants { http: s3_endpoint(table).ok().into_iter().collect(), ..Grants::default() },
        _ => Grants::default(),
    }
}

/// The authority of `s3-artifacts`' endpoint, or why there is none.
fn s3_endpoint(table: &PluginConfig) -> Result<String, String> {
    let raw = match table.config.get("endpoint") {
        None => return Err("has no `endpoint`".into()),
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => return Err(format!("has `endpoint = {other}`, which is not a URL string")),
    };
    let url = match raw.strip_prefix("${env:").and_then(|r| r.strip_suffix('}')) {
        Some(var) => std::env::var(var).map_err(|_| format!("has `endpoint = \"{raw}\"`, but {var} is not set"))?,
        None => raw,
    };
    authority_of(&url).ok_or_else(|| format!("has `endpoint = \"{url}\"`, which is not an http:// or https:// URL"))
}

/// Why a builtin cannot get its default grants from its table (then the
/// host says that, rather than "not granted" for a grant it would have
/// made): `None` when nothing is wrong or the table grants explicitly.
pub fn default_grant_problem(source: &PluginSource, table: &PluginConfig) -> Option<String> {
    match source {
        PluginSource::Builtin(name) if name == "s3-artifacts" && table.grants.is_none() => {
            s3_endpoint(table).err().map(|why| {
                format!(
                    "s3-artifacts {why}: set `endpoint` in its config table to the S3 service's URL \
                     (e.g. \"http://127.0.0.1:3900\"); it is granted outgoing HTTP to that host only"
                )
            })
        }
        _ => None,
    }
}

/// Resolve what `kind` should load under `config`: source, plugin config and
/// grants (with `${data_dir}` expanded). `None` when the kind has neither a
/// configured source nor a builtin default.
pub fn resolve(config: &Config, kind: PluginKind) -> Option<(PluginSource, PluginConfig, Grants)> {
    let table = config.plugins.get(kind).cloned().unwrap_or_default();
    let source = match &table.source {
        Some(s) => PluginSource::parse(&config.expand(s)),
        None => PluginSource::Builtin(default_builtin(kind)?.to_string()),
    };
    let mut grants = match (&table.grants, &source) {
        (Some(g), _) => g.clone(),
        (None, PluginSource::Builtin(name)) => default_grants(name, &table),
        (None, PluginSource::Path(_)) => Grants::default(),
    };
    grants.filesystem = grants.filesystem.map(|d| config.expand(&d));
    Some((source, table, grants))
}
