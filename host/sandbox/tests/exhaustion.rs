//! Resource exhaustion and process lifecycle: every bomb is contained by its
//! sandbox's limits, and a kill or timeout leaves no process behind.

mod common;

use std::time::{Duration, Instant};

use common::*;
use crownest_sandbox::{ExitStatus, Limits};
use tokio::io::AsyncReadExt;

/// Host processes owned by `uid` (each sandbox has its own host uid).
fn host_processes_of(uid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let owner = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
        if owner == Some(uid) {
            let cmd = std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default().replace('\0', " ");
            out.push(format!("{name}: {cmd}"));
        }
    }
    out
}

async fn until_gone(uid: u32) -> Vec<String> {
    for _ in 0..200 {
        let left = host_processes_of(uid);
        if left.is_empty() {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    host_processes_of(uid)
}

#[tokio::test]
async fn fork_bomb_hits_the_pids_limit_while_another_sandbox_works() {
    let env = env();
    let bomb = env.host.create_cell("test", &unique("bomb"), limits(), vec![]).unwrap();
    let calm = env.host.create_cell("test", &unique("calm"), limits(), vec![]).unwrap();
    let s = bomb.spawn(&spec("bomb() { bomb | bomb & }; bomb; sleep 30")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let alive = host_processes_of(bomb.record().uid).len();
    assert!(alive <= 64 + 1, "{alive} processes despite pids.max = 64");
    let (o, out, _) = run(&calm, "echo still-fine").await;
    assert_eq!((o.status, out.as_str()), (ExitStatus::Exited(0), "still-fine\n"));
    s.tree.kill_tree();
    s.tree.wait().await;
    assert_eq!(until_gone(bomb.record().uid).await, Vec::<String>::new());
    bomb.destroy().unwrap();
    calm.destroy().unwrap();
}

#[tokio::test]
async fn memory_bomb_is_oom_killed_and_reported() {
    let env = env();
    let mut l = limits();
    l.memory_bytes = Some(128 << 20);
    let cell = env.host.create_cell("test", &unique("oom"), l, vec![]).unwrap();
    let (o, _, err) = run(&cell, "python3 -c 'x = []\nwhile True: x.append(bytearray(16 << 20))'").await;
    assert!(o.oom_killed, "{o:?} {err}");
    assert_eq!(o.status, ExitStatus::Signaled(9), "{err}");
    cell.destroy().unwrap();
}

#[tokio::test]
async fn disk_fill_stops_at_the_workspace_quota() {
    let env = env();
    let cell = env.host.create_cell("test", &unique("disk"), limits(), vec![]).unwrap();
    let (o, _, err) = run(&cell, "dd if=/dev/zero of=/workspace/fill bs=1M count=200").await;
    assert_eq!(o.status, ExitStatus::Exited(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let size = std::fs::metadata(cell.workspace().join("fill")).unwrap().len();
    assert!(size <= 64 << 20, "{size} bytes written past the 64 MiB quota");
    cell.destroy().unwrap();
}

#[tokio::test]
async fn invalid_utf8_and_nul_bytes_pass_through_unchanged() {
    let env = env();
    let cell = env.host.create_cell("test", &unique("bytes"), limits(), vec![]).unwrap();
    let mut s = cell.spawn(&spec("printf 'a\\377\\376\\000b\\n'")).unwrap();
    drop(s.stdin);
    let mut out = Vec::new();
    s.stdout.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"a\xff\xfe\0b\n");
    cell.destroy().unwrap();
}

#[tokio::test]
async fn sigterm_ignoring_process_is_killed_after_the_grace_period() {
    let env = env();
    let cell = env.host.create_cell("test", &unique("term"), limits(), vec![]).unwrap();
    let s = cell.spawn(&spec("trap '' TERM; echo ready; while true; do sleep 1; done")).unwrap();
    let mut stdout = s.stdout;
    let mut first = [0u8; 6];
    stdout.read_exact(&mut first).await.unwrap();
    let started = Instant::now();
    let o = s.tree.terminate(Duration::from_millis(700)).await;
    assert!(started.elapsed() >= Duration::from_millis(700), "killed before the grace period ended");
    assert_eq!(o.status, ExitStatus::Signaled(9));
    assert_eq!(until_gone(cell.record().uid).await, Vec::<String>::new());
    cell.destroy().unwrap();
}

#[tokio::test]
async fn a_process_honouring_sigterm_ends_within_the_grace_period() {
    let env = env();
    let cell = env.host.create_cell("test", &unique("term2"), limits(), vec![]).unwrap();
    let s = cell.spawn(&spec("trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done")).unwrap();
    let mut stdout = s.stdout;
    let mut first = [0u8; 6];
    stdout.read_exact(&mut first).await.unwrap();
    let o = s.tree.terminate(Duration::from_secs(30)).await;
    assert_eq!(o.status, ExitStatus::Exited(0));
    cell.destroy().unwrap();
}

#[tokio::test]
async fn kill_leaves_no_process_behind_including_daemons() {
    let env = env();
    let cell = env.host.create_cell("test", &unique("daemons"), limits(), vec![]).unwrap();
    let cmd = "(setsid sh -c 'sleep 1000 & sleep 1000' &) ; \
               (sh -c 'sleep 1000 &' &) ; \
               nohup sleep 1000 >/dev/null 2>&1 & \
               echo started; sleep 1000";
    let s = cell.spawn(&spec(cmd)).unwrap();
    let mut stdout = s.stdout;
    let mut first = [0u8; 8];
    stdout.read_exact(&mut first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let uid = cell.record().uid;
    assert!(host_processes_of(uid).len() >= 5, "{:?}", host_processes_of(uid));
    s.tree.kill_tree();
    s.tree.wait().await;
    assert_eq!(until_gone(uid).await, Vec::<String>::new());
    cell.destroy().unwrap();
}

#[tokio::test]
async fn daemons_die_with_the_main_process() {
    let env = env();
    let cell = env.host.create_cell("test", &unique("exit"), limits(), vec![]).unwrap();
    let (o, _, _) = run(&cell, "(setsid sh -c 'sleep 1000 &' &); sleep 0.2; exit 0").await;
    assert_eq!(o.status, ExitStatus::Exited(0));
    assert_eq!(until_gone(cell.record().uid).await, Vec::<String>::new());
    cell.destroy().unwrap();
}

#[tokio::test]
async fn open_files_limit_applies() {
    let env = env();
    let l = Limits { open_files: Some(64), ..limits() };
    let cell = env.host.create_cell("test", &unique("nofile"), l, vec![]).unwrap();
    let (_, out, _) = run(&cell, "ulimit -n").await;
    assert_eq!(out.trim(), "64");
    cell.destroy().unwrap();
}

#[tokio::test]
async fn rlimit_nproc_backs_up_the_pids_cgroup() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let env = env();
    let cell = env.host.create_cell("test", &unique("nproc"), limits(), vec![]).unwrap();
    let (_, out, _) = run(&cell, "grep 'Max processes' /proc/self/limits | tr -s ' ' | cut -d' ' -f3").await;
    assert_eq!(out.trim(), "66", "pids 64 + bubblewrap's 2");
    cell.destroy().unwrap();
}
