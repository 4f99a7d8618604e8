//! The meter's configuration, read from `crownest:host/config`.

use crate::crownest::host::config;
use crate::crownest::host::types::Error;

/// Every key of the meter's config table.
pub const KEYS: &[&str] = &[
    "pricing_version",
    "price_micro_usd_per_unit_hour",
    "max_concurrent_sandboxes",
    "max_lifetime_secs",
    "cap_compute_unit_seconds",
];

pub struct Settings {
    pub pricing_version: String,
    pub price_micro_usd_per_unit_hour: u64,
    pub max_concurrent_sandboxes: u32,
    pub max_lifetime_secs: u64,
    pub cap_compute_unit_seconds: Option<u64>,
}

fn number(key: &str, default: u64) -> Result<u64, Error> {
    match config::get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| Error::Invalid(format!("meter config `{key}` must be a non-negative integer, got `{v}`"))),
    }
}

impl Settings {
    pub fn load() -> Result<Settings, Error> {
        let max_concurrent = number("max_concurrent_sandboxes", 2)?;
        Ok(Settings {
            pricing_version: config::get("pricing_version").unwrap_or_else(|| "2026-11-01".to_string()),
            price_micro_usd_per_unit_hour: number("price_micro_usd_per_unit_hour", 120_000)?,
            max_concurrent_sandboxes: u32::try_from(max_concurrent)
                .map_err(|_| Error::Invalid("meter config `max_concurrent_sandboxes` is too large".into()))?,
            max_lifetime_secs: number("max_lifetime_secs", 3600)?,
            cap_compute_unit_seconds: match config::get("cap_compute_unit_seconds") {
                None => None,
                Some(_) => Some(number("cap_compute_unit_seconds", 0)?),
            },
        })
    }

    /// Price of `cus` compute-unit-seconds, rounded up to a micro-dollar.
    pub fn price(&self, cus: u64) -> u64 {
        (u128::from(cus) * u128::from(self.price_micro_usd_per_unit_hour)).div_ceil(3600) as u64
    }
}
