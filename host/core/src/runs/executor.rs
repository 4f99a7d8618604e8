//! The run executor: takes a queued run through sandbox creation, archive
//! extraction, the command, artifact collection, evidence and cleanup.
//!
//! Every path ends in `finish`: the terminal event, the final status and the
//! Evidence Bundle in one transaction. A failure at any step becomes a
//! `failed` run with a stable `failureReason`; the sandbox is destroyed
//! unless the run asked to keep it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};

use crate::error::{ErrorKind, PluginError};
use crate::ports::{
    ArchiveWarning, ArtifactStore, ExecSpec, ExitStatus, ExtractProgress, RuntimeProvider, Sandbox, SandboxLimits,
    SandboxSpec,
};
use crate::runs::collect::{CollectError, Collector};
use crate::runs::evidence::StreamStats;
use crate::runs::hub::EventHub;
use crate::runs::metering::{Lease, Metering, stop_code};
use crate::runs::model::{ArchiveWarningEvent, EventType, Run, RunStatus};
use crate::runs::output::{self, OutputSettings};
use crate::runs::store::{AuditEvent, Finish, Store, Transition};

/// Executor settings.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    pub output: OutputSettings,
    /// SIGTERM → SIGKILL grace on timeout and cancel.
    pub kill_grace: Duration,
    /// Largest artifact kept.
    pub max_artifact_bytes: u64,
    /// Runs executing at once; more wait in `queued`.
    pub max_concurrent_runs: usize,
    /// Name of the artifact store plugin (recorded with each artifact).
    pub artifact_store_name: String,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings {
            output: OutputSettings::default(),
            kill_grace: Duration::from_secs(5),
            max_artifact_bytes: 1 << 30,
            max_concurrent_runs: 64,
            artifact_store_name: "artifact-store".into(),
        }
    }
}

/// The backends a run needs.
#[derive(Clone)]
pub struct Backends {
    pub runtime: Arc<dyn RuntimeProvider>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub metering: Arc<Metering>,
}

/// Drives runs. One per server.
pub struct Executor {
    store: Store,
    hub: Arc<EventHub>,
    backends: Backends,
    settings: ExecutorSettings,
    slots: Arc<Semaphore>,
    cancels: Mutex<HashMap<String, Arc<Notify>>>,
    /// Sandboxes kept by finished runs, for reuse by `sandboxId`.
    kept: Mutex<HashMap<String, Arc<dyn Sandbox>>>,
}

/// What `kill_kept` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillOutcome {
    Killed,
    /// A run is using the sandbox right now (cancel the run instead).
    Busy,
    /// Not a kept sandbox (never kept, or already destroyed).
    Gone,
}

/// How a run ended, before it is written.
struct Ending {
    status: RunStatus,
    exit_code: Option<i32>,
    reason: Option<&'static str>,
    message: Option<String>,
}

impl Ending {
    fn failed(reason: &'static str, message: impl Into<String>) -> Ending {
        Ending { status: RunStatus::Failed, exit_code: None, reason: Some(reason), message: Some(message.into()) }
    }
}

/// Everything gathered while running, for the evidence.
#[derive(Default)]
struct Gathered {
    streams: Vec<(String, StreamStats)>,
    extract: Option<Value>,
    artifact_errors: Vec<Value>,
    metering: Option<Value>,
}

/// A run that asked for its artifacts (`requireArtifacts`) fails when one
/// could not be collected, although its command succeeded.
fn require_artifacts(run: &Run, ending: Ending, g: &Gathered) -> Ending {
    if !run.spec.require_artifacts || ending.status != RunStatus::Succeeded || g.artifact_errors.is_empty() {
        return ending;
    }
    let names: Vec<&str> = g.artifact_errors.iter().filter_map(|e| e["name"].as_str()).collect();
    Ending {
        status: RunStatus::Failed,
        exit_code: ending.exit_code,
        reason: Some("artifacts_missing"),
        message: Some(format!(
            "the command succeeded, but {} required artifact(s) could not be collected: {}",
            names.len(),
            names.join(", ")
        )),
    }
}

/// A command's environment on top of its template's: the run's id, `CI`
/// (runs are non-interactive: tools pick their CI behaviour), then what the
/// run asked for, plain and secret (a run may override `CI`).
fn command_env(run: &Run, secrets: std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut env = vec![("CROWNEST_RUN_ID".to_string(), run.id.clone()), ("CI".to_string(), "true".to_string())];
    for (k, v) in run.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).chain(secrets) {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    }
    env
}

fn sandbox_failure(e: &PluginError) -> &'static str {
    match e.kind {
        ErrorKind::QuotaExceeded => "quota_exceeded",
        ErrorKind::Invalid => "invalid_request",
        _ => "sandbox_error",
    }
}

impl Executor {
    pub fn new(store: Store, hub: Arc<EventHub>, backends: Backends, settings: ExecutorSettings) -> Arc<Executor> {
        let slots = Arc::new(Semaphore::new(settings.max_concurrent_runs.max(1)));
        Arc::new(Executor { store, hub, backends, settings, slots, cancels: Mutex::default(), kept: Mutex::default() })
    }

    /// The name artifact records carry for the active artifact store.
    pub fn artifact_store_name(&self) -> &str {
        &self.settings.artifact_store_name
    }

    pub fn hub(&self) -> &Arc<EventHub> {
        &self.hub
    }

    async fn event(&self, run_id: &str, kind: EventType, data: Value) {
        match self.store.append_events(run_id.to_string(), vec![(kind, data)]).await {
            Ok(evs) => {
                if let Some(e) = evs.last() {
                    self.hub.notify(run_id, e.seq);
                }
            }
            Err(e) => tracing::error!(run_id, "cannot store event: {e}"),
        }
    }

    fn cancel_signal(&self, run_id: &str) -> Arc<Notify> {
        self.cancels.lock().unwrap_or_else(|e| e.into_inner()).entry(run_id.to_string()).or_default().clone()
    }

    /// Start executing a queued run in the background.
    pub fn spawn(self: &Arc<Self>, run_id: String) {
        let this = self.clone();
        let cancel = self.cancel_signal(&run_id);
        tokio::spawn(async move {
            let _slot = this.slots.clone().acquire_owned().await;
            this.execute(&run_id, cancel).await;
            this.cancels.lock().unwrap_or_else(|e| e.into_inner()).remove(&run_id);
        });
    }

    /// Ask a run to stop; a run not executing yet is finished right here.
    pub async fn cancel(&self, run: &Run) {
        let executing = self.cancels.lock().unwrap_or_else(|e| e.into_inner()).get(&run.id).cloned();
        match executing {
            // notify_one keeps a permit, so a cancel racing the executor's
            // first check is not lost.
            Some(n) => n.notify_one(),
            None if !run.status.is_terminal() => {
                let ending = Ending {
                    status: RunStatus::Canceled,
                    exit_code: None,
                    reason: Some("canceled"),
                    message: Some("canceled before it ran".into()),
                };
                self.finish(run, ending, Gathered::default()).await;
            }
            None => {}
        }
    }

    async fn finish(&self, run: &Run, e: Ending, g: Gathered) {
        let f = Finish {
            status: e.status,
            exit_code: e.exit_code,
            failure_reason: e.reason.map(String::from),
            failure_message: e.message,
            streams: g.streams,
            extract: g.extract,
            metering: g.metering,
            artifact_errors: g.artifact_errors,
        };
        match self.store.finish_run(run.id.clone(), f).await {
            Ok(Some((terminal, _))) => {
                let ms = |from: Option<u64>, to: Option<u64>| match (from, to) {
                    (Some(a), Some(b)) if b >= a => Some(Duration::from_millis(b - a)),
                    _ => None,
                };
                crate::metrics::record::run_finished(
                    e.status.as_str(),
                    e.reason,
                    ms(run.started_at_ms, Some(crate::runs::ids::now_ms())),
                    ms(run.queued_at_ms, run.started_at_ms),
                );
                tracing::debug!(run_id = %run.id, "step: terminal committed");
                self.hub.notify(&run.id, terminal.seq);
                tracing::info!(run_id = %run.id, status = %e.status, "run finished");
            }
            Ok(None) => {}
            Err(err) => tracing::error!(run_id = %run.id, "cannot finish run: {err}"),
        }
        self.hub.close(&run.id);
    }

    async fn execute(&self, run_id: &str, cancel: Arc<Notify>) {
        let run = match self.store.get_run(run_id.to_string()).await {
            Ok(r) => r,
            Err(e) => return tracing::error!(run_id, "cannot load run: {e}"),
        };
        if run.status != RunStatus::Queued {
            return;
        }
        let mut g = Gathered::default();
        // Admitted by the meter before anything is created.
        let sandbox_id = run.spec.sandbox_id.clone().unwrap_or_else(|| crate::runs::ids::sandbox_id_for_run(&run.id));
        let lease = match self.backends.metering.lease(&sandbox_id) {
            Some(l) => Some(l),
            None => {
                match self.backends.metering.begin(&sandbox_id, &run.org_id, &run.project_id, &run.spec.template).await
                {
                    Ok(l) => l,
                    Err(e) => {
                        let code =
                            if e.kind == ErrorKind::QuotaExceeded { "quota_exceeded" } else { "metering_unavailable" };
                        self.event(run_id, EventType::Error, json!({"code": code, "message": e.message})).await;
                        return self
                            .finish(
                                &run,
                                Ending::failed(
                                    if code == "quota_exceeded" { "quota_exceeded" } else { "sandbox_error" },
                                    e.message,
                                ),
                                g,
                            )
                            .await;
                    }
                }
            }
        };
        tracing::debug!(run_id, "step: metering admitted");
        let (sandbox, reused) = match self.sandbox_for(&run).await {
            Ok(s) => s,
            Err(e) => {
                self.backends.metering.end(&sandbox_id, false).await;
                self.event(run_id, EventType::Error, json!({"code": sandbox_failure(&e), "message": e.message})).await;
                return self.finish(&run, Ending::failed(sandbox_failure(&e), e.message), g).await;
            }
        };
        let info = sandbox.info().clone();
        tracing::debug!(run_id, sandbox_id = %info.id, reused, "step: sandbox ready");
        let started = Instant::now();
        // The archive is opened while the transition commits (opening
        // only reads; nothing is written or sent before `running`).
        let open_archive = async {
            match &run.archive {
                Some(a) => Some(self.backends.artifacts.get(&a.locator).await),
                None => None,
            }
        };
        let transition = self.store.transition(
            run_id.to_string(),
            Transition::Running { sandbox_id: info.id.clone(), template_digest: info.template_digest.clone() },
            (
                EventType::Status,
                json!({"status": "running", "sandboxId": info.id, "template": info.template, "templateDigest": info.template_digest}),
            ),
        );
        let (transitioned, archive) = tokio::join!(transition, open_archive);
        let run = match transitioned {
            Ok((r, e)) => {
                self.hub.notify(run_id, e.seq);
                r
            }
            Err(e) => {
                tracing::error!(run_id, "cannot mark running: {e}");
                return self.cleanup(&run, sandbox, reused).await;
            }
        };

        tracing::debug!(run_id, "step: running");
        let ending = self.run_in(&run, archive, sandbox.as_ref(), reused, &cancel, lease.as_deref(), &mut g).await;
        self.collect_artifacts(&run, sandbox.as_ref(), &mut g).await;
        let ending = require_artifacts(&run, ending, &g);
        tracing::debug!(run_id, "step: artifacts collected");
        g.metering = if run.spec.keep_sandbox {
            // The kept sandbox stays metered; the run's share is its own time.
            lease.as_ref().map(|l| {
                let d = started.elapsed();
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                json!({
                    "computeUnitSeconds": secs * u64::from(l.subject.compute_units),
                    "computeUnits": l.subject.compute_units,
                    "pricingVersion": l.admission.pricing_version,
                    "bucket": l.admission.bucket,
                    "sandboxKept": true,
                })
            })
        } else {
            self.backends.metering.end(&info.id, true).await
        };
        tracing::debug!(run_id, "step: metered");
        self.finish(&run, ending, g).await;
        self.cleanup(&run, sandbox, reused).await;
        tracing::debug!(run_id, "step: cleaned up");
    }

    /// The sandbox to run in: a kept one by id, or a new one.
    async fn sandbox_for(&self, run: &Run) -> Result<(Arc<dyn Sandbox>, bool), PluginError> {
        if let Some(id) = &run.spec.sandbox_id {
            let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
            let sandbox: Arc<dyn Sandbox> = match kept {
                Some(s) => s,
                None => Arc::from(self.backends.runtime.open_sandbox(id).await?),
            };
            return Ok((sandbox, true));
        }
        let spec = SandboxSpec {
            id: crate::runs::ids::sandbox_id_for_run(&run.id),
            template: run.spec.template.clone(),
            limits: SandboxLimits { timeout_ms: run.spec.timeout_ms, ..SandboxLimits::default() },
            env: vec![("CROWNEST_RUN_ID".into(), run.id.clone())],
            labels: vec![("crownest.run".into(), run.id.clone()), ("crownest.project".into(), run.project_id.clone())],
        };
        Ok((Arc::from(self.backends.runtime.create_sandbox(&spec).await?), false))
    }

    /// Extract the archive (`opened` from the artifact store) and run the
    /// command.
    #[allow(clippy::too_many_arguments)]
    async fn run_in(
        &self,
        run: &Run,
        opened: Option<Result<crate::ports::ByteStream, PluginError>>,
        sandbox: &dyn Sandbox,
        reused: bool,
        cancel: &Notify,
        lease: Option<&Lease>,
        g: &mut Gathered,
    ) -> Ending {
        let run_id = run.id.as_str();
        let (Some(archive), Some(opened)) = (&run.archive, opened) else {
            return Ending::failed("archive_missing", "the run has no archive");
        };
        // A reused sandbox keeps its workspace; the archive goes on top.
        let _ = reused;
        let stream = match opened {
            Ok(s) => s,
            Err(e) => return Ending::failed("archive_unavailable", format!("cannot read the stored archive: {e}")),
        };
        let store = self.store.clone();
        let hub = self.hub.clone();
        let id = run_id.to_string();
        let total = archive.size_bytes;
        // Progress events every 250 ms, from 250 ms in (plus the final
        // report): an archive extracted sooner has only its final report,
        // one commit fewer before its command starts.
        let last = Arc::new(Mutex::new(Instant::now()));
        // The final report waits for the events written before it.
        let pending: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>> = Arc::default();
        let events = ArchiveEvents { store, hub, id, pending: pending.clone() };
        let reports = events.clone();
        let on_progress = move |bytes: u64, entries: u64| {
            let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
            if l.elapsed() < Duration::from_millis(250) {
                return;
            }
            *l = Instant::now();
            reports.append(json!({"contentBytes": bytes, "entries": entries, "archiveBytes": total}));
        };
        // Each entry left out (a symlink pointing outside the workspace) is
        // an event of its own, before the final report.
        let on_warning = move |warning: ArchiveWarning| {
            events.append(serde_json::to_value(ArchiveWarningEvent { warning }).unwrap_or_default());
        };
        // Strict runs refuse such an archive instead. Not strict by default:
        // a repository with one dangling absolute symlink (a dev machine's
        // path) should still build. The one place this is decided.
        let strict_archive = run.spec.strict_archive;
        let progress = ExtractProgress {
            on_progress: Box::new(on_progress),
            on_warning: Box::new(on_warning),
            strict: strict_archive,
        };
        tracing::debug!(run_id, "step: archive opened");
        let report = tokio::select! {
            r = sandbox.extract_archive(stream, "/workspace", progress) => r,
            _ = cancel.notified() => return Ending { status: RunStatus::Canceled, exit_code: None, reason: Some("canceled"), message: Some("canceled during archive extraction".into()) },
        };
        let last_progress = pending.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(written) = last_progress {
            let _ = written.await;
        }
        let extracted = match report {
            Ok(r) => {
                let data = json!({"contentBytes": r.content_bytes, "entries": r.entries, "archiveBytes": r.archive_bytes, "done": true});
                g.extract = Some(data.clone());
                data
            }
            Err(e) => {
                let reason = if e.kind == ErrorKind::Invalid { "archive_invalid" } else { "archive_extraction_failed" };
                self.event(run_id, EventType::Error, json!({"code": reason, "message": e.message})).await;
                return Ending::failed(reason, e.message);
            }
        };

        // The sandbox's own environment names the run that created it; a
        // reused sandbox must show the command the run it belongs to.
        let secrets = match self.store.run_secrets(run.id.clone()).await {
            Ok(s) => s,
            Err(e) => return Ending::failed("sandbox_error", format!("cannot read the run's secret variables: {e}")),
        };
        let exec =
            ExecSpec { command: run.spec.command.clone(), env: command_env(run, secrets), cwd: "/workspace".into() };
        tracing::debug!(run_id, "step: extracted");
        // The final report is committed while the command starts: the
        // command's output is read, and its events appended, after both.
        let (_, started) = tokio::join!(self.event(run_id, EventType::ArchiveProgress, extracted), sandbox.exec(&exec));
        let execution = match started {
            Ok(x) => x,
            Err(e) => {
                self.event(run_id, EventType::Error, json!({"code": "exec_failed", "message": e.message})).await;
                return Ending::failed("exec_failed", e.message);
            }
        };
        let out = tokio::spawn(output::capture(
            self.store.clone(),
            self.hub.clone(),
            run.id.clone(),
            EventType::Stdout,
            execution.stdout,
            self.settings.output,
        ));
        let err = tokio::spawn(output::capture(
            self.store.clone(),
            self.hub.clone(),
            run.id.clone(),
            EventType::Stderr,
            execution.stderr,
            self.settings.output,
        ));
        tracing::debug!(run_id, "step: command started");
        let process = execution.process;
        let timeout = run.spec.timeout_ms.or(sandbox.info().limits.timeout_ms).map(Duration::from_millis);
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        enum Why {
            Exited(crate::ports::Outcome),
            Timeout,
            Canceled,
            Stopped(String),
        }
        let metered_stop = async {
            match lease {
                Some(l) => l.stopped().await,
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            o = process.wait() => Why::Exited(o),
            _ = sleep => Why::Timeout,
            _ = cancel.notified() => Why::Canceled,
            r = metered_stop => Why::Stopped(r),
        };
        tracing::debug!(run_id, "step: process ended");
        let outcome = match &why {
            Why::Exited(o) => *o,
            Why::Timeout | Why::Canceled => {
                crate::ports::runtime::terminate(process.as_ref(), self.settings.kill_grace).await
            }
            // At a cap every second counts: no grace.
            Why::Stopped(reason) => {
                let o = crate::ports::runtime::terminate(process.as_ref(), Duration::ZERO).await;
                self.audit_system("sandboxes:kill", &sandbox.info().id, &run.org_id, &run.project_id, reason).await;
                o
            }
        };
        // The tree is gone, so the pipes close; bound the wait anyway.
        for (name, task) in [("stdout", out), ("stderr", err)] {
            let problem = match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(stats))) => {
                    g.streams.push((name.to_string(), stats));
                    continue;
                }
                Ok(Ok(Err(e))) => format!("capturing {name} failed: {e}"),
                Ok(Err(e)) => format!("capturing {name} panicked: {e}"),
                Err(_) => format!("{name} did not close 30 s after the process ended"),
            };
            // Said in the run's events: the evidence then has no totals for
            // this stream, and a reader must know why, not guess.
            tracing::error!(run_id, "{problem}");
            self.event(
                run_id,
                EventType::Error,
                json!({"code": "output_capture_failed", "stream": name, "message": problem}),
            )
            .await;
        }
        tracing::debug!(run_id, "step: output closed");
        match why {
            Why::Timeout => Ending {
                status: RunStatus::Failed,
                exit_code: None,
                reason: Some("timeout"),
                message: Some(format!(
                    "the command ran longer than {} ms and was stopped",
                    timeout.map(|t| t.as_millis()).unwrap_or(0)
                )),
            },
            Why::Canceled => Ending {
                status: RunStatus::Canceled,
                exit_code: None,
                reason: Some("canceled"),
                message: Some("canceled while running".into()),
            },
            Why::Stopped(reason) => {
                let code = stop_code(&reason);
                self.event(run_id, EventType::Error, json!({"code": code, "message": reason})).await;
                Ending::failed(code, format!("stopped by the meter: {reason}"))
            }
            Why::Exited(_) => match outcome.status {
                ExitStatus::Exited(0) => {
                    Ending { status: RunStatus::Succeeded, exit_code: Some(0), reason: None, message: None }
                }
                ExitStatus::Exited(c) => Ending {
                    status: RunStatus::Failed,
                    exit_code: Some(i32::from(c)),
                    reason: Some("exit_code"),
                    message: Some(format!("the command exited with code {c}")),
                },
                ExitStatus::Signaled(s) if outcome.oom_killed => Ending {
                    status: RunStatus::Failed,
                    exit_code: Some(128 + i32::from(s)),
                    reason: Some("out_of_memory"),
                    message: Some("the command was killed for exceeding its memory limit".into()),
                },
                ExitStatus::Signaled(s) => Ending {
                    status: RunStatus::Failed,
                    exit_code: Some(128 + i32::from(s)),
                    reason: Some("signal"),
                    message: Some(format!("the command was killed by signal {s}")),
                },
            },
        }
    }

    /// Keep each declared artifact: one failing never loses the others.
    async fn collect_artifacts(&self, run: &Run, sandbox: &dyn Sandbox, g: &mut Gathered) {
        let collector = Collector {
            store: &self.store,
            artifacts: self.backends.artifacts.as_ref(),
            max_bytes: self.settings.max_artifact_bytes,
            store_name: &self.settings.artifact_store_name,
        };
        for spec in &run.spec.artifacts {
            match collector.collect(run, sandbox, spec).await {
                Ok(a) => {
                    let data = json!({"artifactId": a.id, "name": a.name, "path": a.path, "sizeBytes": a.size, "sha256": a.sha256});
                    self.event(&run.id, EventType::ArtifactCollected, data).await;
                }
                Err(CollectError { code, message }) => {
                    let data = json!({"name": spec.name, "path": spec.path, "code": code, "message": message});
                    g.artifact_errors.push(data.clone());
                    self.event(&run.id, EventType::ArtifactError, data).await;
                }
            }
        }
    }

    /// An audit event by the server itself (a kill at a cap, a sandbox
    /// destroyed: tombstones of things that no longer exist).
    async fn audit_system(&self, action: &str, target: &str, org: &str, project: &str, detail: &str) {
        let e = AuditEvent {
            org_id: Some(org.to_string()),
            actor: "system".into(),
            action: action.into(),
            target: Some(target.to_string()),
            project_id: Some(project.to_string()),
            outcome: "success".into(),
            detail: Some(detail.to_string()),
            ..AuditEvent::default()
        };
        if let Err(e) = self.store.audit(e).await {
            tracing::error!(target, "cannot write an audit event: {e}");
        }
    }

    async fn cleanup(&self, run: &Run, sandbox: Arc<dyn Sandbox>, _reused: bool) {
        if run.spec.keep_sandbox {
            self.kept.lock().unwrap_or_else(|e| e.into_inner()).insert(sandbox.info().id.clone(), sandbox);
            return;
        }
        if let Err(e) = sandbox.destroy().await {
            tracing::warn!(run_id = %run.id, "destroying the sandbox failed (the reaper will retry): {e}");
        }
        let detail = format!("run {} ended", run.id);
        // Every destroyed sandbox leaves a tombstone, a reused kept one
        // included: a later run naming it is refused at create.
        let sandbox_id = sandbox.info().id.clone();
        if let Err(e) = self.store.tombstone_sandbox(sandbox_id.clone(), format!("destroyed when {detail}")).await {
            tracing::error!(sandbox_id, "cannot record the sandbox tombstone: {e}");
        }
        self.audit_system("sandboxes:destroy", &sandbox_id, &run.org_id, &run.project_id, &detail).await;
    }

    /// Destroy a kept sandbox on request (`sandboxes:kill`): its metering
    /// is settled and a tombstone stays.
    pub async fn kill_kept(&self, sandbox_id: &str, reason: &str) -> Result<KillOutcome, PluginError> {
        match self.take_kept(sandbox_id) {
            Some(sandbox) => {
                return self.finish_kill(sandbox_id, Some(sandbox), reason).await.map(|_| KillOutcome::Killed);
            }
            None => {
                let on_disk = self.store.kept_sandboxes().await.map_err(|e| PluginError::unavailable(e.to_string()))?;
                if !on_disk.iter().any(|id| id == sandbox_id) {
                    // Not kept: in use by a run right now, or already gone.
                    return Ok(if self.backends.metering.lease(sandbox_id).is_some() {
                        KillOutcome::Busy
                    } else {
                        KillOutcome::Gone
                    });
                }
                // Kept before a restart: not open in this process.
                self.finish_kill(sandbox_id, None, reason).await?;
            }
        }
        Ok(KillOutcome::Killed)
    }

    /// Take a kept sandbox out of the pool (no run can reuse it from now).
    fn take_kept(&self, sandbox_id: &str) -> Option<Arc<dyn Sandbox>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).remove(sandbox_id)
    }

    /// Destroy a kept sandbox (open here, or only on disk), settle its
    /// metering and leave its tombstone.
    async fn finish_kill(
        &self,
        sandbox_id: &str,
        sandbox: Option<Arc<dyn Sandbox>>,
        reason: &str,
    ) -> Result<(), PluginError> {
        let destroyed = match sandbox {
            Some(s) => s.destroy().await,
            None => self.backends.runtime.destroy_by_id(sandbox_id).await,
        };
        // Settled and tombstoned either way: a sandbox whose destroy failed
        // is no longer kept, so the reaper removes it at the next start.
        self.backends.metering.end(sandbox_id, true).await;
        if let Err(e) = self.store.tombstone_sandbox(sandbox_id.to_string(), reason.to_string()).await {
            tracing::error!(sandbox_id, "cannot record the sandbox tombstone: {e}");
        }
        destroyed
    }

    /// Stop kept sandboxes the meter stops (a cap or the lifetime limit
    /// reached while no run uses them). Runs in the background.
    pub fn watch_meter_stops(self: &Arc<Self>) {
        let Some(mut stops) = self.backends.metering.take_stops() else { return };
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(lease) = stops.recv().await {
                let id = lease.subject.sandbox_id.clone();
                // A sandbox a run is using is stopped by that run.
                let Some(sandbox) = this.take_kept(&id) else { continue };
                let reason = lease.stop_reason().unwrap_or_default();
                if let Err(e) = this.finish_kill(&id, Some(sandbox), &reason).await {
                    tracing::warn!(sandbox_id = %id, "destroying a stopped kept sandbox failed: {e}");
                }
                let (org, project) = (&lease.subject.org_id, &lease.subject.project_id);
                this.audit_system("sandboxes:kill", &id, org, project, &reason).await;
            }
        });
    }

    /// A kept sandbox found at start-up is metered again from now (the
    /// server's downtime is not billed) and held like one kept in this
    /// process, so caps and the lifetime limit stop it; one the meter no
    /// longer admits is destroyed.
    async fn meter_kept_again(&self, id: &str) {
        if self.backends.metering.lease(id).is_some() {
            return;
        }
        let owner = match self.store.sandbox_owner(id.to_string()).await {
            Ok(Some(o)) => o,
            Ok(None) => return,
            Err(e) => return tracing::warn!(sandbox_id = id, "cannot find the run that kept this sandbox: {e}"),
        };
        let (org, project, run_id) = owner;
        let template = match self.store.get_run(run_id).await {
            Ok(r) => r.spec.template,
            Err(e) => return tracing::warn!(sandbox_id = id, "cannot load the run that kept this sandbox: {e}"),
        };
        match self.backends.runtime.open_sandbox(id).await {
            Ok(s) => {
                self.kept.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), Arc::from(s));
            }
            Err(e) => return tracing::warn!(sandbox_id = id, "cannot open a kept sandbox: {}", e.message),
        }
        match self.backends.metering.begin(id, &org, &project, &template).await {
            Ok(_) => tracing::info!(sandbox_id = id, "kept sandbox metered again after the restart"),
            Err(e) if e.kind == ErrorKind::QuotaExceeded => {
                let reason = format!("quota_exceeded: {}", e.message);
                let sandbox = self.take_kept(id);
                if let Err(e) = self.finish_kill(id, sandbox, &reason).await {
                    tracing::warn!(sandbox_id = id, "destroying an unadmitted kept sandbox failed: {}", e.message);
                }
                self.audit_system("sandboxes:kill", id, &org, &project, &reason).await;
            }
            Err(e) => tracing::warn!(sandbox_id = id, "the meter could not admit a kept sandbox: {}", e.message),
        }
    }

    /// At shutdown, before the sandboxes go down with this process: fail
    /// every active run with `host_restarted` (no one will see how its
    /// command ends: recording that would report the kill of our own
    /// exit as its result), then stop the commands and give their
    /// executions up to `within` to destroy their sandboxes (what is left
    /// is reaped at the next start). Returns how many runs were active.
    pub async fn shutdown(&self, within: Duration) -> usize {
        let active = match self.store.active_runs().await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("cannot list active runs at shutdown: {e}");
                return 0;
            }
        };
        let message = "the server stopped while this run was active; its result is unknown";
        for run in &active {
            self.event(&run.id, EventType::Error, json!({"code": "host_restarted", "message": message})).await;
            self.finish(run, Ending::failed("host_restarted", message), Gathered::default()).await;
        }
        let executing: Vec<Arc<Notify>> =
            self.cancels.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for n in &executing {
            n.notify_one();
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && !self.cancels.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        active.len()
    }

    /// Fail runs that waited longer than `max_wait` for an archive that
    /// never came (an upload that failed or was refused, a client that
    /// went away): `failed` with `archive_missing`. Returns how many.
    pub async fn expire_awaiting(&self, max_wait: Duration) -> usize {
        let runs = match self.store.stale_awaiting_runs(max_wait.as_millis() as u64).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot list runs waiting for an archive: {e}");
                return 0;
            }
        };
        let message = format!(
            "no archive was uploaded within {} s of the run's creation (runs.archive_wait_secs); create a new run",
            max_wait.as_secs()
        );
        for run in &runs {
            self.event(&run.id, EventType::Error, json!({"code": "archive_missing", "message": message})).await;
            self.finish(run, Ending::failed("archive_missing", message.clone()), Gathered::default()).await;
            tracing::info!(run_id = %run.id, "run expired waiting for its archive");
        }
        runs.len()
    }

    /// After a restart: fail every run that was active, meter the kept
    /// sandboxes again, then reap every sandbox no kept run owns.
    pub async fn recover(&self) -> anyhow::Result<usize> {
        let kept = self.store.kept_sandboxes().await?;
        let active = self.store.active_runs().await?;
        for run in &active {
            self.event(&run.id, EventType::Error, json!({"code": "host_restarted", "message": "the server restarted while this run was active; its result is unknown"})).await;
            let ending = Ending::failed(
                "host_restarted",
                "the server restarted while this run was active; its result is unknown",
            );
            self.finish(run, ending, Gathered::default()).await;
        }
        match self.backends.runtime.list_sandboxes().await {
            Ok(ids) => {
                for id in ids.iter().filter(|id| kept.contains(id)) {
                    self.meter_kept_again(id).await;
                }
                for id in ids.into_iter().filter(|id| !kept.contains(id)) {
                    if let Err(e) = self.backends.runtime.destroy_by_id(&id).await {
                        tracing::warn!(sandbox_id = %id, "cannot reap orphaned sandbox: {e}");
                    } else {
                        tracing::info!(sandbox_id = %id, "reaped orphaned sandbox");
                        let reason = "reaped at start-up: the server restarted while it was in use".to_string();
                        if let Err(e) = self.store.tombstone_sandbox(id.clone(), reason).await {
                            tracing::error!(sandbox_id = %id, "cannot record the sandbox tombstone: {e}");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("cannot list sandboxes to reap: {e}"),
        }
        Ok(active.len())
    }
}

/// Appends a run's `archive_progress` events from the extraction's
/// callbacks. Each is written by a task of its own (the extraction must not
/// wait for the store), after the one before it: events appear in order,
/// and the final report waits for the last of them (`pending`).
#[derive(Clone)]
struct ArchiveEvents {
    store: Store,
    hub: Arc<EventHub>,
    id: String,
    pending: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl ArchiveEvents {
    fn append(&self, data: Value) {
        let (store, hub, id) = (self.store.clone(), self.hub.clone(), self.id.clone());
        let mut slot = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let before = slot.take();
        *slot = Some(tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            if let Ok(evs) = store.append_events(id.clone(), vec![(EventType::ArchiveProgress, data)]).await
                && let Some(e) = evs.last()
            {
                hub.notify(&id, e.seq);
            }
        }));
    }
}
