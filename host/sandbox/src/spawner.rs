//! The one thread that starts sandbox processes.
//!
//! A sandbox dies with the server: its jail asks for SIGKILL when its parent
//! goes (`PR_SET_PDEATHSIG`, as bubblewrap's `--die-with-parent` does), so a
//! killed server leaves nothing running. Linux ties that signal to the
//! *thread* that forked the process, not to the process: a sandbox started
//! from a blocking-pool thread was killed when that thread retired (tokio
//! ends threads idle for 10 s, and a runtime worker that ran
//! `block_in_place` ends up one of them), taking a long command or a warm
//! standby with it. Every sandbox process is therefore forked by this
//! thread, which lives as long as the process.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel, sync_channel};

type Job = Box<dyn FnOnce() + Send>;

/// The spawner's queue, started on first use; why it could not start, if
/// it could not (every sandbox start then fails with that reason).
fn spawner() -> io::Result<&'static Sender<Job>> {
    static SPAWNER: OnceLock<Result<Sender<Job>, String>> = OnceLock::new();
    let started = SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("crownest-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map(|_| tx)
            .map_err(|e| format!("cannot start the sandbox spawner thread: {e}"))
    });
    started.as_ref().map_err(|e| io::Error::other(e.clone()))
}

/// Start `cmd` from the spawner thread, in the caller's tokio runtime (the
/// child is reaped by it). Blocks for the fork and exec only.
pub fn spawn(mut cmd: tokio::process::Command) -> io::Result<tokio::process::Child> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| io::Error::other("sandbox processes are started from within a tokio runtime"))?;
    let (done, result) = sync_channel(1);
    let job: Job = Box::new(move || {
        let _in_runtime = runtime.enter();
        let _ = done.send(cmd.spawn());
    });
    spawner()?.send(job).map_err(|_| io::Error::other("the sandbox spawner thread is gone"))?;
    result.recv().map_err(|_| io::Error::other("the sandbox spawner thread is gone"))?
}
