//! What a local server leaves in its data directory for the CLI:
//! `server.json` (its process id and the URL it actually serves, written
//! once it is listening, removed when it stops cleanly) and
//! `credentials.json` (the first admin token and API key, mode 0600).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// `<data-dir>/server.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFile {
    pub pid: u32,
    /// Where clients reach the server: `http://<bound address>`, loopback
    /// for a server bound to every address.
    pub url: String,
}

/// `<data-dir>/credentials.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub api_key: String,
    pub admin_token: String,
    pub org_id: String,
    pub project_id: String,
}

pub fn server_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join("server.json")
}

pub fn credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join("credentials.json")
}

/// The URL clients use for a server bound to `addr`: an unspecified
/// address (`0.0.0.0`, `::`) is reached on loopback.
pub fn url_for(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// The URL for a configured `listen` value (`host:port`), without binding.
pub fn url_for_listen(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(addr) => url_for(addr),
        Err(_) => format!("http://{listen}"),
    }
}

/// Whether process `pid` exists (it may belong to another user).
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// The server.json of a server still running (a file left by one that was
/// killed is ignored).
pub fn read_live(data_dir: &Path) -> Option<ServerFile> {
    let text = std::fs::read_to_string(server_file_path(data_dir)).ok()?;
    let file: ServerFile = serde_json::from_str(&text).ok()?;
    alive(file.pid).then_some(file)
}

/// Removes server.json when the server stops (if it is still ours).
pub struct ServerFileGuard {
    path: PathBuf,
}

impl Drop for ServerFileGuard {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str::<ServerFile>(&t).ok())
            .is_some_and(|f| f.pid == std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Write server.json for this process serving `url` (atomically: a reader
/// never sees half a file).
pub fn write_server_file(data_dir: &Path, url: &str) -> Result<ServerFileGuard> {
    let path = server_file_path(data_dir);
    let body = serde_json::to_vec_pretty(&ServerFile { pid: std::process::id(), url: url.to_string() })?;
    let tmp = data_dir.join(format!(".server.json.{}", std::process::id()));
    std::fs::write(&tmp, body).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(ServerFileGuard { path })
}

/// Write credentials.json (mode 0600, never overwriting one).
pub fn write_credentials(data_dir: &Path, c: &Credentials) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = credentials_path(data_dir);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(&serde_json::to_vec_pretty(c)?)?;
    f.sync_all()?;
    Ok(path)
}

/// Read credentials.json, `None` when there is none.
pub fn read_credentials(data_dir: &Path) -> Result<Option<Credentials>> {
    let path = credentials_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    serde_json::from_str(&text).map(Some).with_context(|| format!("{} is not a credentials file", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_reached_on_loopback() {
        assert_eq!(url_for("0.0.0.0:7878".parse().unwrap()), "http://127.0.0.1:7878");
        assert_eq!(url_for("[::]:9".parse().unwrap()), "http://[::1]:9");
        assert_eq!(url_for("10.0.0.2:80".parse().unwrap()), "http://10.0.0.2:80");
        assert_eq!(url_for_listen("localhost:7878"), "http://localhost:7878");
    }

    #[test]
    fn server_json_is_ours_while_we_live_and_gone_after() {
        let dir = tempfile::tempdir().unwrap();
        let guard = write_server_file(dir.path(), "http://127.0.0.1:1").unwrap();
        let live = read_live(dir.path()).unwrap();
        assert_eq!((live.pid, live.url.as_str()), (std::process::id(), "http://127.0.0.1:1"));
        drop(guard);
        assert!(!server_file_path(dir.path()).exists());
        // A file of a process that is gone is not a live server.
        std::fs::write(server_file_path(dir.path()), r#"{"pid": 4194305, "url": "http://127.0.0.1:2"}"#).unwrap();
        assert!(read_live(dir.path()).is_none());
    }
}
