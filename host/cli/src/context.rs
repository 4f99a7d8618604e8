//! What every command needs: the configuration and the plugin host built
//! from it. (Which server and credential the API client commands use is
//! `credentials`' job.)

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use crownest_core::PluginKind;
use crownest_core::config::Config;
use crownest_core::kv::SqliteKv;
use crownest_plugins::{PluginHost, PluginSet, resolve};
use crownest_sandbox::{SandboxConfig, SandboxHost};

/// Global command-line options.
pub struct Context {
    pub config_path: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

impl Context {
    /// The configuration with command-line overrides applied.
    pub fn config(&self) -> Result<Config> {
        let mut config = Config::load(self.config_path.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = Some(dir.clone());
        }
        Ok(config)
    }

    /// Create the data directory (mode 0700) if needed.
    pub fn prepare_data_dir(&self, config: &Config) -> Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = config.data_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        Ok(dir)
    }

    /// Build the engine and load the configured plugins.
    /// The plugins for a one-shot command (`doctor`, `plugins check`, …):
    /// no standby sandboxes, which would outlive the command.
    pub fn load_plugins(&self, config: &Config) -> Result<(PluginHost, PluginSet)> {
        self.load_plugins_with(config, false)
    }

    /// The plugins for `crownest serve`, with standby sandboxes as configured.
    pub fn load_plugins_serving(&self, config: &Config) -> Result<(PluginHost, PluginSet)> {
        self.load_plugins_with(config, true)
    }

    fn load_plugins_with(&self, config: &Config, standby: bool) -> Result<(PluginHost, PluginSet)> {
        let dir = self.prepare_data_dir(config)?;
        let db = dir.join("crownest.db");
        let kv = SqliteKv::open(&db).with_context(|| format!("cannot open the database {}", db.display()))?;
        let mut host = PluginHost::for_config(config, Arc::new(kv)).context("cannot start the plugin engine")?;
        let wants_sandbox = PluginKind::ALL.into_iter().any(|k| resolve(config, k).is_some_and(|(_, _, g)| g.sandbox));
        if wants_sandbox {
            host = host.with_sandbox(sandbox_host(config, standby)?);
        }
        let set = host.load_all(config).map_err(|e| anyhow::anyhow!("{}", e.message))?;
        Ok((host, set))
    }
}

/// The sandbox mechanisms for `config`, for the installation whose data
/// directory it names; the jail helper is this executable. `standby` keeps
/// started sandboxes ready (a server). Touches no existing sandbox.
pub fn sandbox_host(config: &Config, standby: bool) -> Result<Arc<SandboxHost>> {
    let exe = std::env::current_exe().context("cannot locate the crownest executable (the sandbox helper)")?;
    // Prefer the small dedicated helper installed next to us.
    let small = exe.with_file_name("crownest-jail");
    let exe = if small.is_file() { small } else { exe };
    let s = &config.sandbox;
    let root = s.root.clone().unwrap_or_else(|| {
        if rustix_is_root() {
            PathBuf::from("/var/lib/crownest-sandboxes")
        } else {
            let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
            base.join("crownest-sandboxes")
        }
    });
    let installation = crownest_core::installation::load_or_create(&config.data_dir())?;
    let cfg = SandboxConfig {
        root,
        installation,
        uid_lease_dir: s.uid_lease_dir.clone(),
        bwrap: s.bwrap.clone(),
        helper: exe,
        cgroup_mount: PathBuf::from("/sys/fs/cgroup"),
        uid_base: s.uid_base,
        uid_count: s.uid_count,
        warm_standby: if standby { s.warm_standby } else { 0 },
        batch_scheduling: s.scheduling == crownest_core::config::Scheduling::Batch,
    };
    SandboxHost::new(cfg).map_err(|e| anyhow::anyhow!(e))
}

fn rustix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
