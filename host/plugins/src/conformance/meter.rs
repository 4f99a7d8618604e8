//! Conformance checks for the `meter` world.

use crownest_core::ErrorKind;
use crownest_core::ports::{Admission, Meter, MeterSubject, UsageQuery};

use super::{Suite, describe, expect_error};
use crate::kinds::WasmMeter;

fn subject() -> MeterSubject {
    MeterSubject {
        sandbox_id: "sbx_conformance".into(),
        org_id: "org_conformance".into(),
        project_id: "prj_conformance".into(),
        template: "base".into(),
        compute_units: 1,
        started_at_ms: 1_795_435_200_000,
        active_sandboxes: 0,
    }
}

pub(crate) async fn run(suite: &mut Suite, m: &WasmMeter) {
    suite.check("check", async || m.check().await.map(|_| "ready".into()).map_err(|e| describe(&e))).await;

    let sub = subject();
    let mut admitted: Option<Admission> = None;
    suite
        .check("admit", async || {
            let a = m.admit(&sub).await.map_err(|e| describe(&e))?;
            if a.bucket.is_empty() || a.pricing_version.is_empty() {
                return Err(format!("admission must name a bucket and a pricing version, got {a:?}"));
            }
            let detail = format!("bucket {} pricing {}", a.bucket, a.pricing_version);
            admitted = Some(a);
            Ok(detail)
        })
        .await;
    let Some(adm) = admitted else { return };

    suite
        .check("tick", async || {
            m.tick(&sub, &adm, 1).await.map(|d| format!("answered {d:?}")).map_err(|e| describe(&e))
        })
        .await;

    suite
        .check("settle", async || {
            let u = m.settle(&sub, &adm, 1).await.map_err(|e| describe(&e))?;
            if u.compute_unit_seconds < 1 {
                return Err(format!(
                    "one ticked second of one compute unit settled as {} compute_unit_seconds",
                    u.compute_unit_seconds
                ));
            }
            Ok(format!("{} compute_unit_seconds, {} micro-USD", u.compute_unit_seconds, u.amount_micro_usd))
        })
        .await;

    suite
        .check("query-usage", async || {
            let q = UsageQuery { project_id: Some(sub.project_id.clone()), ..UsageQuery::default() };
            let list = m.usage(&q).await.map_err(|e| describe(&e))?;
            if list.iter().any(|u| u.project_id == sub.project_id && u.compute_unit_seconds >= 1) {
                Ok(format!("{} usage rows", list.len()))
            } else {
                Err(format!("the metered second does not appear in the usage: {list:?}"))
            }
        })
        .await;

    suite
        .check("tick-invalid-admission", async || {
            let bad = Admission { bucket: String::new(), pricing_version: String::new(), max_lifetime_secs: None };
            expect_error(m.tick(&sub, &bad, 1).await, &[ErrorKind::Invalid])
        })
        .await;
}
