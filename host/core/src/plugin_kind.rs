//! The four kinds of plugin and the names they go by in config, WIT and CLI.

use std::fmt;
use std::str::FromStr;

/// One of the four backend kinds a plugin can implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginKind {
    RuntimeProvider,
    ArtifactStore,
    AuthScoper,
    Meter,
}

impl PluginKind {
    /// Every kind, in the order they are listed to users.
    pub const ALL: [PluginKind; 4] =
        [PluginKind::RuntimeProvider, PluginKind::ArtifactStore, PluginKind::AuthScoper, PluginKind::Meter];

    /// The kebab-case name used on the command line and in WIT
    /// (`artifact-store`).
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::RuntimeProvider => "runtime-provider",
            PluginKind::ArtifactStore => "artifact-store",
            PluginKind::AuthScoper => "auth-scoper",
            PluginKind::Meter => "meter",
        }
    }

    /// The snake_case key of the kind's table in `crownest.toml`
    /// (`[plugins.artifact_store]`).
    pub fn config_key(self) -> &'static str {
        match self {
            PluginKind::RuntimeProvider => "runtime_provider",
            PluginKind::ArtifactStore => "artifact_store",
            PluginKind::AuthScoper => "auth_scoper",
            PluginKind::Meter => "meter",
        }
    }

    /// The WIT package implementing this kind's world (`crownest:artifact-store`).
    pub fn wit_package(self) -> &'static str {
        match self {
            PluginKind::RuntimeProvider => "crownest:runtime-provider",
            PluginKind::ArtifactStore => "crownest:artifact-store",
            PluginKind::AuthScoper => "crownest:auth-scoper",
            PluginKind::Meter => "crownest:meter",
        }
    }

    /// The interface the world exports (`store` for the artifact store).
    pub fn export_interface(self) -> &'static str {
        match self {
            PluginKind::RuntimeProvider => "provider",
            PluginKind::ArtifactStore => "store",
            PluginKind::AuthScoper => "scoper",
            PluginKind::Meter => "metering",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PluginKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PluginKind::ALL.into_iter().find(|k| k.name() == s || k.config_key() == s).ok_or_else(|| {
            format!("unknown plugin kind `{s}`; expected one of: runtime-provider, artifact-store, auth-scoper, meter")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings_and_rejects_others() {
        assert_eq!("artifact-store".parse::<PluginKind>(), Ok(PluginKind::ArtifactStore));
        assert_eq!("auth_scoper".parse::<PluginKind>(), Ok(PluginKind::AuthScoper));
        let err = "store".parse::<PluginKind>().unwrap_err();
        assert!(err.contains("runtime-provider"), "{err}");
    }
}
