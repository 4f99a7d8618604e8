mod common;

use common::*;
use crownest_sandbox::ExitStatus;

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
