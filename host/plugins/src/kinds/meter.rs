//! [`Meter`] on a `meter` component.

use std::sync::Arc;

use async_trait::async_trait;
use crownest_core::PluginError;
use crownest_core::ports::{Admission, Meter, MeterSubject, TickDecision, Usage, UsageQuery};
use wasmtime::Store;

use super::{instantiate, typed_pre};
use crate::bindings::meter::exports::crownest::meter::metering as wit;
use crate::bindings::meter::{Meter as Bindings, MeterPre};
use crate::guard::{self, from_wit};
use crate::loader::LoadedPlugin;
use crate::state::PluginState;

/// A meter backed by a plugin.
pub struct WasmMeter {
    plugin: Arc<LoadedPlugin>,
    pre: MeterPre<PluginState>,
}

impl WasmMeter {
    pub fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, PluginError> {
        let pre = typed_pre(&plugin, MeterPre::new)?;
        Ok(WasmMeter { plugin, pre })
    }

    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    async fn instance(&self) -> Result<(Store<PluginState>, Bindings), PluginError> {
        instantiate(&self.plugin, async |s| self.pre.instantiate_async(s).await).await
    }
}

fn subject(s: &MeterSubject) -> wit::Subject {
    wit::Subject {
        sandbox_id: s.sandbox_id.clone(),
        org_id: s.org_id.clone(),
        project_id: s.project_id.clone(),
        template: s.template.clone(),
        compute_units: s.compute_units,
        started_at_ms: s.started_at_ms,
        active_sandboxes: s.active_sandboxes,
    }
}

fn admission(a: &Admission) -> wit::Admission {
    wit::Admission {
        bucket: a.bucket.clone(),
        pricing_version: a.pricing_version.clone(),
        max_lifetime_secs: a.max_lifetime_secs,
    }
}

fn usage(u: wit::Usage) -> Usage {
    Usage {
        bucket: u.bucket,
        pricing_version: u.pricing_version,
        project_id: u.project_id,
        compute_unit_seconds: u.compute_unit_seconds,
        amount_micro_usd: u.amount_micro_usd,
    }
}

#[async_trait]
impl Meter for WasmMeter {
    async fn check(&self) -> Result<(), PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_meter_metering();
        guard::call(&mut store, "check", async |s| g.call_check(s).await).await?.map_err(from_wit)
    }

    async fn admit(&self, sub: &MeterSubject) -> Result<Admission, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_meter_metering();
        let sub = subject(sub);
        let a = guard::call(&mut store, "admit", async |s| g.call_admit(s, &sub).await).await?.map_err(from_wit)?;
        Ok(Admission { bucket: a.bucket, pricing_version: a.pricing_version, max_lifetime_secs: a.max_lifetime_secs })
    }

    async fn tick(&self, sub: &MeterSubject, adm: &Admission, seconds: u32) -> Result<TickDecision, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_meter_metering();
        let (sub, adm) = (subject(sub), admission(adm));
        let d = guard::call(&mut store, "tick", async |s| g.call_tick(s, &sub, &adm, seconds).await)
            .await?
            .map_err(from_wit)?;
        Ok(match d {
            wit::TickDecision::Continue => TickDecision::Continue,
            wit::TickDecision::Stop(reason) => TickDecision::Stop(reason),
        })
    }

    async fn settle(&self, sub: &MeterSubject, adm: &Admission, total_secs: u64) -> Result<Usage, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_meter_metering();
        let (sub, adm) = (subject(sub), admission(adm));
        let u = guard::call(&mut store, "settle", async |s| g.call_settle(s, &sub, &adm, total_secs).await)
            .await?
            .map_err(from_wit)?;
        Ok(usage(u))
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<Usage>, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_meter_metering();
        let q = wit::UsageQuery {
            project_id: query.project_id.clone(),
            from_bucket: query.from_bucket.clone(),
            to_bucket: query.to_bucket.clone(),
        };
        let list = guard::call(&mut store, "query-usage", async |s| g.call_query_usage(s, &q).await)
            .await?
            .map_err(from_wit)?;
        Ok(list.into_iter().map(usage).collect())
    }
}
