//! Load-time checks of a component's shape: is it a component, does it
//! implement the expected world, and does it import only what the host
//! provides and the config granted?

use crownest_core::config::Grants;
use crownest_core::{FaultKind, PluginError, PluginKind};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The `crownest:host` version this host implements.
pub const HOST_WIT_VERSION: &str = "0.1.0";

/// Interfaces every plugin may import.
const UNGATED: &[&str] = &[
    "crownest:host/types",
    "crownest:host/log",
    "crownest:host/config",
    "crownest:host/kv",
    "crownest:host/digest",
    "crownest:host/process",
    "wasi:http/types",
];

/// WASI packages a standard library pulls in; linked with an empty context
/// (no environment, no stdio, no preopens unless granted, sockets denied).
const UNGATED_WASI: &[&str] =
    &["wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:cli/", "wasi:filesystem/", "wasi:sockets/"];

/// What the first bytes say the file is.
pub fn check_binary(bytes: &[u8], name: &str) -> Result<(), PluginError> {
    let load = |m: String| Err(PluginError::fault(FaultKind::Load, m));
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return load(format!("plugin `{name}` is not a WebAssembly file (no `\\0asm` header)"));
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => load(format!(
            "plugin `{name}` is a core WebAssembly module, not a component: build it with \
             `cargo build --target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
        )),
        _ => load(format!("plugin `{name}` has an unknown WebAssembly version header")),
    }
}

/// Split `ns:pkg/iface@1.2.3` into (`ns:pkg/iface`, `1.2.3`).
fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (name, None),
    }
}

/// The export a plugin of `kind` must have, and its version when present.
/// Errors name what the component does export and, when it is another
/// kind's world, which one.
pub fn check_world(
    component: &Component,
    engine: &Engine,
    kind: PluginKind,
    name: &str,
) -> Result<String, PluginError> {
    let want = format!("{}/{}", kind.wit_package(), kind.export_interface());
    let exports: Vec<String> = component.component_type().exports(engine).map(|(n, _)| n.to_string()).collect();
    for export in &exports {
        let (iface, version) = split_version(export);
        if iface == want {
            let version = version.unwrap_or("unversioned").to_string();
            if !version.starts_with("0.1.") {
                return Err(PluginError::fault(
                    FaultKind::Load,
                    format!(
                        "plugin `{name}` implements {want}@{version}, but this host speaks {want}@0.1.x; \
                         rebuild it against the WIT in this release's `wit/` directory"
                    ),
                ));
            }
            return Ok(version);
        }
    }
    let other = PluginKind::ALL.into_iter().find(|k| {
        let iface = format!("{}/{}", k.wit_package(), k.export_interface());
        exports.iter().any(|e| split_version(e).0 == iface)
    });
    let hint = match other {
        Some(k) => format!("; it implements the {k} world: configure it under [plugins.{}] instead", k.config_key()),
        None => String::new(),
    };
    Err(PluginError::fault(
        FaultKind::Load,
        format!(
            "plugin `{name}` does not implement the {kind} world: it must export `{want}@0.1.0`, \
             but exports [{}]{hint}",
            exports.join(", ")
        ),
    ))
}

/// Every import of the component, refusing unknown and ungranted ones.
pub fn check_imports(
    component: &Component,
    engine: &Engine,
    kind: PluginKind,
    grants: &Grants,
    name: &str,
) -> Result<Vec<String>, PluginError> {
    let mut imports = Vec::new();
    for (import, _) in component.component_type().imports(engine) {
        let (iface, _) = split_version(import);
        let refuse = |why: String| Err(PluginError::fault(FaultKind::Load, format!("plugin `{name}` ({kind}) {why}")));
        if iface == "wasi:http/outgoing-handler" {
            if grants.http.is_empty() {
                return refuse(format!(
                    "imports `{import}` but was not granted outgoing HTTP; add \
                     `grants.http = [\"host:port\"]` to [plugins.{}] to allow it",
                    kind.config_key()
                ));
            }
        } else if iface == "crownest:host/sandbox" {
            if !grants.sandbox {
                return refuse(format!(
                    "imports `{import}` but was not granted the sandbox mechanisms; add \
                     `grants.sandbox = true` to [plugins.{}] to allow it",
                    kind.config_key()
                ));
            }
        } else if !UNGATED.contains(&iface) && !UNGATED_WASI.iter().any(|p| iface.starts_with(p)) {
            return refuse(format!(
                "imports `{import}`, which CrowNest does not provide; a plugin may import the \
                 crownest:host@{HOST_WIT_VERSION} interfaces, WASI 0.2 and (when granted) wasi:http"
            ));
        }
        imports.push(import.to_string());
    }
    Ok(imports)
}
