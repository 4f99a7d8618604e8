mod common;

use common::*;
use crownest_sandbox::ExitStatus;
use tokio::io::AsyncReadExt as _;

#[tokio::test]
async fn a_command_runs_and_reports_its_exit_code() {
    let env = env();
    let cell = env.host.create_cell("test", &unique("smoke"), limits(), vec![]).unwrap();
    let (o, out, err) = run(&cell, "echo hello; id; echo oops >&2; exit 3").await;
    assert_eq!(o.status, ExitStatus::Exited(3), "stdout {out} stderr {err}");
    assert!(out.starts_with("hello\n"), "{out}");
    assert!(err.contains("oops"), "{err}");
    cell.destroy().unwrap();
}

/// The host ignores SIGPIPE (Rust's runtime does), and an ignored signal
/// survives `exec`: unless the jail resets it, `yes | head -c 1` in a
/// sandbox prints "Broken pipe" instead of ending quietly, and a producer
/// that does not check its writes never ends at all.
#[tokio::test]
async fn commands_start_with_default_signal_dispositions() {
    let env = env();
    let cell = env.host.create_cell("test", &unique("signals"), limits(), vec![]).unwrap();
    let (o, out, err) = run(&cell, "grep -E '^Sig(Ign|Blk):' /proc/self/status; yes | head -c 1 >/dev/null").await;
    assert_eq!(o.status, ExitStatus::Exited(0), "stdout {out} stderr {err}");
    assert_eq!(err, "", "a producer killed by SIGPIPE says nothing");
    let mask = |name: &str| {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {out}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE is not ignored: {out}");
    assert_eq!(mask("SigBlk:"), 0, "no signal is blocked: {out}");
    cell.destroy().unwrap();
}

/// Every process of a sandbox runs under `SCHED_BATCH` (policy 3, field 41
/// of `/proc/self/stat`), a grandchild of the command included, unless the
/// host is configured for the normal policy (0).
#[tokio::test]
async fn commands_run_under_the_configured_scheduling_policy() {
    for (batch, policy) in [(true, "3"), (false, "0")] {
        let env = env_with(|c| c.batch_scheduling = batch);
        let cell = env.host.create_cell("test", &unique("sched"), limits(), vec![]).unwrap();
        let (o, out, err) =
            run(&cell, "cut -d' ' -f41 /proc/self/stat; sh -c 'cut -d\" \" -f41 /proc/self/stat'").await;
        assert_eq!(o.status, ExitStatus::Exited(0), "stdout {out} stderr {err}");
        assert_eq!(out, format!("{policy}\n{policy}\n"), "batch_scheduling = {batch}");
        cell.destroy().unwrap();
    }
}

/// A sandbox dies with the server (the jail asks for SIGKILL when its
/// parent goes), and Linux ties that signal to the *thread* that forked
/// it: a sandbox started from a thread that then ends (a blocking-pool
/// thread retiring after 10 idle seconds, a runtime worker that ran
/// `block_in_place`) must live on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_outlives_the_thread_that_started_it() {
    let env = env();
    let cell = std::sync::Arc::new(env.host.create_cell("test", &unique("thread"), limits(), vec![]).unwrap());
    let (c, rt) = (cell.clone(), tokio::runtime::Handle::current());
    let spawned = std::thread::spawn(move || {
        let _in_runtime = rt.enter();
        let s = c.spawn(&spec("sleep 1; echo survived")).unwrap();
        // Ends once the sandbox is up (a thread gone before the jail asked
        // for the signal would prove nothing).
        std::thread::sleep(std::time::Duration::from_millis(300));
        s
    })
    .join()
    .unwrap();
    let mut out = String::new();
    let mut stdout = spawned.stdout;
    stdout.read_to_string(&mut out).await.unwrap();
    let o = spawned.tree.wait().await;
    assert_eq!((o.status, out.as_str()), (ExitStatus::Exited(0), "survived\n"));
    cell.destroy().unwrap();
}
