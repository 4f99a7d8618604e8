//! Conformance checks for the `runtime-provider` world. With the sandbox
//! mechanisms available, a real sandbox is created, used and destroyed.

use std::io::Write;
use std::time::Duration;

use crownest_core::ErrorKind;
use crownest_core::ports::{ExecSpec, ExitStatus, RuntimeProvider, Sandbox, SandboxLimits, SandboxSpec};
use tokio::io::AsyncReadExt;

use super::{Suite, describe, expect_error};
use crate::guard::is_sha256_hex;
use crate::kinds::WasmRuntimeProvider;

/// A one-file `.tar.gz`, with `name` written raw (hostile names included).
fn targz(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar\x0000");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = h.to_vec();
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("in-memory write");
    gz.finish().expect("in-memory write")
}

async fn run_cmd(sbx: &dyn Sandbox, cmd: &str) -> Result<(ExitStatus, String), String> {
    let ex = sbx
        .exec(&ExecSpec { command: cmd.into(), env: vec![], cwd: "/workspace".into() })
        .await
        .map_err(|e| describe(&e))?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut so, mut se) = (ex.stdout, ex.stderr);
    let (a, b) = tokio::join!(so.read_to_end(&mut out), se.read_to_end(&mut err));
    a.and(b).map_err(|e| format!("reading the output failed: {e}"))?;
    let outcome = tokio::time::timeout(Duration::from_secs(30), ex.process.wait())
        .await
        .map_err(|_| "the process did not end within 30 s".to_string())?;
    Ok((outcome.status, String::from_utf8_lossy(&out).into_owned()))
}

pub(crate) async fn run_suite_sandbox(suite: &mut Suite, p: &WasmRuntimeProvider, template: String) {
    let id = format!("conformance-{}", std::process::id());
    let mut created: Option<Box<dyn Sandbox>> = None;
    suite
        .check("create-sandbox", async || {
            let spec = SandboxSpec {
                id: id.clone(),
                template: template.clone(),
                limits: SandboxLimits::default(),
                env: vec![],
                labels: vec![],
            };
            let s = p.create_sandbox(&spec).await.map_err(|e| describe(&e))?;
            let d = format!("sandbox `{}` from `{}`", s.info().id, s.info().template);
            created = Some(s);
            Ok(d)
        })
        .await;
    let Some(sbx) = created else { return };
    let sbx = sbx.as_ref();

    suite
        .check("exec", async || match run_cmd(sbx, "echo conformance; echo err >&2").await? {
            (ExitStatus::Exited(0), out) if out == "conformance\n" => Ok("stdout read to its end, exit 0".into()),
            other => Err(format!("expected exit 0 and `conformance`, got {other:?}")),
        })
        .await;
    suite
        .check("exec-exit-code", async || match run_cmd(sbx, "exit 3").await? {
            (ExitStatus::Exited(3), _) => Ok("exit code 3 reported".into()),
            other => Err(format!("expected exit 3, got {other:?}")),
        })
        .await;
    suite
        .check("extract-archive", async || {
            let archive = targz("hello.txt", b"from the archive");
            let r =
                sbx.extract_archive(Box::new(std::io::Cursor::new(archive)), "/workspace", Default::default()).await;
            let r = r.map_err(|e| describe(&e))?;
            match run_cmd(sbx, "cat hello.txt").await? {
                (ExitStatus::Exited(0), out) if out == "from the archive" => {
                    Ok(format!("{} entries extracted", r.entries))
                }
                other => Err(format!("the extracted file reads {other:?}")),
            }
        })
        .await;
    suite
        .check("extract-hostile-archive", async || {
            let archive = targz("../escape.txt", b"x");
            expect_error(
                sbx.extract_archive(Box::new(std::io::Cursor::new(archive)), "/workspace", Default::default()).await,
                &[ErrorKind::Invalid],
            )
        })
        .await;
    suite
        .check("write-and-open-file", async || {
            sbx.write_file("/workspace/io.txt", Box::new(&b"round trip"[..])).await.map_err(|e| describe(&e))?;
            let (mut f, size) = sbx.open_file("/workspace/io.txt", 1024).await.map_err(|e| describe(&e))?;
            let mut s = String::new();
            f.read_to_string(&mut s).await.map_err(|e| e.to_string())?;
            if (s.as_str(), size) == ("round trip", 10) {
                Ok("written and read back".into())
            } else {
                Err(format!("read back {s:?} ({size} bytes)"))
            }
        })
        .await;
    suite
        .check("open-file-outside", async || {
            expect_error(
                sbx.open_file("/etc/passwd", 1024).await.map(|_| ()),
                &[ErrorKind::Invalid, ErrorKind::NotFound],
            )
        })
        .await;
    suite
        .check("exec-empty-command", async || {
            expect_error(
                sbx.exec(&ExecSpec { command: " ".into(), env: vec![], cwd: String::new() }).await.map(|_| ()),
                &[ErrorKind::Invalid],
            )
        })
        .await;
    suite
        .check("list-sandboxes", async || {
            let ids = p.list_sandboxes().await.map_err(|e| describe(&e))?;
            if ids.contains(&id) {
                Ok(format!("{} sandboxes listed", ids.len()))
            } else {
                Err(format!("`{id}` missing from {ids:?}"))
            }
        })
        .await;
    suite
        .check("destroy", async || {
            sbx.destroy().await.map_err(|e| describe(&e))?;
            let ids = p.list_sandboxes().await.map_err(|e| describe(&e))?;
            if ids.contains(&id) {
                return Err("the sandbox is still listed after destroy".into());
            }
            p.destroy_by_id(&id)
                .await
                .map_err(|e| format!("destroying an absent sandbox must succeed; {}", describe(&e)))?;
            Ok("destroyed; destroying again by id is not an error".into())
        })
        .await;
}

pub(crate) async fn run(suite: &mut Suite, p: &WasmRuntimeProvider, with_sandbox: bool) {
    suite.check("check", async || p.check().await.map(|_| "ready".into()).map_err(|e| describe(&e))).await;
    let mut usable = None;
    suite
        .check("list-templates", async || {
            let list = p.list_templates().await.map_err(|e| describe(&e))?;
            if let Some(t) = list.iter().find(|t| !is_sha256_hex(&t.digest)) {
                return Err(format!(
                    "template `{}` has digest `{}`, not 64 lowercase hex characters",
                    t.name, t.digest
                ));
            }
            usable = list.iter().find(|t| t.usable).map(|t| t.name.clone());
            Ok(format!("{} templates, {} usable", list.len(), list.iter().filter(|t| t.usable).count()))
        })
        .await;
    suite
        .check("unknown-template", async || {
            let spec = SandboxSpec {
                id: "conformance-unknown".into(),
                template: "no-such-template".into(),
                limits: SandboxLimits::default(),
                env: vec![],
                labels: vec![],
            };
            expect_error(p.create_sandbox(&spec).await.map(|_| ()), &[ErrorKind::Invalid, ErrorKind::NotFound])
        })
        .await;
    match (with_sandbox, usable) {
        (true, Some(t)) => run_suite_sandbox(suite, p, t).await,
        (true, None) => suite.record("sandbox", false, "no usable template to create a sandbox from".into()),
        (false, _) => {
            suite.record("sandbox", true, "skipped: the sandbox mechanisms are not available to this check".into())
        }
    }
}
