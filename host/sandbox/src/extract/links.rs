//! Symlinks and hardlinks: where they may point, and making hardlinks
//! without ever following a link.
//!
//! A symlink is kept when its target, read relative to the directory
//! holding it, stays lexically inside the workspace. A hardlink is made
//! when its target (a path from the archive root, as GNU tar reads it) is a
//! regular file already in the workspace: `linkat` without
//! `AT_SYMLINK_FOLLOW` on directories opened without following symlinks
//! links exactly that inode, and nothing outside the workspace is reachable
//! (its files are on other mounts, where `linkat` fails).

use std::io;

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType};

use crate::paths;

/// Whether `target`, relative to the directory `link_parents` holding the
/// link, stays inside the workspace root. The reason when not.
pub(super) fn symlink_stays_inside(link_parents: &[&[u8]], target: &[u8]) -> Result<(), String> {
    if target.first() == Some(&b'/') {
        return Err("absolute symlink targets are not allowed".into());
    }
    let mut depth = link_parents.len() as i64;
    for c in target.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return Err("symlink target points outside the workspace".into());
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Why a hardlink is not made.
#[derive(Debug)]
pub(super) enum LinkError {
    /// Refused: the reason names what is wrong.
    Refused(String),
    Io(io::Error),
}

/// Link `dst_dir/dst_name` to the regular file `target` (components from
/// the root). An existing regular file at the destination is replaced, as
/// GNU tar replaces it; a directory or symlink there is refused.
pub(super) fn hardlink(root: &Dir, target: &[&[u8]], dst_dir: &Dir, dst_name: &[u8]) -> Result<(), LinkError> {
    let shown_target = String::from_utf8_lossy(&target.join(&b'/')).into_owned();
    let not_earlier =
        || LinkError::Refused(format!("hardlink target `{shown_target}` is not a regular file extracted before it"));
    let (t_name, t_parents) = target.split_last().expect("components are never empty");
    let src_dir = match paths::open_parents(root, t_parents, false, |_, _| Ok(())) {
        Ok(d) => d,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => {
            return Err(not_earlier());
        }
        Err(e) => return Err(LinkError::Io(e)),
    };
    let kind = |dir: &Dir, name: &[u8]| -> Result<Option<FileType>, LinkError> {
        match rustix::fs::statat(dir, paths::os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(LinkError::Io(e.into())),
        }
    };
    if kind(&src_dir, t_name)? != Some(FileType::RegularFile) {
        return Err(not_earlier());
    }
    match kind(dst_dir, dst_name)? {
        None => {}
        Some(FileType::RegularFile) => {
            rustix::fs::unlinkat(dst_dir, paths::os(dst_name), AtFlags::empty())
                .map_err(|e| LinkError::Io(e.into()))?;
        }
        Some(FileType::Directory) => return Err(LinkError::Refused("a directory of that name already exists".into())),
        Some(_) => return Err(LinkError::Refused("a symlink or other entry of that name already exists".into())),
    }
    rustix::fs::linkat(&src_dir, paths::os(t_name), dst_dir, paths::os(dst_name), AtFlags::empty())
        .map_err(|e| LinkError::Io(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_are_judged_from_the_links_directory() {
        assert!(symlink_stays_inside(&[], b"a/b").is_ok());
        assert!(symlink_stays_inside(&[b"d"], b"../x").is_ok());
        assert!(symlink_stays_inside(&[b"d"], b"../../x").is_err());
        assert!(symlink_stays_inside(&[], b"..").is_err());
        assert!(symlink_stays_inside(&[], b"a/../../x").is_err(), "out and back in is still out");
        assert!(symlink_stays_inside(&[], b"/etc/passwd").unwrap_err().contains("absolute"));
        assert!(symlink_stays_inside(&[], b"./././.").is_ok());
    }
}
