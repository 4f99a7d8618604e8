//! Linux sandbox mechanisms for CrowNest's runtime providers.
//!
//! Mechanism only: the policy (which mounts, limits and environment a
//! template gets) comes from the runtime-provider plugin through
//! `crownest:host/sandbox`. This crate spawns bubblewrap through a tiny jail
//! helper (cgroups joined, rlimits set, uid dropped, seccomp installed before
//! bwrap starts), manages cgroups v2/v1, kills whole process trees, and
//! extracts and exports workspace files safely with `cap-std`.

pub mod bwrap;
pub mod cell;
pub mod cgroup;
pub mod export;
pub mod extract;
pub mod host;
pub mod jail;
pub mod limits;
pub mod paths;
pub mod process;
pub mod seccomp;
pub mod spawner;
pub mod spec;
pub mod tar;
pub mod uids;
pub mod warm;

pub use cell::{Cell, CellError, CellRecord, Spawned};
pub use extract::{Budgets, ExtractError, ExtractOptions, Report as ExtractReport, Skipped};
pub use host::{DEFAULT_UID_LEASE_DIR, Enforcement, HostReport, SandboxConfig, SandboxHost, valid_installation_id};
pub use limits::Limits;
pub use process::{ExitStatus, Outcome, ProcessTree};
pub use spec::{Mount, Network, SpawnSpec};
pub use uids::UidLeases;
pub use warm::status::{PoolStatus, ShapeStatus};
