//! Splitting and checking workspace-relative paths, shared by extraction and
//! export. All file access below a workspace goes through a `cap_std::Dir`
//! and walks directories one component at a time without following links.

use std::io;

use cap_fs_ext::DirExt as _;
use cap_std::fs::Dir;

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    Absolute,
    ParentComponent,
    Empty,
    Nul,
    TooLong(usize),
    NameTooLong,
    TooDeep(usize),
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathProblem::Absolute => f.write_str("absolute paths are not allowed"),
            PathProblem::ParentComponent => f.write_str("`..` components are not allowed"),
            PathProblem::Empty => f.write_str("empty path"),
            PathProblem::Nul => f.write_str("NUL byte in path"),
            PathProblem::TooLong(n) => write!(f, "path longer than {n} bytes"),
            PathProblem::NameTooLong => f.write_str("a path component is longer than 255 bytes"),
            PathProblem::TooDeep(n) => write!(f, "deeper than {n} directories"),
        }
    }
}

/// The normal components of a relative path (`./` and empty components
/// dropped), refusing anything that could step outside.
pub fn components(raw: &[u8], max_bytes: usize, max_depth: usize) -> Result<Vec<&[u8]>, PathProblem> {
    if raw.len() > max_bytes {
        return Err(PathProblem::TooLong(max_bytes));
    }
    if raw.contains(&0) {
        return Err(PathProblem::Nul);
    }
    if raw.first() == Some(&b'/') {
        return Err(PathProblem::Absolute);
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(PathProblem::ParentComponent),
            name if name.len() > 255 => return Err(PathProblem::NameTooLong),
            name => out.push(name),
        }
    }
    if out.is_empty() {
        return Err(PathProblem::Empty);
    }
    if out.len() > max_depth {
        return Err(PathProblem::TooDeep(max_depth));
    }
    Ok(out)
}

pub fn os(name: &[u8]) -> &std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(name)
}

/// Open the directory `parents` below `root`, never following a symlink;
/// with `create`, make missing directories (mode 0755) and report each one.
pub fn open_parents(
    root: &Dir,
    parents: &[&[u8]],
    create: bool,
    mut created: impl FnMut(&Dir, &[u8]) -> io::Result<()>,
) -> io::Result<Dir> {
    let mut dir = root.try_clone()?;
    for name in parents {
        let name_os = os(name);
        let next = match dir.open_dir_nofollow(name_os) {
            Ok(d) => d,
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                dir.create_dir(name_os)?;
                created(&dir, name)?;
                dir.open_dir_nofollow(name_os)?
            }
            Err(e) => return Err(e),
        };
        dir = next;
    }
    Ok(dir)
}
