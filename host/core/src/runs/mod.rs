//! Workspace Runs: the model, its durable store, events, evidence and the
//! executor that drives a run through its lifecycle.
//!
//! `awaiting_archive` → (archive uploaded and verified; `start`) → `queued`
//! → `running` → `succeeded` | `failed` | `canceled`. Every transition is a
//! compare-and-set in the store; events are a gap-free per-run sequence
//! written to disk before anyone sees them.

pub mod collect;
pub mod evidence;
pub mod executor;
pub mod hub;
pub mod ids;
pub mod metering;
pub mod model;
pub mod output;
pub mod output_log;
pub mod recycle;
pub mod store;

pub use model::{ArtifactSpec, Event, EventType, Run, RunStatus};
pub use store::Store;
