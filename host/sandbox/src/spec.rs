//! What to run in a sandbox, as the host mechanisms receive it from policy.

use serde::{Deserialize, Serialize};

/// One entry of the sandbox's filesystem, applied in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mount {
    /// A host path, read-only; skipped when absent and `optional`.
    RoBind { source: String, target: String, optional: bool },
    /// The cell's workspace, writable.
    Workspace { target: String },
    /// A fresh tmpfs of at most `size_bytes`.
    Tmpfs { target: String, size_bytes: u64 },
    /// A fresh `/proc` for the sandbox's pid namespace.
    Proc { target: String },
    /// A minimal `/dev`.
    Dev { target: String },
    /// An empty directory.
    Dir { target: String },
    /// A symbolic link at `link` pointing to `target`.
    Symlink { target: String, link: String },
    /// A small read-only file with these contents (e.g. `/etc/passwd`).
    File { target: String, contents: String },
}

/// Network access of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// A private network namespace with only loopback.
    None,
    /// The host's network.
    Host,
}

/// One process to start in a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub mounts: Vec<Mount>,
    pub network: Network,
    pub hostname: String,
    /// `RLIMIT_NOFILE` for the process tree.
    pub open_files: Option<u32>,
}
