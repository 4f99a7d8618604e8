//! The jail helper: the tiny first process of every sandbox.
//!
//! The server never forks itself (copying a wasmtime host's page tables is
//! slow); it `posix_spawn`s its own executable as
//! `crownest __crownest_jail [options] -- <bwrap> <args>`, and this code runs
//! before anything else in `main`. In order, it: joins the sandbox's cgroups
//! (so every process bwrap starts is born inside them), sets rlimits, writes
//! the seccomp program to a memfd at fd 3 and closes every other fd, drops
//! to the sandbox's unprivileged host uid (so an escape lands as nobody),
//! asks for SIGKILL if the server dies, resets signal dispositions, puts
//! itself under `SCHED_BATCH` (unless told otherwise) and execs bubblewrap.

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use crate::bwrap::SECCOMP_FD_PLACEHOLDER;
use crate::seccomp;

/// First argument that selects the helper.
pub const ARG: &str = "__crownest_jail";

/// Options the server passes to the helper.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JailOptions {
    pub procs_files: Vec<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub nofile: Option<u32>,
    /// `RLIMIT_NPROC`: only meaningful with a per-sandbox uid, where it
    /// counts exactly the sandbox's processes.
    pub nproc: Option<u32>,
    /// Run the sandbox under `SCHED_BATCH` (see [`SandboxConfig::batch_scheduling`](crate::host::SandboxConfig::batch_scheduling)).
    pub batch: bool,
}

impl JailOptions {
    /// The helper's command line before `--`.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![ARG.to_string()];
        for f in &self.procs_files {
            a.extend(["--procs".into(), f.clone()]);
        }
        if let (Some(u), Some(g)) = (self.uid, self.gid) {
            a.extend(["--uid".into(), u.to_string(), "--gid".into(), g.to_string()]);
        }
        if let Some(n) = self.nofile {
            a.extend(["--nofile".into(), n.to_string()]);
        }
        if let Some(n) = self.nproc {
            a.extend(["--nproc".into(), n.to_string()]);
        }
        if self.batch {
            a.extend(["--sched".into(), "batch".into()]);
        }
        a.push("--".into());
        a
    }
}

fn die(msg: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "crownest-jail: {msg}");
    std::process::exit(125);
}

fn check(rc: i32, what: &str) {
    if rc != 0 {
        die(&format!("{what}: {}", std::io::Error::last_os_error()));
    }
}

/// If this process was started as the jail helper, do its job and exec
/// bubblewrap (never returning). Otherwise return and let `main` go on.
pub fn run_if_invoked() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).map(|a| a.as_bytes()) != Some(ARG.as_bytes()) {
        return;
    }
    let mut opts = JailOptions::default();
    let mut i = 2;
    let text =
        |i: usize| args.get(i).and_then(|a| a.to_str()).unwrap_or_else(|| die("malformed arguments")).to_string();
    let num = |i: usize| text(i).parse::<u32>().unwrap_or_else(|_| die("malformed number"));
    while i < args.len() && args[i] != "--" {
        match text(i).as_str() {
            "--procs" => opts.procs_files.push(text(i + 1)),
            "--uid" => opts.uid = Some(num(i + 1)),
            "--gid" => opts.gid = Some(num(i + 1)),
            "--nofile" => opts.nofile = Some(num(i + 1)),
            "--nproc" => opts.nproc = Some(num(i + 1)),
            "--sched" => match text(i + 1).as_str() {
                "batch" => opts.batch = true,
                other => die(&format!("unknown scheduling policy {other}")),
            },
            other => die(&format!("unknown option {other}")),
        }
        i += 2;
    }
    let program: Vec<OsString> = args.get(i + 1..).map(<[_]>::to_vec).unwrap_or_default();
    if program.is_empty() {
        die("nothing to execute");
    }
    jail(&opts, program)
}

fn jail(opts: &JailOptions, program: Vec<OsString>) -> ! {
    for f in &opts.procs_files {
        // "0" moves the writing process.
        if let Err(e) = std::fs::write(f, "0") {
            die(&format!("cannot join cgroup {f}: {e}"));
        }
    }
    // SAFETY: plain libc calls in a single-threaded process about to exec.
    unsafe {
        if let Some(n) = opts.nofile {
            let lim = libc::rlimit { rlim_cur: libc::rlim_t::from(n), rlim_max: libc::rlim_t::from(n) };
            check(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), "setrlimit(NOFILE)");
        }
        if let Some(n) = opts.nproc {
            let lim = libc::rlimit { rlim_cur: libc::rlim_t::from(n), rlim_max: libc::rlim_t::from(n) };
            check(libc::setrlimit(libc::RLIMIT_NPROC, &lim), "setrlimit(NPROC)");
        }
        let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        check(libc::setrlimit(libc::RLIMIT_CORE, &zero), "setrlimit(CORE)");

        let name = CString::new("crownest-seccomp").unwrap();
        let memfd = libc::memfd_create(name.as_ptr(), 0);
        if memfd < 0 {
            die(&format!("memfd_create: {}", std::io::Error::last_os_error()));
        }
        let bytes = seccomp::program_bytes();
        if libc::write(memfd, bytes.as_ptr().cast(), bytes.len()) != bytes.len() as isize {
            die("cannot write the seccomp program");
        }
        libc::lseek(memfd, 0, libc::SEEK_SET);
        if memfd != 3 {
            check((libc::dup2(memfd, 3) < 0) as i32, "dup2");
            libc::close(memfd);
        }
        // Only stdio and the seccomp fd reach bubblewrap.
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);

        if let (Some(uid), Some(gid)) = (opts.uid, opts.gid) {
            check(libc::setgroups(0, std::ptr::null()), "setgroups");
            check(libc::setresgid(gid, gid, gid), "setresgid");
            check(libc::setresuid(uid, uid, uid), "setresuid");
        }
        // Changing credentials clears the parent-death signal: set it last.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0), "prctl(PDEATHSIG)");
        if libc::getppid() == 1 {
            die("the server exited before the sandbox started");
        }
        // Rust's runtime ignores SIGPIPE in this process, and an ignored
        // signal survives exec (a handled one does not): the command would
        // get EPIPE errors where a shell's commands die quietly, and a
        // producer that does not check its writes would never stop. Start
        // it as a login shell would, with default dispositions and no
        // signal blocked.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        check(libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()), "sigprocmask");
        // Batch work does not preempt on wake-up: two processes of one
        // pipeline sharing a CPU trade it at every pipe buffer otherwise
        // (`yes | head` switched ~39k times per 200 MiB, ~4× more), and
        // sandboxes never preempt the server's threads. The policy is
        // inherited by everything the sandbox starts.
        if opts.batch {
            let param = libc::sched_param { sched_priority: 0 };
            check(libc::sched_setscheduler(0, libc::SCHED_BATCH, &param), "sched_setscheduler(SCHED_BATCH)");
        }
    }
    let cargs: Vec<CString> = program
        .iter()
        .map(|a| {
            let bytes = if a.as_bytes() == SECCOMP_FD_PLACEHOLDER.as_bytes() { b"3".as_slice() } else { a.as_bytes() };
            CString::new(bytes).unwrap_or_else(|_| die("NUL in an argument"))
        })
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: argv is a NULL-terminated array of valid C strings.
    unsafe { libc::execv(cargs[0].as_ptr(), ptrs.as_ptr()) };
    die(&format!("cannot execute {}: {}", cargs[0].to_string_lossy(), std::io::Error::last_os_error()))
}
