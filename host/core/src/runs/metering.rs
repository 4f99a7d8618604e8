//! Sandbox metering: every sandbox is admitted by the meter before it is
//! created, ticked for every second it exists, and settled when it ends.
//!
//! One ticker serves every sandbox: four times a second it looks for
//! sandboxes that completed another second, calls the meter's `tick` for
//! those, and makes the key-value store durable once per round, so a crash
//! loses at most the last second. When the meter answers `stop` (a hard cap,
//! the lifetime limit) the sandbox's lease is signalled; whoever holds the
//! sandbox stops it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::error::PluginError;
use crate::kv::KeyValueStore;
use crate::ports::{Admission, Meter, MeterSubject, TickDecision, Usage, UsageQuery};
use crate::runs::ids::now_ms;

/// How often the ticker looks for completed seconds.
const SCAN: Duration = Duration::from_millis(250);

/// One metered sandbox.
pub struct Lease {
    pub subject: MeterSubject,
    pub admission: Admission,
    started: Instant,
    ticked: AtomicU64,
    stopped: Notify,
    stop_reason: Mutex<Option<String>>,
}

impl Lease {
    /// Resolves when the meter asks for the sandbox to stop; the reason.
    pub async fn stopped(&self) -> String {
        loop {
            let notified = self.stopped.notified();
            if let Some(r) = self.stop_reason() {
                return r;
            }
            notified.await;
        }
    }

    pub fn stop_reason(&self) -> Option<String> {
        self.stop_reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Seconds so far, rounded up.
    pub fn lived_secs(&self) -> u64 {
        let d = self.started.elapsed();
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

/// The metering service (one per server).
pub struct Metering {
    meter: Option<Arc<dyn Meter>>,
    kv: Option<Arc<dyn KeyValueStore>>,
    /// Compute units of each template.
    units: HashMap<String, u32>,
    leases: Mutex<HashMap<String, Arc<Lease>>>,
    stops: mpsc::UnboundedSender<Arc<Lease>>,
    stops_rx: Mutex<Option<mpsc::UnboundedReceiver<Arc<Lease>>>>,
}

impl Metering {
    pub fn new(
        meter: Option<Arc<dyn Meter>>,
        kv: Option<Arc<dyn KeyValueStore>>,
        units: HashMap<String, u32>,
    ) -> Arc<Metering> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Metering { meter, kv, units, leases: Mutex::default(), stops: tx, stops_rx: Mutex::new(Some(rx)) })
    }

    /// No meter: nothing is metered or limited.
    pub fn disabled() -> Arc<Metering> {
        Metering::new(None, None, HashMap::new())
    }

    pub fn enabled(&self) -> bool {
        self.meter.is_some()
    }

    /// Usage totals from the meter; `None` when nothing is metered.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Option<Vec<Usage>>, PluginError> {
        match &self.meter {
            Some(m) => m.usage(query).await.map(Some),
            None => Ok(None),
        }
    }

    /// Leases the meter asked to stop (taken once, by the executor).
    pub fn take_stops(&self) -> Option<mpsc::UnboundedReceiver<Arc<Lease>>> {
        self.stops_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Lease>>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sandboxes of `org` that exist now.
    pub fn active_in(&self, org: &str) -> u32 {
        self.leases().values().filter(|l| l.subject.org_id == org).count() as u32
    }

    /// Sandboxes metered right now.
    pub fn active(&self) -> usize {
        self.leases().len()
    }

    pub fn lease(&self, sandbox_id: &str) -> Option<Arc<Lease>> {
        self.leases().get(sandbox_id).cloned()
    }

    fn subject(&self, sandbox_id: &str, org: &str, project: &str, template: &str, others: u32) -> MeterSubject {
        MeterSubject {
            sandbox_id: sandbox_id.to_string(),
            org_id: org.to_string(),
            project_id: project.to_string(),
            template: template.to_string(),
            compute_units: self.units.get(template).copied().unwrap_or(1),
            started_at_ms: now_ms(),
            active_sandboxes: others,
        }
    }

    /// Would a new sandbox be admitted now, with `pending` more sandboxes of
    /// the org about to start? (Asked before a run is queued.)
    pub async fn precheck(&self, org: &str, project: &str, template: &str, pending: u32) -> Result<(), PluginError> {
        let Some(meter) = &self.meter else { return Ok(()) };
        let subject = self.subject("sbx_precheck", org, project, template, self.active_in(org) + pending);
        meter.admit(&subject).await.map(|_| ())
    }

    /// Admit a sandbox that is about to be created; it is metered from now.
    /// `None` when nothing is metered.
    pub async fn begin(
        &self,
        sandbox_id: &str,
        org: &str,
        project: &str,
        template: &str,
    ) -> Result<Option<Arc<Lease>>, PluginError> {
        self.begin_at(sandbox_id, org, project, template, Instant::now()).await
    }

    async fn begin_at(
        &self,
        sandbox_id: &str,
        org: &str,
        project: &str,
        template: &str,
        started: Instant,
    ) -> Result<Option<Arc<Lease>>, PluginError> {
        let Some(meter) = &self.meter else { return Ok(None) };
        let subject = self.subject(sandbox_id, org, project, template, self.active_in(org));
        let admission = meter.admit(&subject).await?;
        let lease = Arc::new(Lease {
            subject,
            admission,
            started,
            ticked: AtomicU64::new(0),
            stopped: Notify::new(),
            stop_reason: Mutex::new(None),
        });
        self.leases().insert(sandbox_id.to_string(), lease.clone());
        Ok(Some(lease))
    }

    /// The sandbox is gone (or was never created, `existed = false`): record
    /// its usage. Returns the usage for the evidence.
    pub async fn end(&self, sandbox_id: &str, existed: bool) -> Option<Value> {
        let lease = self.leases().remove(sandbox_id)?;
        let meter = self.meter.as_ref()?;
        let secs = if existed { lease.lived_secs() } else { 0 };
        // The meter sees every second through `tick`; settling only reports.
        let remainder = secs.saturating_sub(lease.ticked.load(Ordering::Relaxed));
        if remainder > 0
            && let Err(e) =
                meter.tick(&lease.subject, &lease.admission, remainder.min(u64::from(u32::MAX)) as u32).await
        {
            tracing::warn!(sandbox_id, "meter tick of the last {remainder} s failed: {}", e.message);
        }
        match meter.settle(&lease.subject, &lease.admission, secs).await {
            Ok(u) => Some(json!({
                "computeUnitSeconds": u.compute_unit_seconds,
                "computeUnits": lease.subject.compute_units,
                "pricingVersion": u.pricing_version,
                "bucket": u.bucket,
                "amountMicroUsd": u.amount_micro_usd,
            })),
            Err(e) => {
                tracing::warn!(sandbox_id, "meter settle failed: {}", e.message);
                None
            }
        }
    }

    /// Run the ticker until the process ends.
    pub fn start(self: &Arc<Self>) {
        if self.meter.is_none() && self.kv.is_none() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SCAN);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                this.round().await;
            }
        });
    }

    /// One scan: tick every sandbox that completed a second since its last
    /// tick, then make the counters durable.
    pub async fn round(&self) -> usize {
        let due = match &self.meter {
            Some(meter) => self.tick_due(meter.as_ref()).await,
            None => 0,
        };
        if let Some(kv) = self.kv.clone() {
            let synced = tokio::task::spawn_blocking(move || kv.sync()).await;
            if let Ok(Err(e)) = synced {
                tracing::warn!("cannot make metering durable: {}", e.message);
            }
        }
        due
    }

    async fn tick_due(&self, meter: &dyn Meter) -> usize {
        let due: Vec<(Arc<Lease>, u64)> = self
            .leases()
            .values()
            .filter_map(|l| {
                let whole = l.started.elapsed().as_secs();
                let ticked = l.ticked.load(Ordering::Relaxed);
                (whole > ticked && l.stop_reason().is_none()).then(|| (l.clone(), whole))
            })
            .collect();
        for (lease, whole) in &due {
            let secs = whole - lease.ticked.load(Ordering::Relaxed);
            match meter.tick(&lease.subject, &lease.admission, secs.min(u64::from(u32::MAX)) as u32).await {
                Ok(TickDecision::Continue) => {
                    lease.ticked.store(*whole, Ordering::Relaxed);
                }
                Ok(TickDecision::Stop(reason)) => {
                    lease.ticked.store(*whole, Ordering::Relaxed);
                    tracing::info!(sandbox_id = %lease.subject.sandbox_id, "meter stops the sandbox: {reason}");
                    crate::metrics::record::meter_stop(stop_code(&reason));
                    *lease.stop_reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                    lease.stopped.notify_waiters();
                    let _ = self.stops.send(lease.clone());
                }
                // Not ticked: the next round retries the same seconds.
                Err(e) => tracing::warn!(sandbox_id = %lease.subject.sandbox_id, "meter tick failed: {}", e.message),
            }
        }
        due.len()
    }
}

/// `quota_exceeded` or `lifetime_exceeded` for a meter's stop reason.
pub fn stop_code(reason: &str) -> &'static str {
    if reason.contains("lifetime") { "lifetime_exceeded" } else { "quota_exceeded" }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admits up to `limit` sandboxes, stops at `stop_at` ticked seconds,
    /// and records every call.
    #[derive(Default)]
    struct FakeMeter {
        limit: u32,
        stop_at: u64,
        ticked: Mutex<u64>,
        settled: Mutex<Vec<u64>>,
    }

    #[async_trait::async_trait]
    impl Meter for FakeMeter {
        async fn check(&self) -> Result<(), PluginError> {
            Ok(())
        }
        async fn admit(&self, s: &MeterSubject) -> Result<Admission, PluginError> {
            if s.active_sandboxes >= self.limit {
                return Err(PluginError::new(crate::ErrorKind::QuotaExceeded, "plan limit"));
            }
            Ok(Admission { bucket: "2026-11".into(), pricing_version: "v1".into(), max_lifetime_secs: None })
        }
        async fn tick(&self, _: &MeterSubject, _: &Admission, secs: u32) -> Result<TickDecision, PluginError> {
            let mut t = self.ticked.lock().unwrap();
            *t += u64::from(secs);
            Ok(if *t >= self.stop_at {
                TickDecision::Stop("quota_exceeded: cap".into())
            } else {
                TickDecision::Continue
            })
        }
        async fn settle(&self, s: &MeterSubject, a: &Admission, total: u64) -> Result<Usage, PluginError> {
            self.settled.lock().unwrap().push(total);
            Ok(Usage {
                bucket: a.bucket.clone(),
                pricing_version: a.pricing_version.clone(),
                project_id: s.project_id.clone(),
                compute_unit_seconds: total,
                amount_micro_usd: 0,
            })
        }
        async fn usage(&self, _: &UsageQuery) -> Result<Vec<Usage>, PluginError> {
            Ok(vec![])
        }
    }

    fn metering(limit: u32, stop_at: u64) -> (Arc<Metering>, Arc<FakeMeter>) {
        let fake = Arc::new(FakeMeter { limit, stop_at, ..FakeMeter::default() });
        (Metering::new(Some(fake.clone()), None, HashMap::new()), fake)
    }

    #[tokio::test]
    async fn admission_counts_the_orgs_existing_sandboxes() {
        let (m, _) = metering(2, u64::MAX);
        m.begin("sbx_a", "org1", "p", "t").await.unwrap();
        m.begin("sbx_b", "org1", "p", "t").await.unwrap();
        assert!(m.begin("sbx_c", "org1", "p", "t").await.is_err(), "a third sandbox is refused");
        assert!(m.begin("sbx_d", "org2", "p", "t").await.is_ok(), "other orgs are counted apart");
        assert!(m.precheck("org1", "p", "t", 0).await.is_err());
        m.end("sbx_a", true).await;
        assert!(m.precheck("org1", "p", "t", 0).await.is_ok());
        assert!(m.precheck("org1", "p", "t", 1).await.is_err(), "queued runs count as pending sandboxes");
    }

    #[tokio::test]
    async fn every_whole_second_is_ticked_once_and_the_rest_at_the_end() {
        let (m, fake) = metering(10, u64::MAX);
        let three_ago = Instant::now() - Duration::from_millis(3_400);
        m.begin_at("sbx_a", "o", "p", "t", three_ago).await.unwrap();
        assert_eq!(m.round().await, 1);
        assert_eq!(*fake.ticked.lock().unwrap(), 3);
        assert_eq!(m.round().await, 0, "nothing new to tick within the same second");
        let usage = m.end("sbx_a", true).await.unwrap();
        assert_eq!(*fake.ticked.lock().unwrap(), 4, "the started fourth second is ticked before settling");
        assert_eq!(usage["computeUnitSeconds"], 4);
        assert_eq!(*fake.settled.lock().unwrap(), vec![4]);
    }

    #[tokio::test]
    async fn a_stop_decision_signals_the_lease() {
        let (m, _) = metering(10, 2);
        let lease = m.begin_at("sbx_a", "o", "p", "t", Instant::now() - Duration::from_secs(2)).await.unwrap().unwrap();
        let mut stops = m.take_stops().unwrap();
        m.round().await;
        assert_eq!(lease.stopped().await, "quota_exceeded: cap");
        assert_eq!(stops.recv().await.unwrap().subject.sandbox_id, "sbx_a");
        assert_eq!(stop_code("max_lifetime: 2 s"), "lifetime_exceeded");
        assert_eq!(stop_code("quota_exceeded: cap"), "quota_exceeded");
    }

    #[tokio::test]
    async fn a_sandbox_never_created_costs_nothing() {
        let (m, fake) = metering(10, u64::MAX);
        m.begin("sbx_a", "o", "p", "t").await.unwrap();
        m.end("sbx_a", false).await;
        assert_eq!(*fake.ticked.lock().unwrap(), 0);
        assert_eq!(*fake.settled.lock().unwrap(), vec![0]);
        assert_eq!(m.active(), 0);
    }
}
