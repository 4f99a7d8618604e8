//! A real `crownest serve` process for end-to-end tests: its own data
//! directory, sandbox root and loopback port; killed (and its sandboxes
//! reaped by the next start or by the test's cleanup) when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub url: String,
    pub api_key: String,
    pub admin_token: String,
    pub data_dir: PathBuf,
    pub sandbox_root: PathBuf,
    pub child: Option<Child>,
    pub exe: PathBuf,
    pub env: Vec<(String, String)>,
    /// Every line the server wrote to stderr (its log), across restarts.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    port: u16,
    _dir: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    /// Start a server with extra `CROWNEST_*` settings.
    pub fn start(exe: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_with_root(exe, env, None)
    }

    /// Start a server whose sandboxes live under `sandbox_root` (shared with
    /// other servers: each installation has its own directory below it),
    /// or under a root of its own.
    pub fn start_with_root(exe: &Path, env: &[(&str, &str)], sandbox_root: Option<&Path>) -> Server {
        let dir = tempfile::Builder::new().prefix("crownest-e2e-").tempdir_in("/tmp").unwrap();
        let data_dir = dir.path().join("data");
        let sandbox_root = sandbox_root.map(Path::to_path_buf).unwrap_or_else(|| dir.path().join("sandboxes"));
        let mut s = Server {
            url: String::new(),
            api_key: String::new(),
            admin_token: String::new(),
            data_dir,
            sandbox_root,
            child: None,
            exe: exe.to_path_buf(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log: Default::default(),
            port: free_port(),
            _dir: Some(dir),
        };
        s.spawn();
        s
    }

    /// `crownest --data-dir <ours>` with none of the test process's own
    /// `CROWNEST_*` settings leaking in.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        for (k, _) in std::env::vars() {
            if k.starts_with("CROWNEST_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--data-dir").arg(&self.data_dir);
        cmd
    }

    /// (Re)start the process on the same data directory and port.
    pub fn spawn(&mut self) {
        let mut cmd = self.command();
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .env("CROWNEST_SANDBOX__ROOT", &self.sandbox_root)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start crownest serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line.clone());
                if line.contains("serving the API on") {
                    let _ = tx.send(Ok(()));
                }
                if line.starts_with("error:") {
                    let _ = tx.send(Err(line.clone()));
                }
                if std::env::var_os("CROWNEST_TEST_SERVER_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(())) => break,
                Ok(Err(line)) => panic!("crownest serve failed: {line}"),
                Err(_) if Instant::now() > deadline => panic!("crownest serve did not start"),
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("crownest serve exited: {status}");
                    }
                }
            }
        }
        let creds = std::fs::read_to_string(self.data_dir.join("credentials.json")).expect("credentials.json");
        let v: serde_json::Value = serde_json::from_str(&creds).unwrap();
        self.api_key = v["apiKey"].as_str().unwrap().to_string();
        self.admin_token = v["adminToken"].as_str().unwrap().to_string();
        self.url = format!("http://127.0.0.1:{}", self.port);
        self.child = Some(child);
    }

    /// This server's installation id (made at its first start).
    pub fn installation(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("installation-id")).expect("installation-id").trim().to_string()
    }

    /// Where this server's runtime provider keeps its sandbox cells.
    pub fn cells_dir(&self) -> PathBuf {
        self.sandbox_root.join(self.installation()).join("runtime_provider")
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Stop the server with SIGTERM and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `kill -9` the server.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A `crownest` command aimed at this server.
    pub fn cli(&self) -> Command {
        let mut cmd = self.command();
        cmd.env("CROWNEST_API_URL", &self.url).env("CROWNEST_SANDBOX__ROOT", &self.sandbox_root);
        cmd
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first so the server can stop cleanly.
        self.stop();
        // Unmount what a killed server left (only its own installation's,
        // when the root is shared); the temp dir goes next.
        let own = std::fs::read_to_string(self.data_dir.join("installation-id"))
            .map(|id| self.sandbox_root.join(id.trim()))
            .unwrap_or_else(|_| self.sandbox_root.clone());
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            let root = format!("{}/", own.display());
            for line in mounts.lines() {
                if let Some(target) = line.split(' ').nth(1).filter(|t| t.starts_with(&root)) {
                    let _ = Command::new("umount").args(["-l", target]).status();
                }
            }
        }
        // And its sandboxes' cgroups: nothing restarts on this root to reap
        // them, and a machine running the suite often would collect them.
        remove_cgroups(&self.sandbox_root, own.file_name().and_then(|n| n.to_str()));
    }
}

/// Remove the (empty, once the server is gone) cgroups of the sandboxes
/// under `root` (`<root>/<installation>/<owner>/<cell>`, cgroups in
/// `crownest/<installation>/<owner>.<cell>`), in every hierarchy a server
/// may have used.
fn remove_cgroups(root: &Path, only: Option<&str>) {
    let mut names = Vec::new();
    let mut installations = Vec::new();
    for inst in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let Some(inst_name) = inst.file_name().to_str().map(str::to_string) else { continue };
        if only.is_some_and(|o| o != inst_name) {
            continue;
        }
        installations.push(inst_name.clone());
        for owner in std::fs::read_dir(inst.path()).into_iter().flatten().flatten() {
            let Some(owner_name) = owner.file_name().to_str().map(str::to_string) else { continue };
            for cell in std::fs::read_dir(owner.path()).into_iter().flatten().flatten() {
                if cell.file_type().is_ok_and(|t| t.is_dir())
                    && let Some(n) = cell.file_name().to_str()
                {
                    names.push(format!("{inst_name}/{owner_name}.{n}"));
                }
            }
        }
    }
    if installations.is_empty() {
        return;
    }
    let mut parents = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        parents.push(h.path().join("crownest"));
        // v1 memory hierarchies may nest the server's own cgroup first.
        for sub in std::fs::read_dir(h.path()).into_iter().flatten().flatten() {
            for inner in std::fs::read_dir(sub.path()).into_iter().flatten().flatten() {
                parents.push(inner.path().join("crownest"));
            }
        }
    }
    parents.push(PathBuf::from("/sys/fs/cgroup/crownest"));
    let deadline = Instant::now() + Duration::from_secs(2);
    for parent in parents.iter().filter(|p| p.is_dir()) {
        for n in &names {
            let d = parent.join(n);
            while d.is_dir() && std::fs::remove_dir(&d).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The installation's own level goes when it is empty.
        for inst in &installations {
            let _ = std::fs::remove_dir(parent.join(inst));
        }
    }
}
