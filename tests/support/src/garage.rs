//! A real single-node Garage (S3-compatible store) on loopback for tests:
//! its own directory and ports, one bucket, one key allowed on it. Installed
//! by `scripts/setup --test` (`cargo install garage --locked --version
//! 2.5.0`); stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Garage {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    config: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The garage executable: on PATH or in ~/.cargo/bin.
pub fn garage_bin() -> PathBuf {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("garage");
            if p.is_file() {
                return p;
            }
        }
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let p = home.join(".cargo/bin/garage");
    assert!(
        p.is_file(),
        "garage is not installed: run `scripts/setup --test` (cargo install garage --locked --version 2.5.0)"
    );
    p
}

fn run(config: &Path, args: &[&str]) -> String {
    let out = Command::new(garage_bin()).arg("-c").arg(config).args(args).output().expect("run garage");
    assert!(
        out.status.success(),
        "garage {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Garage {
    pub fn start() -> Garage {
        let dir = tempfile::Builder::new().prefix("crownest-garage-").tempdir_in("/tmp").unwrap();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let secret: String = (0..32).map(|i| format!("{:02x}", (i * 37 + 11) as u8)).collect();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
                d = dir.path().display()
            ),
        )
        .unwrap();
        let mut g = Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            region: "garage".into(),
            bucket: "crownest".into(),
            key_id: String::new(),
            secret: String::new(),
            config,
            child: None,
            _dir: dir,
        };
        g.spawn();
        let node = run(&g.config, &["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap().to_string();
        run(&g.config, &["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        run(&g.config, &["layout", "apply", "--version", "1"]);
        run(&g.config, &["bucket", "create", &g.bucket]);
        let key = run(&g.config, &["key", "create", "crownest-test"]);
        for line in key.lines() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("Key ID:") {
                g.key_id = v.trim().to_string();
            }
            if let Some(v) = line.strip_prefix("Secret key:") {
                g.secret = v.trim().to_string();
            }
        }
        assert!(!g.key_id.is_empty() && !g.secret.is_empty(), "unexpected `garage key create` output:\n{key}");
        run(&g.config, &["bucket", "allow", "--read", "--write", "--owner", &g.bucket, "--key", "crownest-test"]);
        g.wait_s3();
        g
    }

    fn spawn(&mut self) {
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start garage");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(garage_bin())
                .arg("-c")
                .arg(&self.config)
                .arg("status")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "garage did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_s3(&self) {
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "garage's S3 API did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the server (to simulate an outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same data.
    pub fn restart(&mut self) {
        self.spawn();
        self.wait_s3();
    }

    /// `host:port` of the S3 API.
    pub fn authority(&self) -> String {
        self.endpoint.trim_start_matches("http://").to_string()
    }

    /// An object's bytes, fetched independently with `curl --aws-sigv4`
    /// (Garage wants `x-amz-content-sha256`, which curl 7.88 does not send
    /// by itself; `?uploads=` because it signs a bare `?uploads` wrongly).
    pub fn curl_get(&self, object: &str) -> Option<Vec<u8>> {
        let out = Command::new("curl")
            .args([
                "-s",
                "-f",
                "-H",
                "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                "--aws-sigv4",
                "aws:amz:garage:s3",
                "--user",
            ])
            .arg(format!("{}:{}", self.key_id, self.secret))
            .arg(format!("{}/{}/{object}", self.endpoint, self.bucket))
            .output()
            .expect("run curl");
        out.status.success().then_some(out.stdout)
    }

    /// Multipart uploads in progress (the bucket's `?uploads` listing).
    pub fn multipart_uploads(&self) -> String {
        let out = Command::new("curl")
            .args(["-s", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "--aws-sigv4", "aws:amz:garage:s3", "--user"])
            .arg(format!("{}:{}", self.key_id, self.secret))
            .arg(format!("{}/{}?uploads=", self.endpoint, self.bucket))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The plugin config table for this node, as TOML.
    pub fn plugin_config(&self, prefix: &str, part_size: u64) -> String {
        format!(
            "endpoint = {:?}\nregion = {:?}\nbucket = {:?}\nprefix = {:?}\npath_style = true\naccess_key_id = {:?}\nsecret_access_key = {:?}\npart_size_bytes = {part_size}\nrequest_timeout_ms = 30000\nmax_attempts = 3\n",
            self.endpoint, self.region, self.bucket, prefix, self.key_id, self.secret
        )
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
