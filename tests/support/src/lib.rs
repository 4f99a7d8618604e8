//! Helpers shared by CrowNest's integration and end-to-end tests.
//!
//! [`fixture`] builds the test components in `tests/fixtures` (a separate
//! wasm32-wasip2 workspace, independent of the `crownest` crates) once per
//! test process and returns the path of one of them.

pub mod garage;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// The cargo target directory the running test binary was built into.
pub fn target_dir() -> PathBuf {
    // <target>/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// Build the fixtures (once per process) and return their output directory.
pub fn fixtures_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = target_dir().join("wasm-fixtures");
        let manifest = repo_root().join("tests/fixtures/Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("run cargo to build the test fixtures");
        assert!(
            output.status.success(),
            "building tests/fixtures for wasm32-wasip2 failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        target.join("wasm32-wasip2/release")
    })
}

/// Path of the fixture component `name` (crate name, e.g. `cas-artifacts`).
pub fn fixture(name: &str) -> PathBuf {
    let path = fixtures_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "fixture {} was not built", path.display());
    path
}

/// A file holding a minimal core WebAssembly module (not a component).
pub fn core_module(dir: &Path) -> PathBuf {
    let path = dir.join("core-module.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").expect("write core module");
    path
}
