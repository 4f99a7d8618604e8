//! Port for meters: admit, tick and settle sandbox time.

use async_trait::async_trait;

use crate::error::PluginError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterSubject {
    pub sandbox_id: String,
    pub org_id: String,
    pub project_id: String,
    pub template: String,
    pub compute_units: u32,
    pub started_at_ms: u64,
    pub active_sandboxes: u32,
}

/// Terms a sandbox runs under; passed back unchanged to `tick` and `settle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub bucket: String,
    pub pricing_version: String,
    pub max_lifetime_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickDecision {
    Continue,
    Stop(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub bucket: String,
    pub pricing_version: String,
    pub project_id: String,
    pub compute_unit_seconds: u64,
    pub amount_micro_usd: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    pub project_id: Option<String>,
    pub from_bucket: Option<String>,
    pub to_bucket: Option<String>,
}

#[async_trait]
pub trait Meter: Send + Sync {
    async fn check(&self) -> Result<(), PluginError>;
    async fn admit(&self, subject: &MeterSubject) -> Result<Admission, PluginError>;
    async fn tick(
        &self,
        subject: &MeterSubject,
        admission: &Admission,
        seconds: u32,
    ) -> Result<TickDecision, PluginError>;
    async fn settle(
        &self,
        subject: &MeterSubject,
        admission: &Admission,
        total_secs: u64,
    ) -> Result<Usage, PluginError>;
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<Usage>, PluginError>;
}
