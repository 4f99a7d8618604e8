//! Standby sandboxes: a new cell adopts one and its first command runs in it
//! exactly as it would have cold; anything a standby cannot reproduce goes
//! cold; standbys are never listed and never outlive their host.

mod common;

use std::time::{Duration, Instant};

use common::{env, limits, run_spec, run_with_stdin, spec, unique};
use crownest_sandbox::{ExitStatus, SandboxConfig, SandboxHost};

async fn wait_for_standby(host: &SandboxHost) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.standbys_ready() == 0 {
        assert!(Instant::now() < deadline, "no standby became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a command sees: identity, environment, directory, pid, hostname,
/// mounts and limits, and its stdin.
const PROBE: &str = "id; env -0 | tr '\\0' '\\n' | sort; pwd; echo pid=$$; hostname; \
    cat /etc/passwd; ulimit -n; cat /proc/self/cgroup | wc -l; grep -E '^Sig(Ign|Blk):' /proc/self/status; cut -d' ' -f41 /proc/self/stat; ls /workspace; read -r line; echo \"stdin=$line\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_standby_runs_the_first_command_like_a_cold_sandbox() {
    let e = env();
    let cold = e.host.create_cell("test", &unique("cold"), limits(), vec![]).unwrap();
    let mut probe = spec(PROBE);
    probe.env.push(("CROWNEST_RUN_ID".into(), "run-1".into()));
    probe.env.push(("QUOTED".into(), "it's \"here\"\nand $HOME".into()));
    std::fs::write(cold.workspace().join("marker"), "x").unwrap();
    let cold_out = run_with_stdin(&cold, &probe, b"hello\n").await;
    // The first cold spawn taught the pool this shape.
    wait_for_standby(&e.host).await;

    let id = unique("adopted");
    let warm = e.host.create_cell("test", &id, limits(), vec![("k".into(), "v".into())]).unwrap();
    assert_eq!(warm.id(), id);
    assert_eq!(e.host.standbys_ready(), 0, "the standby was adopted");
    // Files written after the standby started are visible to the command.
    std::fs::write(warm.workspace().join("marker"), "x").unwrap();
    let warm_out = run_with_stdin(&warm, &probe, b"hello\n").await;
    assert_eq!(warm_out.0.status, ExitStatus::Exited(0), "{warm_out:?}");
    let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    let (c, w) = (lines(&cold_out.1), lines(&warm_out.1));
    assert_eq!(c.len(), w.len(), "cold:\n{}\nwarm:\n{}", cold_out.1, warm_out.1);
    for (a, b) in c.iter().zip(&w) {
        // Only the host uid differs (one per sandbox); inside, both are 1000.
        assert_eq!(a, b, "cold:\n{}\nwarm:\n{}", cold_out.1, warm_out.1);
    }
    assert!(warm_out.1.contains("QUOTED=it's \"here\""));
    assert!(warm_out.1.contains("stdin=hello"));

    // The adopted cell is an ordinary cell under its id.
    assert!(e.host.list_cells("test").contains(&id));
    let mut expected = vec![cold.id().to_string(), id.clone()];
    expected.sort();
    assert_eq!(e.host.list_cells("test"), expected, "standbys are not listed");
    let reopened = e.host.open_cell("test", &id).unwrap();
    assert_eq!(reopened.record().labels, vec![("k".to_string(), "v".to_string())]);
    // A second command in the same cell is a plain cold spawn.
    let (o, out, _) = run_spec(&reopened, &spec("cat marker")).await;
    assert_eq!((o.status, out.as_str()), (ExitStatus::Exited(0), "x"));
    warm.destroy().unwrap();
    assert!(!e.host.list_cells("test").contains(&id));
    assert!(e.host.open_cell("test", &id).is_err());
    cold.destroy().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_shape_goes_cold_and_the_standby_is_gone() {
    let e = env();
    let first = e.host.create_cell("test", &unique("a"), limits(), vec![]).unwrap();
    let (o, _, _) = run_spec(&first, &spec("true")).await;
    assert_eq!(o.status, ExitStatus::Exited(0));
    wait_for_standby(&e.host).await;
    let second = e.host.create_cell("test", &unique("b"), limits(), vec![]).unwrap();
    let mut other = spec("hostname; ps -e -o comm= | sort");
    other.hostname = "elsewhere".into();
    let (o, out, err) = run_spec(&second, &other).await;
    assert_eq!(o.status, ExitStatus::Exited(0), "{err}");
    assert!(out.starts_with("elsewhere\n"), "{out}");
    assert!(!out.contains("sh\nsh"), "the standby's shell is gone: {out}");
    // A command that kills the tree still works in the new cell.
    let (o, _, _) = run_spec(&second, &spec("kill -9 $$")).await;
    assert_eq!(o.status, ExitStatus::Signaled(9));
    first.destroy().unwrap();
    second.destroy().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_runs_under_the_cells_limits() {
    let e = env();
    let first = e.host.create_cell("test", &unique("a"), limits(), vec![]).unwrap();
    run_spec(&first, &spec("true")).await;
    wait_for_standby(&e.host).await;
    let cell = e.host.create_cell("test", &unique("b"), limits(), vec![]).unwrap();
    // The pids limit (64) holds for a fork bomb in the adopted standby.
    let bomb = "(for i in $(seq 100); do sleep 5 >/dev/null 2>&1 & done) 2>/dev/null || echo limited";
    let (o, out, _) = run_spec(&cell, &spec(bomb)).await;
    assert_eq!((o.status, out.as_str()), (ExitStatus::Exited(0), "limited\n"), "100 processes under a limit of 64");
    // And kill-tree reaches what it left behind.
    cell.kill_all();
    first.destroy().unwrap();
    cell.destroy().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_do_not_outlive_their_host() {
    let root = tempfile::Builder::new().prefix("crownest-sbx-").tempdir_in("/tmp").unwrap();
    let mut cfg = SandboxConfig::defaults(env!("CARGO_BIN_EXE_crownest-sandbox-jail").into());
    cfg.root = root.path().join("cells");
    let host = SandboxHost::new(cfg.clone()).unwrap();
    let cell = host.create_cell("test", &unique("a"), limits(), vec![]).unwrap();
    run_spec(&cell, &spec("true")).await;
    wait_for_standby(&host).await;
    let cells = cfg.root.join(&cfg.installation).join("test");
    let on_disk = || std::fs::read_dir(&cells).unwrap().count();
    assert_eq!(on_disk(), 2, "the cell and one standby");
    // A standby is nobody's sandbox: it cannot be opened by its name.
    let standby_name = std::fs::read_dir(&cells)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n != cell.id())
        .unwrap();
    assert!(host.open_cell("test", &standby_name).is_err());
    // Another process inspecting the installation touches nothing.
    let inspector = SandboxHost::new(cfg.clone()).unwrap();
    assert_eq!(on_disk(), 2, "a host that does not serve reaps nothing");
    drop(inspector);
    // A restarted server (the standby processes died with the old one)
    // destroys the standby's cell and keeps the real one.
    let again = SandboxHost::new(cfg.clone()).unwrap();
    again.reap_standbys();
    assert_eq!(again.list_cells("test"), vec![cell.id().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir(&cells)
        .unwrap()
        .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().contains("deleted"))
        .count()
        != 1
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Closing a host destroys its ready standbys.
    host.close_standbys();
    assert_eq!(host.standbys_ready(), 0);
    cell.destroy().unwrap();
}
