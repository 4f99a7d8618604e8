//! Builds the default plugins (`plugins/`) for wasm32-wasip2 and generates
//! `builtins.rs`, which embeds them in the host with `include_bytes!`.
//!
//! The nested cargo uses its own target directory (next to the outer one) so
//! it never waits on the outer build's lock, and gets a clean environment so
//! the outer build's flags and target do not leak into the wasm build.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (builtin name = crate directory, wasm file stem)
const BUILTINS: &[(&str, &str)] = &[
    ("fs-artifacts", "fs_artifacts"),
    ("scoped-keys", "scoped_keys"),
    ("compute-meter", "compute_meter"),
    ("linux-sandbox", "linux_sandbox"),
    ("s3-artifacts", "s3_artifacts"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let repo = manifest_dir.join("../..").canonicalize().unwrap();
    let plugins = repo.join("plugins");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());

    for path in ["plugins/Cargo.toml", "plugins/Cargo.lock", "plugins/store-keys", "wit", "templates"] {
        println!("cargo:rerun-if-changed={}", repo.join(path).display());
    }
    for (name, _) in BUILTINS {
        println!("cargo:rerun-if-changed={}", plugins.join(name).join("src").display());
        println!("cargo:rerun-if-changed={}", plugins.join(name).join("Cargo.toml").display());
    }

    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: share one wasm
    // target dir between debug, release and test builds.
    let target_dir =
        out_dir.ancestors().nth(4).map(|t| t.join("wasm-plugins")).unwrap_or_else(|| out_dir.join("wasm-plugins"));

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    scrub_env(&mut cmd);
    let output = cmd.output().expect("failed to run cargo to build the default plugins");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
            "\nhint: install the wasm target with `rustup target add wasm32-wasip2` (scripts/setup does it)"
        } else {
            ""
        };
        panic!("building the default plugins for wasm32-wasip2 failed:\n{stderr}{hint}");
    }

    let wasm_dir = target_dir.join("wasm32-wasip2/release");
    let mut generated = String::from("/// Default plugins embedded at build time: (name, component bytes).\n");
    generated.push_str("pub static EMBEDDED: &[(&str, &[u8])] = &[\n");
    for (name, file) in BUILTINS {
        let src = wasm_dir.join(format!("{file}.wasm"));
        let dst = out_dir.join(format!("{name}.wasm"));
        copy_if_changed(&src, &dst);
        writeln!(generated, "    ({name:?}, include_bytes!({:?})),", dst.display().to_string()).unwrap();
    }
    generated.push_str("];\n");
    std::fs::write(out_dir.join("builtins.rs"), generated).unwrap();
}

fn copy_if_changed(src: &Path, dst: &Path) {
    let new = std::fs::read(src).unwrap_or_else(|e| panic!("missing plugin build output {}: {e}", src.display()));
    if std::fs::read(dst).ok().as_deref() != Some(&new[..]) {
        std::fs::write(dst, new).unwrap();
    }
}

fn scrub_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let leaks = key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                key,
                "CARGO_ENCODED_RUSTFLAGS"
                    | "RUSTFLAGS"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_BUILD_TARGET"
                    | "CARGO_BUILD_RUSTFLAGS"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_CRATE_NAME"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "TARGET"
                    | "HOST"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "PROFILE"
                    | "OUT_DIR"
                    | "NUM_JOBS"
            );
        if leaks {
            cmd.env_remove(key);
        }
    }
}
