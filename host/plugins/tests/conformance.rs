//! `plugins check` passes on every builtin and on an independent component,
//! and reports a trapping plugin as failures rather than crashing.

use crownest_core::PluginKind;
use crownest_plugins::PluginSource;
use crownest_plugins::conformance::{self, CheckOptions};
use crownest_test_support::fixture;

async fn check(kind: PluginKind, source: PluginSource, opts: CheckOptions) -> conformance::Report {
    conformance::run(kind, &source, opts).await
}

fn failures(report: &conformance::Report) -> Vec<String> {
    report.checks.iter().filter(|c| !c.passed).map(|c| format!("{}: {}", c.name, c.detail)).collect()
}

#[tokio::test]
async fn every_builtin_passes_its_suite() {
    for (kind, name) in [
        (PluginKind::ArtifactStore, "fs-artifacts"),
        (PluginKind::AuthScoper, "scoped-keys"),
        (PluginKind::Meter, "compute-meter"),
    ] {
        let report = check(kind, PluginSource::Builtin(name.into()), CheckOptions::default()).await;
        assert!(report.passed(), "{name}: {:?}", failures(&report));
        assert!(report.checks.len() >= 8, "{name} ran only {} checks", report.checks.len());
    }
}

#[tokio::test]
async fn an_independent_store_passes() {
    let report =
        check(PluginKind::ArtifactStore, PluginSource::Path(fixture("cas-artifacts")), CheckOptions::default()).await;
    assert!(report.passed(), "{:?}", failures(&report));
}

#[tokio::test]
async fn a_trapping_store_fails_with_lines_that_say_so() {
    let mut opts = CheckOptions::default();
    opts.plugin_config.insert("mode".into(), "trap".into());
    let report = check(PluginKind::ArtifactStore, PluginSource::Path(fixture("misbehave")), opts).await;
    assert!(!report.passed());
    let check_line = report.checks.iter().find(|c| c.name == "check").unwrap();
    assert!(!check_line.passed && check_line.detail.contains("failed instead of answering"), "{check_line:?}");
}

#[tokio::test]
async fn wrong_world_fails_at_load_with_a_useful_message() {
    let report = check(PluginKind::Meter, PluginSource::Path(fixture("wrong-world")), CheckOptions::default()).await;
    assert!(!report.passed());
    assert_eq!(report.checks.len(), 1);
    assert!(report.checks[0].detail.contains("does not implement the meter world"), "{:?}", report.checks[0]);
}
