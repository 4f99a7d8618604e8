//! Resource limits of one sandbox, as the host mechanisms receive them.

use serde::{Deserialize, Serialize};

/// `None` means "not limited by this spec".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u32>,
    pub cpu_millicores: Option<u32>,
    pub disk_bytes: Option<u64>,
    pub open_files: Option<u32>,
}
