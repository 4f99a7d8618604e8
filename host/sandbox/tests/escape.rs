//! Escape attempts from inside a sandbox. Each test fails if isolation is
//! broken.

mod common;

use std::io::Read;
use std::net::TcpListener;

use common::*;
use crownest_sandbox::ExitStatus;

async fn in_sandbox(cmd: &str) -> (ExitStatus, String, String) {
    let env = env();
    let cell = env.host.create_cell("test", &unique("esc"), limits(), vec![]).unwrap();
    let (o, out, err) = run(&cell, cmd).await;
    cell.destroy().unwrap();
    (o.status, out, err)
}

#[tokio::test]
async fn host_files_are_not_found_not_just_denied() {
    let secret_dir = tempfile::tempdir().unwrap();
    std::fs::write(secret_dir.path().join("crownest.db"), "secret").unwrap();
    let data = secret_dir.path().display();
    let (_, out, _) = in_sandbox(&format!(
        "for p in /etc/shadow /root /home {data} {data}/crownest.db /var/lib /sys/kernel /run; do \
           if test -e \"$p\"; then echo \"VISIBLE $p\"; else echo \"absent $p\"; fi; done"
    ))
    .await;
    assert!(!out.contains("VISIBLE"), "{out}");
    assert_eq!(out.lines().count(), 8, "{out}");
}

#[tokio::test]
async fn other_sandboxes_workspaces_are_invisible() {
    let env = env();
    let a = env.host.create_cell("test", &unique("a"), limits(), vec![]).unwrap();
    let b = env.host.create_cell("test", &unique("b"), limits(), vec![]).unwrap();
    let (o, _, _) = run(&b, "echo b-secret > /workspace/secret.txt").await;
    assert_eq!(o.status, ExitStatus::Exited(0));
    let b_path = b.workspace().join("secret.txt");
    let (_, out, _) = run(&a, &format!("cat {} 2>&1; echo listing:; ls -A /workspace", b_path.display())).await;
    assert!(out.contains("No such file or directory"), "{out}");
    assert!(!out.contains("b-secret"), "{out}");
    assert!(out.trim_end().ends_with("listing:"), "A's workspace is empty: {out}");
    // Different sandboxes run as different host uids.
    assert_ne!(a.record().uid, b.record().uid);
    a.destroy().unwrap();
    b.destroy().unwrap();
}

#[tokio::test]
async fn proc_shows_only_the_sandbox_and_sys_is_hidden() {
    let (_, out, _) = in_sandbox(
        "n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo pids=$n; \
         cat /proc/1/cmdline | tr '\\0' ' ' | cut -c1-14; echo; test -e /sys && echo SYS-VISIBLE || echo no-sys",
    )
    .await;
    let pids: u32 = out.lines().find_map(|l| l.strip_prefix("pids=")).unwrap().parse().unwrap();
    assert!(pids <= 4, "the sandbox sees {pids} processes:\n{out}");
    assert!(out.contains("/usr/bin/bwrap"), "pid 1 is the sandbox's own init:\n{out}");
    assert!(out.contains("no-sys"), "{out}");
}

#[tokio::test]
async fn only_stdio_is_open_at_start() {
    // `exec` keeps the fds the command started with; the only extra one `ls`
    // may show is its own handle on the listed directory.
    let (_, out, _) = in_sandbox("exec ls -l /proc/self/fd").await;
    let fds: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            Some((left.split_whitespace().last()?.to_string(), target.to_string()))
        })
        .collect();
    let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.starts_with(&["0", "1", "2"]), "{out}");
    for (fd, target) in &fds[3..] {
        assert!(target.starts_with("/proc/") && target.ends_with("/fd"), "unexpected fd {fd} -> {target}:\n{out}");
    }
    assert!(fds.len() <= 4, "{out}");
}

#[tokio::test]
async fn environment_holds_only_the_given_variables() {
    // The test process itself has plenty (CARGO_*, PATH, HOME...) to leak.
    assert!(std::env::vars().count() > 5);
    let (_, out, _) = in_sandbox("env | cut -d= -f1 | sort | tr '\\n' ' '").await;
    assert_eq!(out.trim(), "HOME PATH PWD", "{out}");
}

#[tokio::test]
async fn no_network_loopback_to_the_host_or_outside() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let (_, out, _) = in_sandbox(&format!(
        "bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' 2>/dev/null && echo HOST-REACHED || echo host-refused; \
         bash -c 'echo hi > /dev/tcp/1.1.1.1/80' 2>/dev/null && echo OUTSIDE-REACHED || echo outside-refused; \
         cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '"
    ))
    .await;
    assert!(out.contains("host-refused") && out.contains("outside-refused"), "{out}");
    assert!(out.trim_end().ends_with("lo"), "only loopback exists: {out}");
    let mut buf = [0u8; 8];
    match listener.accept() {
        Ok((mut s, _)) => panic!("the host listener got a connection: {:?}", s.read(&mut buf)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
}

#[tokio::test]
async fn seccomp_is_active_in_every_process() {
    let (_, out, _) =
        in_sandbox("grep Seccomp: /proc/self/status; sh -c 'sh -c \"grep Seccomp: /proc/self/status\"'").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().all(|l| l.split_whitespace().last() == Some("2")), "{out}");
}

#[tokio::test]
async fn no_new_namespaces_mounts_or_privileges() {
    let (_, out, _) = in_sandbox(
        "unshare -U true 2>/dev/null && echo UNSHARE-OK || echo unshare-refused; \
         unshare -m true 2>/dev/null && echo UNSHARE-M-OK || echo unshare-m-refused; \
         mount -t tmpfs none /tmp 2>/dev/null && echo MOUNT-OK || echo mount-refused; \
         grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status | tr '\\t' ' '",
    )
    .await;
    for expected in [
        "unshare-refused",
        "unshare-m-refused",
        "mount-refused",
        "CapEff: 0000000000000000",
        "CapPrm: 0000000000000000",
        "NoNewPrivs: 1",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[tokio::test]
async fn setuid_binaries_gain_nothing() {
    // `su` is setuid root on Debian; with no_new_privs its bit is ignored.
    let (_, out, _) =
        in_sandbox("ls -l /usr/bin/su | cut -c1-10; su -c 'id -u' root </dev/null 2>/dev/null; echo rc=$?; id -u")
            .await;
    assert!(out.starts_with("-rwsr-xr-x"), "su should be setuid on the host: {out}");
    assert!(!out.lines().any(|l| l.trim() == "0"), "something ran as root: {out}");
    assert!(out.contains("rc=") && !out.contains("rc=0"), "{out}");
}

#[tokio::test]
async fn the_root_filesystem_is_read_only() {
    let (_, out, _) = in_sandbox(
        "touch /usr/bin/evil 2>/dev/null && echo USR-WRITABLE || echo usr-ro; \
         touch /evil 2>/dev/null && echo ROOT-WRITABLE || echo root-ro; \
         touch /workspace/ok && echo ws-writable; touch /tmp/ok && echo tmp-writable",
    )
    .await;
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["usr-ro", "root-ro", "ws-writable", "tmp-writable"],
        "{out}"
    );
}

#[tokio::test]
async fn terminal_injection_is_refused() {
    // TIOCSTI on stdin (a pipe here, and a new session in any case).
    let (_, out, _) = in_sandbox(
        "python3 -c 'import fcntl,termios,sys\ntry:\n  fcntl.ioctl(0, termios.TIOCSTI, b\"x\")\n  print(\"INJECTED\")\nexcept OSError as e:\n  print(\"refused\", e.errno)'",
    )
    .await;
    assert!(out.starts_with("refused"), "{out}");
}
