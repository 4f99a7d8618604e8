//! Safe export of a declared artifact from a workspace.
//!
//! The path is resolved beneath the workspace root only: through a
//! `cap_std::Dir`, which refuses any resolution (`..`, absolute symlinks,
//! symlinks pointing out) that would leave the root. Symlinks that stay inside
//! are followed. FIFOs are opened non-blocking so a hostile FIFO cannot hang
//! the host, and only regular files within the size limit are returned.

use std::io;

use cap_std::fs::{Dir, File, OpenOptions};

use crate::paths;

/// Why a file cannot be exported.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    #[error("`{0}` does not exist in the workspace")]
    NotFound(String),
    #[error("`{0}` resolves outside the workspace")]
    Outside(String),
    #[error("`{path}` is a {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    #[error("`{path}` is {size} bytes, over the {max}-byte limit")]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("invalid path `{path}`: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("cannot read `{path}`: {reason}")]
    Io { path: String, reason: String },
}

fn kind_of(ft: &cap_std::fs::FileType) -> &'static str {
    use cap_std::fs::FileTypeExt;
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() || ft.is_block_device() {
        "device"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

/// Open `path` (relative to the workspace root) for reading: (file, size).
pub fn open_export(root: &Dir, path: &str, max_bytes: u64) -> Result<(File, u64), ExportError> {
    let shown = path.to_string();
    let parts = paths::components(path.as_bytes(), 4096, 256)
        .map_err(|p| ExportError::InvalidPath { path: shown.clone(), reason: p.to_string() })?;
    let rel: std::path::PathBuf = parts.iter().map(|c| paths::os(c)).collect();
    let mut opts = OpenOptions::new();
    opts.read(true);
    cap_std::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = root.open_with(&rel, &opts).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ExportError::NotFound(shown.clone()),
        // cap-std reports an escape attempt as PermissionDenied.
        io::ErrorKind::PermissionDenied => ExportError::Outside(shown.clone()),
        _ if e.raw_os_error() == Some(libc::ENOTDIR) => ExportError::NotFound(shown.clone()),
        _ if e.raw_os_error() == Some(libc::ENXIO) => ExportError::NotRegular { path: shown.clone(), kind: "socket" },
        _ => ExportError::Io { path: shown.clone(), reason: e.to_string() },
    })?;
    let meta = file.metadata().map_err(|e| ExportError::Io { path: shown.clone(), reason: e.to_string() })?;
    if !meta.is_file() {
        return Err(ExportError::NotRegular { path: shown, kind: kind_of(&meta.file_type()) });
    }
    if meta.len() > max_bytes {
        return Err(ExportError::TooLarge { path: shown, size: meta.len(), max: max_bytes });
    }
    Ok((file, meta.len()))
}
