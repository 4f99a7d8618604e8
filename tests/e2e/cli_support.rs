//! Helpers of the CLI end-to-end tests (`cli.rs`): a CLI process watched
//! while it runs, a stdout whose reader is gone, a terminal for stdin, a
//! fake remote server that records what it was sent, and a proxy that
//! stalls an upload part-way.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A CLI process running in the background, its stdout lines and stderr
/// collected as they come.
pub struct Live {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
}

impl Live {
    pub fn start(cmd: &mut Command) -> Live {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start crownest");
        let (tx, lines) = mpsc::channel();
        let (stdout, stderr) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
        let (out, so) = (child.stdout.take().unwrap(), stdout.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                so.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let (mut err, se) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                se.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Live { child, lines, stdout, stderr }
    }

    /// Wait for a stdout line equal to `want`.
    pub fn wait_line(&self, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line `{want}` on stdout within {within:?}; stderr: {}", self.stderr());
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The run id the CLI announced on stderr (`crownest: workspace run wsr_…`).
    pub fn run_id(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let err = self.stderr();
            if let Some(rest) = err.split("workspace run ").nth(1) {
                let id: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !id.is_empty() && rest.len() > id.len() {
                    return id;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no run id on stderr: {}", self.stderr());
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Wait for the process to end (killing it after `within`).
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("crownest did not end within {within:?}; stderr: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether a process ended quietly on a closed stdout: killed by SIGPIPE
/// (a shell's 141), or exit 0, and without a panic message.
pub fn ended_quietly(status: ExitStatus, stderr: &[u8]) -> Result<(), String> {
    let err = String::from_utf8_lossy(stderr);
    let quiet_status = status.signal() == Some(libc::SIGPIPE) || matches!(status.code(), Some(0 | 141));
    if quiet_status && !err.contains("panicked") && !err.contains("Broken pipe") {
        Ok(())
    } else {
        Err(format!("{status:?}, stderr: {err}"))
    }
}

/// A stdout for a child whose reader is already gone: a pipe with its read
/// end closed.
pub fn closed_stdout() -> Stdio {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two new descriptors; we close the read end and
    // hand the write end to the child.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        libc::close(fds[0]);
        Stdio::from(OwnedFd::from_raw_fd(fds[1]))
    }
}

/// A pseudo-terminal: (the master, kept open while the child runs; the
/// slave, for the child's stdin).
pub fn pty() -> (OwnedFd, Stdio) {
    // SAFETY: the POSIX pty calls on a descriptor we own; ptsname_r writes
    // into our buffer.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(slave >= 0, "open the pty slave");
        (OwnedFd::from_raw_fd(master), Stdio::from(OwnedFd::from_raw_fd(slave)))
    }
}

/// A fake server that answers every request with an empty page and keeps
/// the request heads it was sent.
pub struct FakeRemote {
    pub url: String,
    pub heads: Arc<Mutex<Vec<String>>>,
}

impl FakeRemote {
    pub fn start() -> FakeRemote {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = heads.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                let body = br#"{"data":{"items":[],"nextCursor":null}}"#;
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(body);
            }
        });
        FakeRemote { url, heads }
    }

    pub fn heads(&self) -> String {
        self.heads.lock().unwrap().join("\n")
    }
}

/// A TCP proxy in front of a server that forwards at most `budget` bytes
/// from clients and then holds everything (an upload stalled part-way),
/// until [`Stall::release`] drops the held connections and lets new ones
/// through unhindered.
pub struct Stall {
    pub url: String,
    budget: Arc<AtomicI64>,
    open: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    /// Bytes forwarded from clients since the last release.
    pub forwarded: Arc<AtomicU64>,
}

impl Stall {
    pub fn start(upstream: &str, budget: i64) -> Stall {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let s = Stall {
            url,
            budget: Arc::new(AtomicI64::new(budget)),
            open: Arc::default(),
            generation: Arc::default(),
            forwarded: Arc::default(),
        };
        let (b, o, g, f) = (s.budget.clone(), s.open.clone(), s.generation.clone(), s.forwarded.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let (mut c_out, mut s_in) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_in, &mut c_out);
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
                let (b, o, g, f) = (b.clone(), o.clone(), g.clone(), f.clone());
                std::thread::spawn(move || forward(client, server, &b, &o, &g, &f));
            }
        });
        s
    }

    /// Whether the budget is spent (the upload is held).
    pub fn stalled(&self) -> bool {
        self.budget.load(Ordering::SeqCst) <= 0
    }

    /// Drop the held connections; forward everything from now on.
    pub fn release(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.forwarded.store(0, Ordering::SeqCst);
        self.open.store(true, Ordering::SeqCst);
    }
}

fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    budget: &AtomicI64,
    open: &AtomicBool,
    generation: &AtomicU64,
    forwarded: &AtomicU64,
) {
    let born = generation.load(Ordering::SeqCst);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut off = 0;
        while off < n {
            if generation.load(Ordering::SeqCst) != born {
                let _ = server.shutdown(std::net::Shutdown::Both);
                let _ = client.shutdown(std::net::Shutdown::Both);
                return;
            }
            let take = if open.load(Ordering::SeqCst) {
                n - off
            } else {
                let left = budget.load(Ordering::SeqCst);
                if left <= 0 {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let take = (left as usize).min(n - off);
                budget.fetch_sub(take as i64, Ordering::SeqCst);
                take
            };
            if server.write_all(&buf[off..off + take]).is_err() {
                return;
            }
            forwarded.fetch_add(take as u64, Ordering::SeqCst);
            off += take;
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Write);
}
