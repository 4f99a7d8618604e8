//! The flags that describe a new run, parsed into the API's request body,
//! and the command line after `--`. A malformed flag is a clap error (exit
//! 2), caught before anything is sent.

use crownest_client::types::{ArtifactSpec, NewRun};

#[derive(clap::Args, Clone)]
pub struct RunFlags {
    /// Project to create the run in (default: the key's project).
    #[arg(long)]
    project: Option<String>,
    /// Template slug (python-node is the launch default).
    #[arg(long, default_value = "python-node")]
    template: String,
    /// Warm sandbox to reuse.
    #[arg(long)]
    sandbox: Option<String>,
    /// Keep the sandbox after the run.
    #[arg(long)]
    keep_sandbox: bool,
    /// Command timeout in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Metadata label as key=value (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = key_value)]
    metadata: Vec<(String, String)>,
    /// A file to keep as an artifact, PATH[=NAME] (repeatable).
    #[arg(long = "artifact", value_name = "PATH[=NAME]", value_parser = artifact)]
    artifacts: Vec<ArtifactSpec>,
}

impl RunFlags {
    /// The request body creating a run of `command` with these flags.
    pub fn new_run(&self, command: String, auto_start: bool) -> NewRun {
        NewRun {
            command,
            template: self.template.clone(),
            project_id: self.project.clone(),
            sandbox_id: self.sandbox.clone(),
            keep_sandbox: self.keep_sandbox,
            timeout_ms: self.timeout_ms,
            metadata: self.metadata.iter().cloned().collect(),
            artifacts: self.artifacts.clone(),
            auto_start,
        }
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE (e.g. --metadata repo=acme/app)")),
    }
}

fn artifact(s: &str) -> Result<ArtifactSpec, String> {
    let (path, name) = match s.split_once('=') {
        Some((p, n)) => (p, Some(n.to_string())),
        None => (s, None),
    };
    if path.is_empty() || name.as_deref() == Some("") {
        return Err(format!("`{s}` is not PATH[=NAME] (e.g. --artifact dist/report.html=report)"));
    }
    Ok(ArtifactSpec { path: path.to_string(), name })
}

/// The command line from the words after `--`: one word is taken as a
/// command line as it is (`-- "pnpm test && echo ok"`); several are quoted
/// for the shell and joined (`-- python3 main.py "a b"`).
pub fn shell_join(args: &[String]) -> String {
    if let [one] = args {
        return one.clone();
    }
    args.iter()
        .map(|a| {
            if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_artifacts_must_have_their_shape() {
        assert_eq!(key_value("repo=acme/app=x").unwrap(), ("repo".into(), "acme/app=x".into()));
        assert_eq!(key_value("empty=").unwrap(), ("empty".into(), String::new()));
        assert!(key_value("novalue").unwrap_err().contains("KEY=VALUE"));
        assert!(key_value("=v").is_err());
        assert_eq!(artifact("out/r.txt=r").unwrap().name.as_deref(), Some("r"));
        assert!(artifact("out/r.txt").unwrap().name.is_none());
        assert!(artifact("=r").is_err() && artifact("p=").is_err());
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_join(&["pnpm test && echo ok".into()]), "pnpm test && echo ok");
        assert_eq!(
            shell_join(&["python3".into(), "main.py".into(), "a b".into(), "it's".into()]),
            r"python3 main.py 'a b' 'it'\''s'"
        );
    }
}
