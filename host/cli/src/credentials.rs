//! Which server the API client commands talk to, and with which credential.
//!
//! The server: `CROWNEST_API_URL` (with or without a trailing `/v1`), else
//! the local server of the data directory (`--data-dir`, or `data_dir` in
//! the config): the URL in its `server.json` while that server runs, else
//! its configured `listen` address (default `127.0.0.1:7878`).
//!
//! The credential, first found wins:
//! 1. the explicit one: `CROWNEST_API_KEY` (API key commands),
//!    `CROWNEST_ADMIN_TOKEN` (admin commands); `projects list` takes
//!    either, the admin token first;
//! 2. the data directory's `credentials.json`, but only when the server is
//!    that data directory's own local server: a local key or admin token
//!    is never sent to another host;
//! 3. otherwise the command stops (exit 2) and says which variable to set.

use std::path::Path;

use anyhow::Result;
use crownest_client::{Client, base_url};
use crownest_core::config::Config;
use reqwest::Url;

use crate::context::Context;
use crate::exit::usage;
use crate::local_server::{self, Credentials};

/// The credential a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// An API key (runs, artifacts, usage, audit, sandboxes).
    ApiKey,
    /// The admin credential (keys, creating projects, `audit list --admin`).
    Admin,
    /// Either; the admin token when there is one (`projects list`).
    Either,
}

/// Where the local server of `config`'s data directory is reached.
pub fn local_url(config: &Config) -> String {
    match local_server::read_live(&config.data_dir()) {
        Some(file) => file.url,
        None => local_server::url_for_listen(config.listen.as_deref().unwrap_or("127.0.0.1:7878")),
    }
}

/// Whether `a` and `b` are the same server: same scheme and port, and the
/// same host or both loopback (`localhost`, `127.0.0.1` and `::1` are one
/// machine's own server).
fn same_server(a: &str, b: &str) -> bool {
    let (Ok(a), Ok(b)) = (Url::parse(a), Url::parse(b)) else { return false };
    let loopback = |u: &Url| {
        let host = u.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    };
    a.scheme() == b.scheme()
        && a.port_or_known_default() == b.port_or_known_default()
        && (a.host_str() == b.host_str() || (loopback(&a) && loopback(&b)))
        && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The client for a command needing `need`.
pub fn client(ctx: &Context, need: Need) -> Result<Client> {
    let config = ctx.config()?;
    let local = local_url(&config);
    let base = match env("CROWNEST_API_URL") {
        Some(raw) => base_url::normalize(&raw).map_err(|e| usage(format!("CROWNEST_API_URL: {e}")))?,
        None => base_url::normalize(&local).map_err(|e| {
            usage(format!(
                "the local server's address is not usable ({e}): fix `listen` in the config, or set CROWNEST_API_URL"
            ))
        })?,
    };
    let explicit = match need {
        Need::ApiKey => env("CROWNEST_API_KEY"),
        Need::Admin => env("CROWNEST_ADMIN_TOKEN"),
        Need::Either => env("CROWNEST_ADMIN_TOKEN").or_else(|| env("CROWNEST_API_KEY")),
    };
    let key = match explicit {
        Some(key) => key,
        None => local_credential(&config.data_dir(), &base, &local, need)?,
    };
    Ok(Client::try_new(base, key)?)
}

/// The credential from the data directory's credentials.json, for its own
/// local server only.
fn local_credential(data_dir: &Path, base: &str, local: &str, need: Need) -> Result<String> {
    let var = match need {
        Need::ApiKey => "CROWNEST_API_KEY",
        Need::Admin => "CROWNEST_ADMIN_TOKEN",
        Need::Either => "CROWNEST_ADMIN_TOKEN or CROWNEST_API_KEY",
    };
    let path = local_server::credentials_path(data_dir);
    if !same_server(base, local) {
        return Err(usage(format!(
            "no credential for {base}: set {var}. The local credentials ({}) belong to the server of that data \
             directory ({local}) and are never sent anywhere else",
            path.display()
        )));
    }
    let Some(Credentials { api_key, admin_token, .. }) = local_server::read_credentials(data_dir)? else {
        return Err(usage(format!(
            "no credential for {base}: set {var}, or start a local server (`crownest serve`), which writes {}",
            path.display()
        )));
    };
    Ok(match need {
        Need::ApiKey => api_key,
        Need::Admin | Need::Either => admin_token,
    })
}

#[cfg(test)]
mod tests {
    use super::same_server;

    #[test]
    fn loopback_names_are_one_server_and_other_hosts_are_not() {
        assert!(same_server("http://127.0.0.1:7878", "http://localhost:7878"));
        assert!(same_server("http://[::1]:7878", "http://127.0.0.1:7878"));
        assert!(!same_server("http://127.0.0.1:7878", "http://127.0.0.1:7879"));
        assert!(!same_server("https://127.0.0.1:7878", "http://127.0.0.1:7878"));
        assert!(!same_server("http://crownest.example:7878", "http://127.0.0.1:7878"));
        assert!(!same_server("http://10.0.0.5:7878", "http://10.0.0.6:7878"));
        assert!(same_server("http://10.0.0.5:7878", "http://10.0.0.5:7878"));
    }
}
