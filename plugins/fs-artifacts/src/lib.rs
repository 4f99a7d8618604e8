//! `fs-artifacts`: the default artifact store, keeping objects in a local
//! directory.
//!
//! The host grants it one directory (`grants.filesystem`), preopened at
//! `/data`. Layout: `objects/<key>` holds an object's bytes, `meta/<key>` its
//! size, SHA-256 and creation time, `tmp/` uploads in progress. A put
//! streams the body into `tmp/` through a host-side hashing stream (bytes are
//! spliced host to host, never copied through wasm memory), verifies size and
//! SHA-256, and only then renames the file into place, so a reader never sees
//! a partial or unverified object.

mod keys;
mod meta;

wit_bindgen::generate!({
    path: "../../wit/artifact-store",
    world: "crownest:artifact-store/artifact-store",
    generate_all,
});

use crownest::host::digest;
use crownest::host::types::Error;
use exports::crownest::artifact_store::store::{Guest, ObjectInfo, PutRequest};
use wasi::filesystem::preopens;
use wasi::filesystem::types::{Descriptor, DescriptorFlags, DescriptorType, ErrorCode, OpenFlags, PathFlags};
use wasi::io::streams::{InputStream, StreamError};

/// Guest path of the granted directory.
const ROOT: &str = "/data";
/// Bytes moved per splice call.
const SPLICE_CHUNK: u64 = 1 << 20;

struct FsArtifacts;

export!(FsArtifacts);

fn root_dir() -> Result<Descriptor, Error> {
    preopens::get_directories().into_iter().find(|(_, path)| path == ROOT).map(|(dir, _)| dir).ok_or_else(|| {
        Error::Denied("fs-artifacts has no storage directory: grant one with `grants.filesystem = \"<dir>\"`".into())
    })
}

fn fs_error(what: &str, code: ErrorCode) -> Error {
    let msg = format!("{what}: {code:?}");
    match code {
        ErrorCode::NoEntry => Error::NotFound(msg),
        ErrorCode::Access | ErrorCode::NotPermitted | ErrorCode::ReadOnly => Error::Denied(msg),
        ErrorCode::InsufficientSpace | ErrorCode::Quota => Error::QuotaExceeded(msg),
        ErrorCode::Busy | ErrorCode::WouldBlock | ErrorCode::Interrupted => Error::Unavailable(msg),
        ErrorCode::NotDirectory | ErrorCode::IsDirectory | ErrorCode::Exist => {
            Error::Invalid(format!("{msg} (the key collides with another object's path)"))
        }
        _ => Error::Internal(msg),
    }
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!("{what}: {e}")),
        std::io::ErrorKind::PermissionDenied => Error::Denied(format!("{what}: {e}")),
        _ => Error::Internal(format!("{what}: {e}")),
    }
}

fn now_ms() -> u64 {
    let t = wasi::clocks::wall_clock::now();
    t.seconds * 1000 + u64::from(t.nanoseconds) / 1_000_000
}

fn random_name() -> String {
    format!("{:016x}{:016x}", wasi::random::random::get_random_u64(), wasi::random::random::get_random_u64())
}

fn ensure_parent(rel: &str) -> Result<(), Error> {
    if let Some((parent, _)) = rel.rsplit_once('/') {
        std::fs::create_dir_all(format!("{ROOT}/{parent}")).map_err(|e| io_error("create directory", e))?;
    }
    Ok(())
}

/// Run `op`, and once more after creating the parent directory of `rel`
/// if it failed for want of it. Directories are made when first needed
/// rather than checked on every put (a dozen filesystem calls fewer).
fn with_parent<T>(what: &str, rel: &str, op: impl Fn() -> Result<T, ErrorCode>) -> Result<T, Error> {
    match op() {
        Err(ErrorCode::NoEntry) => {
            ensure_parent(rel)?;
            op().map_err(|c| fs_error(what, c))
        }
        other => other.map_err(|c| fs_error(what, c)),
    }
}

/// A new file at `rel` (never an existing one).
fn create_file(what: &str, root: &Descriptor, rel: &str) -> Result<Descriptor, Error> {
    with_parent(what, rel, || {
        root.open_at(PathFlags::empty(), rel, OpenFlags::CREATE | OpenFlags::EXCLUSIVE, DescriptorFlags::WRITE)
    })
}

/// Move `from` to `to`, both under the root.
fn place(what: &str, root: &Descriptor, from: &str, to: &str) -> Result<(), Error> {
    with_parent(what, to, || root.rename_at(from, root, to))
}

/// Write a small file whole (a positioned write: no stream to set up).
fn write_small(root: &Descriptor, rel: &str, bytes: &[u8]) -> Result<(), Error> {
    let file = create_file("create metadata file", root, rel)?;
    let mut done = 0usize;
    while done < bytes.len() {
        let n = file.write(&bytes[done..], done as u64).map_err(|c| fs_error("write metadata", c))?;
        if n == 0 {
            return Err(Error::Unavailable("writing the metadata made no progress".into()));
        }
        done += n as usize;
    }
    Ok(())
}

/// Splice `body` into a fresh file `tmp`, returning the digest of what passed.
fn write_verified(root: &Descriptor, tmp: &str, req: &PutRequest, body: InputStream) -> Result<(), Error> {
    let file = create_file("create upload file", root, tmp)?;
    let (hashed, hasher) = digest::hash_stream(body);
    let out = file.write_via_stream(0).map_err(|c| fs_error("open upload file", c))?;
    let mut written = 0u64;
    loop {
        match out.blocking_splice(&hashed, SPLICE_CHUNK) {
            Ok(n) => {
                written += n;
                if written > req.size {
                    return Err(Error::Invalid(format!("body is longer than the declared size of {} bytes", req.size)));
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(Error::Unavailable(format!("writing the object failed: {}", e.to_debug_string())));
            }
        }
    }
    out.blocking_flush().map_err(|e| Error::Unavailable(format!("flushing the object failed: {e:?}")))?;
    drop(out);
    drop(hashed);
    let got = hasher.finish();
    if got.size != req.size {
        return Err(Error::Invalid(format!("size mismatch: declared {} bytes, received {}", req.size, got.size)));
    }
    if got.sha256 != req.sha256 {
        return Err(Error::Invalid(format!("sha256 mismatch: declared {}, received {}", req.sha256, got.sha256)));
    }
    file.sync_data().map_err(|c| fs_error("sync object", c))?;
    Ok(())
}

impl Guest for FsArtifacts {
    fn check() -> Result<(), Error> {
        // Where objects go is the host's filesystem grant, not a setting.
        config_keys::check(&crate::crownest::host::config::get_json(), "fs-artifacts", &[]).map_err(Error::Invalid)?;
        root_dir()?;
        std::fs::create_dir_all(format!("{ROOT}/tmp")).map_err(|e| io_error("create tmp directory", e))?;
        let probe = format!("{ROOT}/tmp/check-{}", random_name());
        std::fs::write(&probe, b"ok").map_err(|e| io_error("write probe file", e))?;
        std::fs::remove_file(&probe).map_err(|e| io_error("remove probe file", e))?;
        Ok(())
    }

    fn put(req: PutRequest, body: InputStream) -> Result<ObjectInfo, Error> {
        keys::validate(&req.key)?;
        meta::validate_sha256(&req.sha256)?;
        let root = root_dir()?;
        let tmp = format!("tmp/{}", random_name());
        if let Err(e) = write_verified(&root, &tmp, &req, body) {
            let _ = root.unlink_file_at(&tmp);
            return Err(e);
        }
        let info = ObjectInfo {
            locator: req.key.clone(),
            size: req.size,
            sha256: req.sha256.clone(),
            created_at_ms: now_ms(),
        };
        let object = format!("objects/{}", req.key);
        let meta_path = format!("meta/{}", req.key);
        // Metadata first: an object file without metadata is invisible to
        // `stat`, while metadata without an object is never written.
        let meta_tmp = format!("tmp/{}.meta", random_name());
        let publish = write_small(&root, &meta_tmp, meta::encode(&info).as_bytes())
            .and_then(|()| place("publish object", &root, &tmp, &object))
            .and_then(|()| place("publish metadata", &root, &meta_tmp, &meta_path));
        if let Err(e) = publish {
            let _ = root.unlink_file_at(&tmp);
            let _ = root.unlink_file_at(&meta_tmp);
            return Err(e);
        }
        Ok(info)
    }

    fn get(locator: String) -> Result<InputStream, Error> {
        keys::validate(&locator)?;
        let root = root_dir()?;
        let file = root
            .open_at(PathFlags::empty(), &format!("objects/{locator}"), OpenFlags::empty(), DescriptorFlags::READ)
            .map_err(|c| match c {
                ErrorCode::NoEntry | ErrorCode::NotDirectory => Error::NotFound(format!("no object at `{locator}`")),
                other => fs_error("open object", other),
            })?;
        if file.get_type().map_err(|c| fs_error("stat object", c))? != DescriptorType::RegularFile {
            return Err(Error::NotFound(format!("no object at `{locator}`")));
        }
        file.read_via_stream(0).map_err(|c| fs_error("read object", c))
    }

    fn stat(locator: String) -> Result<ObjectInfo, Error> {
        keys::validate(&locator)?;
        root_dir()?;
        match std::fs::read_to_string(format!("{ROOT}/meta/{locator}")) {
            Ok(text) => meta::decode(&locator, &text),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                Err(Error::NotFound(format!("no object at `{locator}`")))
            }
            Err(e) => Err(io_error("read metadata", e)),
        }
    }

    fn delete(locator: String) -> Result<(), Error> {
        keys::validate(&locator)?;
        root_dir()?;
        for path in [format!("{ROOT}/meta/{locator}"), format!("{ROOT}/objects/{locator}")] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {}
                Err(e) => return Err(io_error("delete object", e)),
            }
        }
        Ok(())
    }

    fn presign_get(_locator: String, _expires_in_secs: u32) -> Result<Option<String>, Error> {
        Ok(None)
    }

    fn presign_put(_key: String, _expires_in_secs: u32) -> Result<Option<String>, Error> {
        Ok(None)
    }
}
