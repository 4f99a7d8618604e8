//! Collecting a run's declared artifacts from its sandbox into the artifact
//! store: a regular file as it is, a directory as a `.tar.gz` of it.
//!
//! A file is read twice through the runtime provider (size and sha256
//! first: stores want them before the body). A directory is archived by
//! `tar` *inside the sandbox*, under the sandbox's own limits and with its
//! view of the files (symlinks stay symlinks; nothing outside the workspace
//! is reachable), and the archive is spooled to the data directory while it
//! is hashed, then stored like a file.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{ErrorKind, PluginError};
use crate::ports::{ArtifactStore, ByteStream, ExecSpec, ExitStatus, PutRequest, Sandbox};
use crate::runs::ids::{new_id, now_ms};
use crate::runs::model::{ArtifactSpec, Run};
use crate::runs::store::{ArtifactRecord, Store};

/// Why an artifact was not kept: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectError {
    pub code: String,
    pub message: String,
}

fn err(code: &str, message: impl Into<String>) -> CollectError {
    CollectError { code: code.to_string(), message: message.into() }
}

fn plugin_err(e: &PluginError) -> CollectError {
    let code = match e.kind {
        ErrorKind::NotFound => "artifact_not_found",
        ErrorKind::Invalid => "artifact_invalid",
        ErrorKind::Unavailable => "artifact_store_unavailable",
        _ => "artifact_error",
    };
    err(code, e.message.clone())
}

/// The exit code of the archiving script when the path is not a directory.
const NOT_A_DIRECTORY: u8 = 3;

/// A shell word for `s`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The name a directory's archive is kept under.
pub fn archive_name(name: &str) -> String {
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") { name.to_string() } else { format!("{name}.tar.gz") }
}

/// What collecting needs from the executor.
pub(crate) struct Collector<'a> {
    pub store: &'a Store,
    pub artifacts: &'a dyn ArtifactStore,
    pub max_bytes: u64,
    pub store_name: &'a str,
}

impl Collector<'_> {
    /// Keep `spec` from `sandbox`.
    pub async fn collect(
        &self,
        run: &Run,
        sandbox: &dyn Sandbox,
        spec: &ArtifactSpec,
    ) -> Result<ArtifactRecord, CollectError> {
        match sandbox.open_file(&spec.path, self.max_bytes).await {
            Ok((first, size)) => self.collect_file(run, sandbox, spec, first, size).await,
            // Not a regular file: perhaps a directory, which is archived.
            Err(e) if e.kind == ErrorKind::Invalid => match self.collect_dir(run, sandbox, spec).await {
                Err(d) if d.code == "not_a_directory" => Err(plugin_err(&e)),
                other => other,
            },
            Err(e) => Err(plugin_err(&e)),
        }
    }

    async fn collect_file(
        &self,
        run: &Run,
        sandbox: &dyn Sandbox,
        spec: &ArtifactSpec,
        mut reader: ByteStream,
        size: u64,
    ) -> Result<ArtifactRecord, CollectError> {
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut seen = 0u64;
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| err("artifact_error", e.to_string()))?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            sha.update(&buf[..n]);
        }
        if seen != size {
            return Err(err("artifact_changed", format!("`{}` changed while it was read", spec.path)));
        }
        let (body, _) = sandbox.open_file(&spec.path, self.max_bytes).await.map_err(|e| plugin_err(&e))?;
        self.keep(run, spec, &spec.name, size, hex::encode(sha.finalize()), body).await
    }

    /// Archive a directory with `tar` in the sandbox, spooled and hashed
    /// on the host, then kept as `<name>.tar.gz`.
    async fn collect_dir(
        &self,
        run: &Run,
        sandbox: &dyn Sandbox,
        spec: &ArtifactSpec,
    ) -> Result<ArtifactRecord, CollectError> {
        let script = format!(
            "p={}; [ -d \"$p\" ] || exit {NOT_A_DIRECTORY}; cd \"$p/..\" && exec tar --sort=name -czf - -- \"$(basename -- \"$p\")\"",
            quote(&spec.path)
        );
        let exec = ExecSpec { command: script, env: vec![], cwd: "/workspace".into() };
        let execution = sandbox.exec(&exec).await.map_err(|e| plugin_err(&e))?;
        let spool = Spool::create(self.store.dir()).await?;
        let mut stdout = execution.stdout;
        let mut stderr = execution.stderr;
        let errors = tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = (&mut stderr).take(4096).read_to_end(&mut text).await;
            // Whatever else it writes is drained, so tar never blocks on it.
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            String::from_utf8_lossy(&text).trim().to_string()
        });
        let copied = spool.fill(&mut stdout, self.max_bytes).await;
        if copied.is_err() {
            // Over the limit or a spool failure: stop the archiver now.
            execution.process.kill_tree();
        }
        let outcome = execution.process.wait().await;
        let errors = errors.await.unwrap_or_default();
        let (size, sha256) = copied?;
        match outcome.status {
            ExitStatus::Exited(0) => {}
            ExitStatus::Exited(NOT_A_DIRECTORY) => return Err(err("not_a_directory", "")),
            ExitStatus::Exited(127) => {
                return Err(err(
                    "artifact_error",
                    format!("`{}` is a directory, and collecting one needs `tar` in the template", spec.path),
                ));
            }
            status => {
                return Err(err(
                    "artifact_error",
                    format!("archiving the directory `{}` failed ({status:?}): {errors}", spec.path),
                ));
            }
        }
        let body = spool.reader().await?;
        self.keep(run, spec, &archive_name(&spec.name), size, sha256, body).await
    }

    async fn keep(
        &self,
        run: &Run,
        spec: &ArtifactSpec,
        name: &str,
        size: u64,
        sha256: String,
        body: ByteStream,
    ) -> Result<ArtifactRecord, CollectError> {
        let id = new_id("art");
        let req = PutRequest {
            key: format!("artifacts/{}/{}", run.id, id),
            size,
            sha256: sha256.clone(),
            content_type: None,
            metadata: vec![("name".into(), name.into()), ("run".into(), run.id.clone())],
        };
        let info = self.artifacts.put(req, body).await.map_err(|e| plugin_err(&e))?;
        let record = ArtifactRecord {
            id,
            run_id: run.id.clone(),
            project_id: run.project_id.clone(),
            name: name.into(),
            path: spec.path.clone(),
            size,
            sha256,
            store: self.store_name.to_string(),
            locator: info.locator,
            created_at_ms: now_ms(),
        };
        self.store.insert_artifact(record.clone()).await.map_err(|e| err("artifact_error", e.to_string()))?;
        Ok(record)
    }
}

/// A temporary file in `<data-dir>/tmp`, removed when dropped.
struct Spool {
    path: PathBuf,
}

impl Spool {
    async fn create(data_dir: &std::path::Path) -> Result<Spool, CollectError> {
        let dir = data_dir.join("tmp");
        tokio::fs::create_dir_all(&dir).await.map_err(|e| err("artifact_error", format!("cannot spool: {e}")))?;
        Ok(Spool { path: dir.join(new_id("spool")) })
    }

    /// Copy `from` into the spool, at most `max` bytes: (size, sha256).
    async fn fill(&self, from: &mut ByteStream, max: u64) -> Result<(u64, String), CollectError> {
        let mut file = tokio::fs::File::create(&self.path)
            .await
            .map_err(|e| err("artifact_error", format!("cannot spool: {e}")))?;
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = from.read(&mut buf).await.map_err(|e| err("artifact_error", e.to_string()))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > max {
                return Err(err("artifact_invalid", format!("the directory's archive is over the {max}-byte limit")));
            }
            sha.update(&buf[..n]);
            file.write_all(&buf[..n]).await.map_err(|e| err("artifact_error", format!("cannot spool: {e}")))?;
        }
        file.flush().await.map_err(|e| err("artifact_error", format!("cannot spool: {e}")))?;
        Ok((size, hex::encode(sha.finalize())))
    }

    async fn reader(&self) -> Result<ByteStream, CollectError> {
        let f =
            tokio::fs::File::open(&self.path).await.map_err(|e| err("artifact_error", format!("cannot spool: {e}")))?;
        Ok(Box::new(f))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_kept_as_a_tar_gz_unless_named_so() {
        assert_eq!(archive_name("site"), "site.tar.gz");
        assert_eq!(archive_name("site.tgz"), "site.tgz");
        assert_eq!(archive_name("b.tar.gz"), "b.tar.gz");
    }

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(quote("/workspace/it's here"), r"'/workspace/it'\''s here'");
    }
}
