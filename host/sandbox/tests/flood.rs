//! Output floods stream through with bounded host memory. Alone in its own
//! test binary: it measures the process's RSS, which concurrent tests would
//! disturb.

mod common;

use common::*;
use crownest_sandbox::ExitStatus;
use tokio::io::AsyncReadExt;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn output_floods_stream_through_with_bounded_host_memory() {
    let env = env();
    let cell = env.host.create_cell("test", &unique("flood"), limits(), vec![]).unwrap();
    // 1 GiB in one "line" with no newline, on stdout, while stderr floods with `yes`.
    let mut s = cell.spawn(&spec("head -c 1073741824 /dev/zero; yes 2>/dev/null | head -c 100000000 >&2")).unwrap();
    drop(s.stdin);
    let before = rss_kib();
    let mut peak = before;
    let mut buf = vec![0u8; 1 << 16];
    let mut ebuf = vec![0u8; 1 << 16];
    let (mut out_total, mut err_total) = (0u64, 0u64);
    let (mut out_done, mut err_done) = (false, false);
    while !(out_done && err_done) {
        tokio::select! {
            n = s.stdout.read(&mut buf), if !out_done => { let n = n.unwrap(); out_done = n == 0; out_total += n as u64; }
            n = s.stderr.read(&mut ebuf), if !err_done => { let n = n.unwrap(); err_done = n == 0; err_total += n as u64; }
        }
        peak = peak.max(rss_kib());
    }
    assert_eq!(out_total, 1 << 30);
    assert_eq!(err_total, 100_000_000);
    assert!(peak - before < 64 * 1024, "host RSS grew by {} KiB while streaming", peak - before);
    assert_eq!(s.tree.wait().await.status, ExitStatus::Exited(0));
    cell.destroy().unwrap();
}
