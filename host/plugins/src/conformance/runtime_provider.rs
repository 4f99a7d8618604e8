//! Conformance checks for the `runtime-provider` world (the read-only part;
//! sandbox checks need the host's sandbox mechanisms).

use crownest_core::ports::RuntimeProvider;

use super::{Suite, describe};
use crate::guard::is_sha256_hex;
use crate::kinds::WasmRuntimeProvider;

pub(crate) async fn run(suite: &mut Suite, p: &WasmRuntimeProvider) {
    suite.check("check", async || p.check().await.map(|_| "ready".into()).map_err(|e| describe(&e))).await;
    suite
        .check("list-templates", async || {
            let list = p.list_templates().await.map_err(|e| describe(&e))?;
            if let Some(t) = list.iter().find(|t| !is_sha256_hex(&t.digest)) {
                return Err(format!(
                    "template `{}` has digest `{}`, not 64 lowercase hex characters",
                    t.name, t.digest
                ));
            }
            Ok(format!("{} templates", list.len()))
        })
        .await;
}
