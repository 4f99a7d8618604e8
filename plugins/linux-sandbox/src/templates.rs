//! Sandbox templates: the files in the repository's `templates/` directory
//! (embedded at build time) plus any defined in the plugin's config under
//! `templates.<name>`, which replace an embedded one of the same name.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::crownest::host::config;
use crate::crownest::host::types::Error;

const EMBEDDED: &[&str] = &[
    include_str!("../../../templates/base.toml"),
    include_str!("../../../templates/python.toml"),
    include_str!("../../../templates/node.toml"),
    include_str!("../../../templates/python-node.toml"),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootFs {
    pub binds: Vec<String>,
    #[serde(default)]
    pub optional_binds: Vec<String>,
    /// [target, link]
    #[serde(default)]
    pub symlinks: Vec<[String; 2]>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateLimits {
    pub memory_mib: u64,
    pub pids: u32,
    pub cpu_millicores: u32,
    pub disk_mib: u64,
    pub tmp_mib: u64,
    pub open_files: u32,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub name: String,
    pub description: String,
    pub compute_units: u32,
    /// `none` or `egress`.
    pub network: String,
    #[serde(default)]
    pub requires: Vec<String>,
    pub rootfs: RootFs,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub limits: TemplateLimits,
    /// Lowercase hex SHA-256 of the definition (filled in on load).
    #[serde(skip)]
    pub digest: String,
}

impl Template {
    pub fn egress(&self) -> bool {
        self.network == "egress"
    }

    fn validate(self) -> Result<Template, Error> {
        if !matches!(self.network.as_str(), "none" | "egress") {
            return Err(Error::Invalid(format!("template `{}`: network must be \"none\" or \"egress\"", self.name)));
        }
        if self.name.is_empty() || !self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Error::Invalid(format!(
                "template name `{}` must be lowercase letters, digits and `-`",
                self.name
            )));
        }
        for p in self.rootfs.binds.iter().chain(&self.rootfs.optional_binds).chain(&self.requires) {
            if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
                return Err(Error::Invalid(format!("template `{}`: `{p}` must be an absolute path", self.name)));
            }
        }
        Ok(self)
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every template, by name.
pub fn all() -> Result<BTreeMap<String, Template>, Error> {
    let mut out = BTreeMap::new();
    for text in EMBEDDED {
        let mut t: Template =
            toml::from_str(text).map_err(|e| Error::Internal(format!("embedded template does not parse: {e}")))?;
        t.digest = hex_sha256(text.as_bytes());
        let t = t.validate()?;
        out.insert(t.name.clone(), t);
    }
    if let Some(json) = config::get("templates") {
        let table: BTreeMap<String, serde_json::Value> = serde_json::from_str(&json)
            .map_err(|e| Error::Invalid(format!("config `templates` must be a table of templates: {e}")))?;
        for (name, value) in table {
            let canonical = serde_json::to_vec(&value).unwrap_or_default();
            let mut t: Template = serde_json::from_value(value)
                .map_err(|e| Error::Invalid(format!("config template `{name}` is invalid: {e}")))?;
            if t.name != name {
                return Err(Error::Invalid(format!("config template `{name}` has name `{}`", t.name)));
            }
            t.digest = hex_sha256(&canonical);
            out.insert(name, t.validate()?);
        }
    }
    Ok(out)
}
