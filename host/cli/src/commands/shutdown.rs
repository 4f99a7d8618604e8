//! How `crownest serve` stops. The first SIGTERM or SIGINT stops accepting
//! connections and tells every open event stream to end (each sends a last
//! comment and closes; its client resumes from the last event id it got,
//! against this server restarted or another); connections still open after
//! the deadline are dropped. A second signal at any point exits at once.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Waits for SIGTERM or SIGINT; each call waits for the next one.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Install the handlers (before anything that could take long starts).
    pub fn install() -> Result<Signals> {
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// The next SIGTERM or SIGINT.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Serve `app` on `listener` until the first signal, then stop as the
/// module says within `deadline`. `streams` is set to `true` to end the
/// event streams.
pub async fn serve<L>(
    listener: L,
    app: axum::Router,
    signals: &mut Signals,
    streams: watch::Sender<bool>,
    deadline: Duration,
) -> Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    SocketAddr: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let mut stopping = streams.subscribe();
    let server = tokio::spawn(async move {
        // The peer's address reaches the handlers (audit rows name it).
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stopping.wait_for(|s| *s).await;
            })
            .await
    });
    let mut server = server;
    tokio::select! {
        r = &mut server => return r?.map_err(Into::into),
        _ = signals.next() => {}
    }
    eprintln!(
        "crownest: shutting down: no new connections, event streams end now; open connections get {} s (a second signal exits at once)",
        deadline.as_secs()
    );
    let _ = streams.send(true);
    tokio::select! {
        r = &mut server => r??,
        _ = tokio::time::sleep(deadline) => {
            eprintln!("crownest: connections still open after {} s (shutdown_timeout_secs): closing them", deadline.as_secs());
            server.abort();
        }
        _ = signals.next() => exit_now(),
    }
    Ok(())
}

/// A second signal: leave without the rest of the shutdown.
pub fn exit_now() -> ! {
    eprintln!("crownest: second signal: exiting now");
    std::process::exit(130)
}
