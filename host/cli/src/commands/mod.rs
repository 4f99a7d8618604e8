//! One module per top-level command.

pub mod artifacts;
pub mod control;
pub mod doctor;
pub mod plugins;
pub mod sandboxes;
pub mod serve;
pub mod templates;
pub mod workspace_runs;
