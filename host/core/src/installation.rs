//! The installation id: made at an installation's first start and kept in
//! its data directory (`installation-id`). Everything an installation puts
//! in places shared with other installations on the host (sandbox cells,
//! cgroups, standbys) is namespaced by it, so that two installations, or a
//! staging and a production server, never touch each other's sandboxes.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::runs::ids::random_bytes;

/// The file in the data directory.
pub const FILE_NAME: &str = "installation-id";

const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

fn valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= 40 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The id of the installation in `data_dir`, made now if it has none
/// (`inst_` and 12 random base32 characters). Two processes starting at
/// once agree on one id: it is published with a link that fails if the
/// file already exists.
pub fn load_or_create(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(FILE_NAME);
    if let Some(id) = read(&path)? {
        return Ok(id);
    }
    let id: String =
        format!("inst_{}", random_bytes(12).iter().map(|b| ALPHABET[(*b & 31) as usize] as char).collect::<String>());
    let tmp = data_dir.join(format!(".{FILE_NAME}.{}.{}", std::process::id(), hex::encode(random_bytes(6))));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(format!("{id}\n").as_bytes())?;
        f.sync_all()
    });
    written.with_context(|| format!("cannot write {}", tmp.display()))?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(&path)?.with_context(|| format!("{} vanished while it was being read", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

fn read(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let id = text.trim();
            if !valid(id) {
                bail!(
                    "{} holds `{}`, not an installation id (1 to 40 characters of [a-zA-Z0-9_-])",
                    path.display(),
                    id.escape_debug()
                );
            }
            Ok(Some(id.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create(dir.path()).unwrap();
        assert!(id.starts_with("inst_") && id.len() == 17, "{id}");
        assert_eq!(load_or_create(dir.path()).unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), id);
    }

    #[test]
    fn processes_starting_together_agree_on_one_id() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| load_or_create(dir.path()).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "../../etc\n").unwrap();
        let e = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains(FILE_NAME) && e.contains("not an installation id"), "{e}");
    }
}
