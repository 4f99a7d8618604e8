//! Logs to stderr: which lines (`CROWNEST_LOG`) and in which form (text, or
//! JSON lines for log shippers with `log_format = "json"` /
//! `CROWNEST_LOG_FORMAT=json`).
//!
//! `CROWNEST_LOG` is either a bare level, meaning CrowNest's own crates at
//! that level and everything else at `warn` (a bare `debug` for every crate
//! is ~99% Cranelift: tens of thousands of lines a second), or an
//! `EnvFilter` string (`warn,crownest_server=debug`). Anything else is an
//! error naming the variable, never silently ignored. Colours only on a
//! terminal: under systemd or in a file they are noise.

use std::io::IsTerminal;
use std::sync::OnceLock;

use crownest_core::config::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// The filter when `CROWNEST_LOG` is unset: warnings, and CrowNest's own
/// info lines.
const DEFAULT: &str = "warn,crownest=info";

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Whether logs (and so the server's start-up notes and errors) are JSON.
pub fn is_json() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

/// The filter directives `CROWNEST_LOG=value` stands for.
fn directives(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(DEFAULT.into());
    }
    if let Ok(level) = value.parse::<LevelFilter>() {
        // CrowNest's targets all start with `crownest` (crates
        // `crownest_*`, plugin logs `crownest::plugin`).
        return Ok(if level > LevelFilter::WARN { format!("warn,crownest={level}") } else { level.to_string() });
    }
    // EnvFilter reads a bare word as "this target at every level", so a
    // misspelt level (`verbose`, `dbug`) would silently log nothing more.
    for d in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !(d.contains('=') || d.contains('[') || d.contains("::") || d.parse::<LevelFilter>().is_ok()) {
            return Err(format!("`{d}` is neither a level (error, warn, info, debug, trace, off) nor target=level"));
        }
    }
    Ok(value.to_string())
}

/// The filter for `CROWNEST_LOG`'s value, or what is wrong with it.
pub fn filter(value: Option<&str>) -> Result<EnvFilter, String> {
    let raw = value.unwrap_or("");
    let why = |e: String| {
        format!(
            "CROWNEST_LOG=`{raw}` is not a log filter: {e}; use a level (CROWNEST_LOG=debug) or an EnvFilter string (CROWNEST_LOG=warn,crownest_server=debug)"
        )
    };
    let d = directives(raw).map_err(why)?;
    EnvFilter::builder().parse(&d).map_err(|e| why(e.to_string()))
}

/// Install the stderr logger. Fails (naming the variable) when
/// `CROWNEST_LOG` is not a filter.
pub fn init(format: LogFormat) -> Result<(), String> {
    let value = std::env::var("CROWNEST_LOG").ok();
    let filter = filter(value.as_deref())?;
    let _ = FORMAT.set(format);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed stderr must not turn into a panic of its own.
        .log_internal_errors(false);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).try_init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{directives, filter};

    #[test]
    fn a_bare_level_is_crownest_at_that_level_and_the_rest_at_warn() {
        assert_eq!(directives("debug").unwrap(), "warn,crownest=debug");
        assert_eq!(directives(" TRACE ").unwrap(), "warn,crownest=trace");
        assert_eq!(directives("info").unwrap(), "warn,crownest=info");
        assert_eq!(directives("error").unwrap(), "error");
        assert_eq!(directives("").unwrap(), "warn,crownest=info");
        assert_eq!(directives("warn,cranelift=debug").unwrap(), "warn,cranelift=debug");
    }

    #[test]
    fn what_is_not_a_filter_is_an_error_naming_the_variable() {
        for bad in ["verbose", "warn,dbug", "crownest=[", "crownest=loud"] {
            let e = filter(Some(bad)).unwrap_err();
            assert!(e.contains("CROWNEST_LOG") && e.contains(bad), "{bad}: {e}");
        }
        assert!(filter(Some("crownest_core::runs=trace,warn")).is_ok());
    }
}
