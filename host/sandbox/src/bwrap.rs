//! Turning a [`SpawnSpec`] into a bubblewrap command line.
//!
//! The host's fixed floor is applied whatever the policy asks: every
//! namespace except (optionally) the network is new, nested user namespaces
//! are disabled, the root is a fresh tmpfs remounted read-only, the
//! environment is cleared, the process starts a new session (no terminal
//! injection), capabilities are dropped, bwrap dies with its parent, and the
//! seccomp filter is installed (`--seccomp`, the fd filled in by the jail
//! helper).

use std::path::Path;

use crate::spec::{Mount, Network, SpawnSpec};

/// Placeholder the jail helper replaces with its seccomp memfd number.
pub const SECCOMP_FD_PLACEHOLDER: &str = "@CROWNEST_SECCOMP_FD@";

/// Uid and gid the sandboxed process sees (inside its user namespace).
pub const SANDBOX_UID: u32 = 1000;

/// Why a spec cannot be turned into a command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid sandbox spec: {0}")]
pub struct SpecError(pub String);

fn check_target(t: &str) -> Result<(), SpecError> {
    if !t.starts_with('/') || t.split('/').any(|c| c == "..") || t.contains('\0') {
        return Err(SpecError(format!("mount target `{t}` must be an absolute path without `..`")));
    }
    Ok(())
}

/// The bwrap arguments (after the program name) for `spec`. `workspace` is
/// the cell's workspace on the host, `files` a directory where small
/// `Mount::File` contents are written.
pub fn args(spec: &SpawnSpec, workspace: &Path, files: &Path) -> Result<Vec<String>, SpecError> {
    if spec.argv.is_empty() {
        return Err(SpecError("empty command".into()));
    }
    let mut a: Vec<String> = [
        "--die-with-parent",
        "--new-session",
        "--unshare-user",
        "--disable-userns",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
        "--clearenv",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if spec.network == Network::None {
        a.push("--unshare-net".into());
    }
    let uid = SANDBOX_UID.to_string();
    a.extend(["--uid".into(), uid.clone(), "--gid".into(), uid]);
    a.extend(["--hostname".into(), spec.hostname.clone()]);
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(SpecError(format!("invalid environment variable name `{k}`")));
        }
        a.extend(["--setenv".into(), k.clone(), v.clone()]);
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        match m {
            Mount::RoBind { source, target, optional } => {
                check_target(target)?;
                a.push(if *optional { "--ro-bind-try" } else { "--ro-bind" }.into());
                a.extend([source.clone(), target.clone()]);
            }
            Mount::Workspace { target } => {
                check_target(target)?;
                a.extend(["--bind".into(), workspace.display().to_string(), target.clone()]);
            }
            Mount::Tmpfs { target, size_bytes } => {
                check_target(target)?;
                a.extend(["--size".into(), size_bytes.to_string(), "--tmpfs".into(), target.clone()]);
            }
            Mount::Proc { target } => {
                check_target(target)?;
                a.extend(["--proc".into(), target.clone()]);
            }
            Mount::Dev { target } => {
                check_target(target)?;
                a.extend(["--dev".into(), target.clone()]);
            }
            Mount::Dir { target } => {
                check_target(target)?;
                a.extend(["--dir".into(), target.clone()]);
            }
            Mount::Symlink { target, link } => {
                check_target(link)?;
                a.extend(["--symlink".into(), target.clone(), link.clone()]);
            }
            Mount::File { target, contents: _ } => {
                check_target(target)?;
                let source = files.join(format!("{i}"));
                a.extend(["--ro-bind".into(), source.display().to_string(), target.clone()]);
            }
        }
    }
    a.extend(["--remount-ro".into(), "/".into()]);
    a.extend(["--chdir".into(), spec.cwd.clone()]);
    a.extend(["--seccomp".into(), SECCOMP_FD_PLACEHOLDER.into()]);
    a.push("--".into());
    a.extend(spec.argv.iter().cloned());
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SpawnSpec {
        SpawnSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec![("PATH".into(), "/usr/bin".into())],
            cwd: "/workspace".into(),
            mounts: vec![
                Mount::RoBind { source: "/usr".into(), target: "/usr".into(), optional: false },
                Mount::Workspace { target: "/workspace".into() },
            ],
            network: Network::None,
            hostname: "sandbox".into(),
            open_files: None,
        }
    }

    #[test]
    fn the_floor_is_always_there() {
        let a = args(&spec(), Path::new("/cells/x/workspace"), Path::new("/cells/x/files")).unwrap();
        for flag in [
            "--die-with-parent",
            "--new-session",
            "--unshare-user",
            "--disable-userns",
            "--unshare-pid",
            "--clearenv",
            "--unshare-net",
        ] {
            assert!(a.contains(&flag.to_string()), "{flag} missing from {a:?}");
        }
        let sec = a.iter().position(|x| x == "--seccomp").unwrap();
        assert_eq!(a[sec + 1], SECCOMP_FD_PLACEHOLDER);
        let dashdash = a.iter().position(|x| x == "--").unwrap();
        assert_eq!(&a[dashdash + 1..], ["/bin/sh", "-c", "true"]);
    }

    #[test]
    fn host_network_keeps_the_namespace() {
        let mut s = spec();
        s.network = Network::Host;
        let a = args(&s, Path::new("/w"), Path::new("/f")).unwrap();
        assert!(!a.contains(&"--unshare-net".to_string()));
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec();
        s.mounts.push(Mount::Dir { target: "relative".into() });
        assert!(args(&s, Path::new("/w"), Path::new("/f")).is_err());
        let mut s = spec();
        s.env.push(("A=B".into(), "x".into()));
        assert!(args(&s, Path::new("/w"), Path::new("/f")).is_err());
        let mut s = spec();
        s.argv.clear();
        assert!(args(&s, Path::new("/w"), Path::new("/f")).is_err());
    }
}
