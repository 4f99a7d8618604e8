//! The error every plugin call returns.
//!
//! It mirrors the WIT `error` variant (what a plugin may answer) and adds
//! [`ErrorKind::Fault`] for a plugin that misbehaved instead of answering:
//! it trapped, ran past its deadline or memory cap, returned a malformed
//! value, or could not be loaded. Callers branch on the kind (an API maps
//! `NotFound` to 404, `Unavailable` is retried); the message is for people.

use std::fmt;

/// What went wrong, as callers branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Bad input; retrying the same input fails the same way.
    Invalid,
    /// The thing does not exist or is hidden from the caller.
    NotFound,
    /// Not allowed.
    Denied,
    /// A quota or plan limit would be exceeded.
    QuotaExceeded,
    /// Temporarily unavailable; retry with backoff.
    Unavailable,
    /// A bug or unexpected state inside the plugin, reported by the plugin.
    Internal,
    /// The plugin failed to answer at all.
    Fault(FaultKind),
}

/// How a plugin failed to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// It trapped (a panic, `unreachable`, an out-of-bounds access).
    Trap,
    /// It ran past its call deadline.
    Deadline,
    /// It tried to grow its memory past its cap.
    MemoryCap,
    /// It returned a value that breaks the contract (a bad checksum string,
    /// a size that does not match).
    Malformed,
    /// It could not be loaded or instantiated.
    Load,
}

impl ErrorKind {
    /// A stable snake_case code, used in API errors and CLI output.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Denied => "denied",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
            ErrorKind::Fault(FaultKind::Trap) => "plugin_trapped",
            ErrorKind::Fault(FaultKind::Deadline) => "plugin_deadline_exceeded",
            ErrorKind::Fault(FaultKind::MemoryCap) => "plugin_memory_exceeded",
            ErrorKind::Fault(FaultKind::Malformed) => "plugin_malformed_value",
            ErrorKind::Fault(FaultKind::Load) => "plugin_load_failed",
        }
    }

    /// Whether the operation may succeed if retried later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Fault(FaultKind::Deadline))
    }
}

/// An error from (or about) one plugin call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PluginError {
    pub kind: ErrorKind,
    pub message: String,
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError { kind, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn fault(fault: FaultKind, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fault(fault), message)
    }

    /// Whether the plugin misbehaved (as opposed to answering with an error).
    pub fn is_fault(&self) -> bool {
        matches!(self.kind, ErrorKind::Fault(_))
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}
