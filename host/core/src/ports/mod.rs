//! Ports: what core needs from each backend kind, as Rust traits.
//!
//! `crownest-plugins` implements these with WebAssembly components; unit
//! tests implement them with in-process fakes. Bulk data crosses as
//! [`ByteStream`]s, never as whole buffers.

pub mod artifact_store;
pub mod auth_scoper;
pub mod meter;
pub mod runtime;

pub use artifact_store::{ArtifactStore, ObjectInfo, PutRequest};
pub use auth_scoper::{AuthRequest, AuthScoper, Decision, Principal, PrincipalKind};
pub use meter::{Admission, Meter, MeterSubject, TickDecision, Usage, UsageQuery};
pub use runtime::{
    ArchiveWarning, ExecSpec, Execution, ExitStatus, ExtractProgress, Outcome, ProcessHandle, RuntimeProvider, Sandbox,
    SandboxInfo, SandboxLimits, SandboxSpec, TemplateInfo,
};

/// A stream of bytes owned by whoever reads it.
pub type ByteStream = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
