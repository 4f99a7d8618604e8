//! End to end through the real `crownest` binary: the embedded defaults, a
//! backend swapped by configuration alone (no rebuild), the conformance
//! suite's pass and fail, and bad plugin configurations.

use std::path::Path;
use std::process::{Command, Output};

use crownest_test_support::{core_module, fixture};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn crownest(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crownest"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CROWNEST_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--data-dir").arg(data_dir).args(args).envs(env.iter().copied());
    let Output { status, stdout, stderr } = cmd.output().expect("run crownest");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn json(run: &Run) -> serde_json::Value {
    assert_eq!(run.code, 0, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

fn plugin<'a>(list: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    list["data"].as_array().unwrap().iter().find(|p| p["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in {list}"))
}

#[test]
fn with_no_config_the_embedded_defaults_are_active() {
    let data = tempfile::tempdir().unwrap();
    let list = json(&crownest(data.path(), &["plugins", "list", "--json"], &[]));
    let store = plugin(&list, "artifact-store");
    assert_eq!(store["source"], "builtin:fs-artifacts");
    assert_eq!(store["witVersion"], "0.1.0");
    assert_eq!(store["sha256"].as_str().unwrap().len(), 64);
    let grant = format!("filesystem={}/artifacts", data.path().display());
    assert_eq!(store["grants"], serde_json::json!([grant]));
    assert_eq!(plugin(&list, "auth-scoper")["source"], "builtin:scoped-keys");
    assert_eq!(plugin(&list, "meter")["source"], "builtin:compute-meter");

    let table = crownest(data.path(), &["plugins", "list"], &[]);
    assert!(table.stdout.starts_with("KIND"), "{}", table.stdout);
    assert!(table.stdout.contains("builtin:fs-artifacts"), "{}", table.stdout);
}

#[test]
fn a_config_file_swaps_the_artifact_store_without_rebuilding() {
    let data = tempfile::tempdir().unwrap();
    let store_dir = data.path().join("cas-store");
    let config = data.path().join("crownest.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins.artifact_store]\nsource = {:?}\ngrants = {{ filesystem = {:?} }}\n",
            fixture("cas-artifacts").display().to_string(),
            store_dir.display().to_string()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();

    let list = json(&crownest(data.path(), &["--config", cfg, "plugins", "list", "--json"], &[]));
    let store = plugin(&list, "artifact-store");
    assert_eq!(store["name"], "cas_artifacts");
    assert_eq!(store["builtin"], false);

    // The already-built binary really uses it: doctor's round trip goes
    // through the plugin (its locators are `cas:<key>`) into its directory.
    let doctor = crownest(data.path(), &["--config", cfg, "doctor"], &[]);
    assert!(doctor.stdout.contains("cas_artifacts: ready"), "{}", doctor.stdout);
    assert!(doctor.stdout.contains("`cas:doctor/probe.txt`"), "{}", doctor.stdout);
    assert!(store_dir.join("cas").is_dir());
}

#[test]
fn an_environment_variable_swaps_it_too() {
    let data = tempfile::tempdir().unwrap();
    let path = fixture("cas-artifacts").display().to_string();
    let dir = data.path().join("env-store").display().to_string();
    let env = [
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__SOURCE", path.as_str()),
        ("CROWNEST_PLUGINS__ARTIFACT_STORE__GRANTS__FILESYSTEM", dir.as_str()),
    ];
    let list = json(&crownest(data.path(), &["plugins", "list", "--json"], &env));
    assert_eq!(plugin(&list, "artifact-store")["source"], path);
}

#[test]
fn plugins_check_passes_an_independent_store_and_fails_the_wrong_world() {
    let data = tempfile::tempdir().unwrap();
    let pass =
        crownest(data.path(), &["plugins", "check", "artifact-store", fixture("cas-artifacts").to_str().unwrap()], &[]);
    assert_eq!(pass.code, 0, "{}{}", pass.stdout, pass.stderr);
    assert!(!pass.stdout.contains("FAIL"), "{}", pass.stdout);
    assert!(pass.stdout.contains("PASS  put-large-streamed"), "{}", pass.stdout);

    let fail =
        crownest(data.path(), &["plugins", "check", "artifact-store", fixture("wrong-world").to_str().unwrap()], &[]);
    assert_eq!(fail.code, 1, "{}", fail.stdout);
    assert!(fail.stdout.contains("FAIL  load"), "{}", fail.stdout);
    assert!(fail.stdout.contains("does not implement the artifact-store world"), "{}", fail.stdout);
    assert!(fail.stdout.contains("configure it under [plugins.auth_scoper]"), "{}", fail.stdout);

    let listed = json(&crownest(data.path(), &["plugins", "check", "meter", "builtin:compute-meter", "--json"], &[]));
    assert_eq!(listed["data"]["passed"], true);
}

fn failing_config(data: &Path, table: &str) -> Run {
    let config = data.join("crownest.toml");
    std::fs::write(&config, table).unwrap();
    let run = crownest(data, &["--config", config.to_str().unwrap(), "plugins", "list"], &[]);
    assert_eq!(run.code, 1, "expected failure: {}{}", run.stdout, run.stderr);
    run
}

#[test]
fn bad_plugin_configurations_are_refused_clearly() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();

    let run = failing_config(d, "[plugins.meter]\nsource = \"/nowhere/meter.wasm\"\n");
    assert!(run.stderr.contains("plugin file /nowhere/meter.wasm not found"), "{}", run.stderr);

    let run = failing_config(d, "[plugins.artifact_store]\nsource = \"builtin:s3\"\n");
    assert!(run.stderr.contains("unknown builtin plugin `builtin:s3`"), "{}", run.stderr);

    let core = core_module(d);
    let run = failing_config(d, &format!("[plugins.meter]\nsource = {:?}\n", core.display().to_string()));
    assert!(run.stderr.contains("core WebAssembly module, not a component"), "{}", run.stderr);

    let probe = fixture("http-probe").display().to_string();
    let run = failing_config(d, &format!("[plugins.artifact_store]\nsource = {probe:?}\n"));
    assert!(run.stderr.contains("imports `wasi:http/outgoing-handler@0.2.12` but was not granted"), "{}", run.stderr);

    let run = failing_config(d, "[plugins.meter]\nsorce = \"builtin:compute-meter\"\n");
    assert!(run.stderr.contains("sorce"), "{}", run.stderr);
}

#[test]
fn plugins_check_runs_real_sandboxes_for_the_runtime_provider() {
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("sbx").display().to_string();
    let env = [("CROWNEST_SANDBOX__ROOT", root.as_str())];
    let run = crownest(data.path(), &["plugins", "check", "runtime-provider", "builtin:linux-sandbox"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for check in ["PASS  create-sandbox", "PASS  exec ", "PASS  extract-hostile-archive", "PASS  destroy"] {
        assert!(run.stdout.contains(check), "missing {check:?}:\n{}", run.stdout);
    }
}

#[test]
fn templates_list_names_digests_and_usability() {
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("sbx").display().to_string();
    let env = [("CROWNEST_SANDBOX__ROOT", root.as_str())];
    let list = json(&crownest(data.path(), &["templates", "list", "--json"], &env));
    let names: Vec<&str> = list["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["base", "node", "python", "python-node"]);
    for t in list["data"].as_array().unwrap() {
        assert_eq!(t["digest"].as_str().unwrap().len(), 64);
        assert_eq!(t["usable"], true, "{t}");
        assert_eq!(t["networkEgress"], false);
    }

    // A template whose requirements are missing is listed as unusable, with the reason.
    let config = data.path().join("crownest.toml");
    std::fs::write(
        &config,
        r#"
[plugins.runtime_provider.config.templates.fortran]
name = "fortran"
description = "needs gfortran"
compute_units = 2
network = "none"
requires = ["/usr/bin/gfortran-does-not-exist"]
rootfs = { binds = ["/usr"] }
limits = { memory_mib = 512, pids = 64, cpu_millicores = 500, disk_mib = 256, tmp_mib = 64, open_files = 256, timeout_ms = 60000 }
"#,
    )
    .unwrap();
    let list =
        json(&crownest(data.path(), &["--config", config.to_str().unwrap(), "templates", "list", "--json"], &env));
    let fortran = list["data"].as_array().unwrap().iter().find(|t| t["name"] == "fortran").unwrap();
    assert_eq!(fortran["usable"], false);
    assert!(fortran["unusableReason"].as_str().unwrap().contains("/usr/bin/gfortran-does-not-exist"), "{fortran}");
}

/// `doctor` says how sandboxes are scheduled, as configured, and a policy
/// that does not exist is refused with the values that do.
#[test]
fn doctor_reports_the_sandbox_scheduling_policy() {
    let data = tempfile::tempdir().unwrap();
    let batch = crownest(data.path(), &["doctor"], &[]);
    assert!(batch.stdout.contains("scheduling") && batch.stdout.contains("SCHED_BATCH"), "{}", batch.stdout);
    let normal = crownest(data.path(), &["doctor"], &[("CROWNEST_SANDBOX__SCHEDULING", "normal")]);
    assert!(normal.stdout.contains("SCHED_OTHER"), "{}", normal.stdout);
    let bad = crownest(data.path(), &["doctor"], &[("CROWNEST_SANDBOX__SCHEDULING", "fifo")]);
    assert_ne!(bad.code, 0);
    let said = format!("{}{}", bad.stdout, bad.stderr);
    assert!(said.contains("fifo") && said.contains("batch") && said.contains("normal"), "{said}");
}
