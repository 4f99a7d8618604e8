//! `compute-meter`: the default meter.
//!
//! Every second a sandbox exists costs its template's compute units;
//! `compute_unit_seconds` are counted per project, per monthly billing bucket
//! (`YYYY-MM`, UTC) and per pricing version in the host's durable `kv` store.
//! Configuration (all optional):
//!
//! - `pricing_version` (default `2026-11-01`)
//! - `price_micro_usd_per_unit_hour` (default 120000: $0.12 per sandbox-hour
//!   for one compute unit, the standard runtime)
//! - `max_concurrent_sandboxes` (default 2)
//! - `max_lifetime_secs` (default 3600)
//! - `cap_compute_unit_seconds` (default none): hard cap per bucket

mod calendar;
mod settings;

wit_bindgen::generate!({
    path: "../../wit/meter",
    world: "crownest:meter/meter",
    generate_all,
});

use crownest::host::kv;
use crownest::host::types::Error;
use exports::crownest::meter::metering::{Admission, Guest, Subject, TickDecision, Usage, UsageQuery};
use settings::Settings;

struct ComputeMeter;

export!(ComputeMeter);

fn usage_key(bucket: &str, version: &str, project: &str) -> String {
    format!("usage/{bucket}/{version}/{project}")
}

/// The organization's total in a bucket (what a cap applies to).
fn bucket_total_key(org: &str, bucket: &str) -> String {
    format!("bucket-total/{org}/{bucket}")
}

/// Milliseconds since the Unix epoch.
fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn check_admission(a: &Admission) -> Result<(), Error> {
    if a.bucket.is_empty() || a.pricing_version.is_empty() {
        return Err(Error::Invalid("admission must carry the bucket and pricing version returned by `admit`".into()));
    }
    Ok(())
}

fn read_counter(key: &str) -> Result<u64, Error> {
    Ok(kv::get(key)?.and_then(|v| String::from_utf8(v).ok()).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0))
}

impl Guest for ComputeMeter {
    fn check() -> Result<(), Error> {
        config_keys::check(&crate::crownest::host::config::get_json(), "compute-meter", settings::KEYS)
            .map_err(Error::Invalid)?;
        Settings::load().map(|_| ())
    }

    fn admit(subject: Subject) -> Result<Admission, Error> {
        let s = Settings::load()?;
        if subject.active_sandboxes >= s.max_concurrent_sandboxes {
            return Err(Error::QuotaExceeded(format!(
                "plan limit `max_concurrent_sandboxes` reached: {} of {} concurrent sandboxes are running; wait for one to end",
                subject.active_sandboxes, s.max_concurrent_sandboxes
            )));
        }
        let bucket = calendar::month_bucket(subject.started_at_ms);
        if let Some(cap) = s.cap_compute_unit_seconds {
            let used = read_counter(&bucket_total_key(&subject.org_id, &bucket))?;
            if used >= cap {
                return Err(Error::QuotaExceeded(format!(
                    "compute cap `cap_compute_unit_seconds` reached: {used} of {cap} compute_unit_seconds used in bucket {bucket}"
                )));
            }
        }
        Ok(Admission { bucket, pricing_version: s.pricing_version, max_lifetime_secs: Some(s.max_lifetime_secs) })
    }

    fn tick(subject: Subject, admission: Admission, seconds: u32) -> Result<TickDecision, Error> {
        check_admission(&admission)?;
        let s = Settings::load()?;
        let units = u64::from(seconds) * u64::from(subject.compute_units);
        let delta = i64::try_from(units).map_err(|_| Error::Invalid("tick too large".into()))?;
        kv::increment(&usage_key(&admission.bucket, &admission.pricing_version, &subject.project_id), delta)?;
        let total = kv::increment(&bucket_total_key(&subject.org_id, &admission.bucket), delta)?;
        if let Some(cap) = s.cap_compute_unit_seconds {
            if total as u64 >= cap {
                return Ok(TickDecision::Stop(format!(
                    "quota_exceeded: compute cap of {cap} compute_unit_seconds reached in bucket {}",
                    admission.bucket
                )));
            }
        }
        if let Some(max) = admission.max_lifetime_secs {
            let lived_ms = wall_ms().saturating_sub(subject.started_at_ms);
            if lived_ms >= max.saturating_mul(1000) {
                return Ok(TickDecision::Stop(format!("max_lifetime: sandbox lifetime limit of {max} s reached")));
            }
        }
        Ok(TickDecision::Continue)
    }

    /// Every second was ticked (the host ticks the remainder before it
    /// settles), so settling only reports the sandbox's usage.
    fn settle(subject: Subject, admission: Admission, total_secs: u64) -> Result<Usage, Error> {
        check_admission(&admission)?;
        let s = Settings::load()?;
        let cus = total_secs * u64::from(subject.compute_units);
        Ok(Usage {
            bucket: admission.bucket,
            pricing_version: admission.pricing_version,
            project_id: subject.project_id,
            compute_unit_seconds: cus,
            amount_micro_usd: s.price(cus),
        })
    }

    fn query_usage(query: UsageQuery) -> Result<Vec<Usage>, Error> {
        let s = Settings::load()?;
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let keys = kv::list_keys("usage/", after.as_deref(), 1000)?;
            let Some(last) = keys.last().cloned() else { break };
            for key in keys {
                let mut parts = key.splitn(4, '/').skip(1);
                let (Some(bucket), Some(version), Some(project)) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                if query.project_id.as_deref().is_some_and(|p| p != project)
                    || query.from_bucket.as_deref().is_some_and(|f| bucket < f)
                    || query.to_bucket.as_deref().is_some_and(|t| bucket > t)
                {
                    continue;
                }
                let cus = read_counter(&key)?;
                out.push(Usage {
                    bucket: bucket.to_string(),
                    pricing_version: version.to_string(),
                    project_id: project.to_string(),
                    compute_unit_seconds: cus,
                    amount_micro_usd: s.price(cus),
                });
            }
            after = Some(last);
        }
        Ok(out)
    }
}
