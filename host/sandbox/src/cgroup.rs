//! Per-sandbox cgroups: limits, membership, kill-all and OOM detection.
//!
//! Detected at start-up, three layouts are supported:
//! - **v2** (pure unified hierarchy): limits and `cgroup.kill` in one tree;
//! - **v1**: `memory`, `pids` and `cpu` controllers for limits, `freezer` to
//!   kill a tree without races;
//! - **hybrid** (v1 controllers plus an unified tree without controllers, as
//!   on this project's CI machines): v1 for limits, the v2 tree for
//!   `cgroup.kill` and population tracking.
//!
//! Every sandbox gets a cgroup below the server's own cgroup in each
//! hierarchy (`<own>/crownest/<id>`), so its usage also counts against
//! whatever limits the server itself runs under.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::limits::Limits;

/// What a cgroup directory controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// v2 directory (limits, kill and tracking, with whatever controllers are enabled).
    Unified,
    Memory,
    Pids,
    Cpu,
    Freezer,
}

/// The cgroup layout of this host.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Parent directory for sandbox cgroups in the unified tree, and the
    /// controllers available there.
    pub unified: Option<(PathBuf, Vec<String>)>,
    /// Parent directories in v1 hierarchies.
    pub v1: Vec<(Role, PathBuf)>,
    /// Why cgroups are unavailable, if they are.
    pub unavailable: Option<String>,
}

impl Layout {
    /// `v2`, `v1`, `hybrid` or `none`.
    pub fn mode(&self) -> &'static str {
        match (&self.unified, self.v1.is_empty()) {
            (Some((_, ctrls)), true) if !ctrls.is_empty() => "v2",
            (Some(_), false) => "hybrid",
            (None, false) => "v1",
            (Some(_), true) => "v2 (no controllers)",
            (None, true) => "none",
        }
    }

    fn v2_has(&self, controller: &str) -> bool {
        self.unified.as_ref().is_some_and(|(_, c)| c.iter().any(|x| x == controller))
    }

    fn v1_has(&self, role: Role) -> bool {
        self.v1.iter().any(|(r, _)| *r == role)
    }

    /// How (or whether) a limit is enforced: `Some(mechanism)` or `None`.
    pub fn mechanism(&self, limit: &str) -> Option<String> {
        let (v2, v1, file_v2, file_v1) = match limit {
            "memory" => ("memory", Role::Memory, "memory.max", "memory.limit_in_bytes"),
            "pids" => ("pids", Role::Pids, "pids.max", "pids.max"),
            "cpu" => ("cpu", Role::Cpu, "cpu.max", "cpu.cfs_quota_us"),
            _ => return None,
        };
        if self.v2_has(v2) {
            Some(format!("cgroup v2 {file_v2}"))
        } else if self.v1_has(v1) {
            Some(format!("cgroup v1 {file_v1}"))
        } else {
            None
        }
    }

    /// The directories sandbox cgroups are made in, one per hierarchy.
    pub fn parents(&self) -> Vec<PathBuf> {
        self.unified.iter().map(|(p, _)| p.clone()).chain(self.v1.iter().map(|(_, p)| p.clone())).collect()
    }

    /// How the whole process tree is killed.
    pub fn kill_mechanism(&self) -> String {
        if self.unified.is_some() {
            "cgroup v2 cgroup.kill + pid namespace teardown".into()
        } else if self.v1_has(Role::Freezer) {
            "cgroup v1 freezer + SIGKILL + pid namespace teardown".into()
        } else {
            "pid namespace teardown only".into()
        }
    }
}

fn own_path(hierarchy: &str) -> io::Result<String> {
    // Lines look like `4:memory:/a/b` (v1) or `0::/a/b` (v2).
    let text = fs::read_to_string("/proc/self/cgroup")?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let matches = if hierarchy.is_empty() { ctrls.is_empty() } else { ctrls.split(',').any(|c| c == hierarchy) };
        if matches {
            return Ok(path.to_string());
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("no {hierarchy:?} line in /proc/self/cgroup")))
}

fn is_cgroup2(dir: &Path) -> bool {
    dir.join("cgroup.controllers").exists()
}

/// Create `<dir>` if needed, proving we may manage cgroups there.
fn make_parent(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Detect the layout under `mount` (normally `/sys/fs/cgroup`). Sandbox
/// cgroups of `installation` go in `<own>/crownest/<installation>` in each
/// hierarchy, so installations never share a parent.
pub fn detect(mount: &Path, installation: &str) -> Layout {
    let mut layout = Layout::default();
    let unified_mount = if is_cgroup2(mount) {
        Some(mount.to_path_buf())
    } else if is_cgroup2(&mount.join("unified")) {
        Some(mount.join("unified"))
    } else {
        None
    };
    let mut errors = Vec::new();
    if let Some(root) = unified_mount {
        match own_path("").map(|own| root.join(own.trim_start_matches('/')).join("crownest")) {
            Ok(shared) => {
                // Controllers reach a cgroup only through every parent's
                // subtree_control: enable them at both levels.
                let parent = shared.join(installation);
                match make_parent(&shared).and_then(|()| {
                    enable_v2_controllers(&shared);
                    make_parent(&parent)
                }) {
                    Ok(()) => {
                        let ctrls = enable_v2_controllers(&parent);
                        layout.unified = Some((parent, ctrls));
                    }
                    Err(e) => errors.push(format!("cannot create {}: {e}", parent.display())),
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    // v1 controllers only matter when the unified tree lacks them.
    for (name, role) in [("memory", Role::Memory), ("pids", Role::Pids), ("cpu", Role::Cpu), ("freezer", Role::Freezer)]
    {
        let ctrl_mount = mount.join(name);
        if !ctrl_mount.is_dir() || is_cgroup2(&ctrl_mount) || layout.v2_has(name) {
            continue;
        }
        if role == Role::Freezer && layout.unified.is_some() {
            continue;
        }
        let Ok(own) = own_path(name) else { continue };
        let shared = ctrl_mount.join(own.trim_start_matches('/')).join("crownest");
        let parent = shared.join(installation);
        match make_parent(&shared).and_then(|()| make_parent(&parent)) {
            Ok(()) => layout.v1.push((role, parent)),
            Err(e) => errors.push(format!("cannot create {}: {e}", parent.display())),
        }
    }
    if layout.unified.is_none() && layout.v1.is_empty() {
        layout.unavailable =
            Some(if errors.is_empty() { "no cgroup hierarchy is mounted".into() } else { errors.join("; ") });
    }
    layout
}

/// Turn on memory, pids and cpu for children of `parent` (v2). Returns the
/// controllers available to sandbox cgroups.
fn enable_v2_controllers(parent: &Path) -> Vec<String> {
    let available = fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<&str> = available.split_whitespace().filter(|c| matches!(*c, "memory" | "pids" | "cpu")).collect();
    let request: String = wanted.iter().map(|c| format!("+{c} ")).collect();
    if !request.is_empty() && fs::write(parent.join("cgroup.subtree_control"), request.trim()).is_err() {
        return Vec::new();
    }
    let enabled = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    enabled.split_whitespace().map(String::from).collect()
}

/// The cgroups of one sandbox.
#[derive(Debug, Clone)]
pub struct Cgroup {
    dirs: Vec<(Role, PathBuf)>,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("write {value:?} to {}: {e}", path.display())))
}

impl Cgroup {
    /// Create (or re-open) the cgroups of sandbox `id` and apply `limits`.
    pub fn create(layout: &Layout, id: &str, limits: &Limits) -> io::Result<Cgroup> {
        let mut dirs = Vec::new();
        if let Some((parent, _)) = &layout.unified {
            dirs.push((Role::Unified, parent.join(id)));
        }
        for (role, parent) in &layout.v1 {
            dirs.push((*role, parent.join(id)));
        }
        for (_, dir) in &dirs {
            make_parent(dir)?;
        }
        let cg = Cgroup { dirs };
        cg.apply(layout, limits)?;
        Ok(cg)
    }

    /// Re-open without changing limits (after a restart).
    pub fn open(layout: &Layout, id: &str) -> Cgroup {
        let mut dirs = Vec::new();
        if let Some((parent, _)) = &layout.unified {
            dirs.push((Role::Unified, parent.join(id)));
        }
        for (role, parent) in &layout.v1 {
            dirs.push((*role, parent.join(id)));
        }
        Cgroup { dirs: dirs.into_iter().filter(|(_, d)| d.is_dir()).collect() }
    }

    fn dir(&self, role: Role) -> Option<&Path> {
        self.dirs.iter().find(|(r, _)| *r == role).map(|(_, d)| d.as_path())
    }

    fn apply(&self, layout: &Layout, l: &Limits) -> io::Result<()> {
        let unified = self.dir(Role::Unified);
        if let Some(mem) = l.memory_bytes {
            if let (true, Some(d)) = (layout.v2_has("memory"), unified) {
                write(&d.join("memory.max"), &mem.to_string())?;
                let _ = write(&d.join("memory.swap.max"), "0");
            } else if let Some(d) = self.dir(Role::Memory) {
                write(&d.join("memory.limit_in_bytes"), &mem.to_string())?;
                // Without swap accounting this file is absent; the limit above still holds RAM.
                let _ = write(&d.join("memory.memsw.limit_in_bytes"), &mem.to_string());
            }
        }
        if let Some(pids) = l.pids {
            if let (true, Some(d)) = (layout.v2_has("pids"), unified) {
                write(&d.join("pids.max"), &pids.to_string())?;
            } else if let Some(d) = self.dir(Role::Pids) {
                write(&d.join("pids.max"), &pids.to_string())?;
            }
        }
        if let Some(milli) = l.cpu_millicores {
            let period = 100_000u64;
            let quota = (u64::from(milli) * period / 1000).max(1000);
            if let (true, Some(d)) = (layout.v2_has("cpu"), unified) {
                write(&d.join("cpu.max"), &format!("{quota} {period}"))?;
            } else if let Some(d) = self.dir(Role::Cpu) {
                write(&d.join("cpu.cfs_period_us"), &period.to_string())?;
                write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        Ok(())
    }

    /// The files a process writes its pid into to join every hierarchy.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.join("cgroup.procs")).collect()
    }

    /// Pids currently in the sandbox (from the most complete hierarchy).
    pub fn pids(&self) -> Vec<i32> {
        let dir = self
            .dir(Role::Unified)
            .or_else(|| self.dir(Role::Pids))
            .or_else(|| self.dirs.first().map(|(_, d)| d.as_path()));
        let Some(dir) = dir else { return Vec::new() };
        parse_procs(&fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default())
    }

    /// SIGKILL every process in the sandbox, waiting (up to `within`) until
    /// none is left. Returns whether the cgroup is empty.
    pub fn kill_all(&self, within: Duration) -> bool {
        self.kill_until(within, |pids| pids.is_empty())
    }

    /// [`Cgroup::kill_all`], done once every process left has finished or
    /// is irrevocably exiting (a zombie, or past the point of no return in
    /// the kernel's exit path). That is when a command's tree is gone for
    /// its user; the cgroup itself may take longer to empty: the init of a
    /// sandbox's namespaces leaves it only once the kernel has torn its
    /// mounts down, which waits for an RCU grace period (0.3-0.7 ms here).
    pub fn kill_all_live(&self, within: Duration) -> bool {
        self.kill_until(within, |pids| pids.iter().all(|&pid| !is_live(pid)))
    }

    fn kill_until(&self, within: Duration, done: impl Fn(&[i32]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        let freezer = self.dir(Role::Freezer);
        loop {
            if let Some(d) = self.dir(Role::Unified) {
                let _ = fs::write(d.join("cgroup.kill"), "1");
            }
            if let Some(f) = freezer {
                let _ = fs::write(f.join("freezer.state"), "FROZEN");
            }
            for pid in self.pids() {
                // SAFETY: kill(2) with a pid read from our own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if let Some(f) = freezer {
                let _ = fs::write(f.join("freezer.state"), "THAWED");
            }
            if done(&self.pids()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Exiting processes leave the cgroup within a few hundred
            // microseconds; poll finely rather than sleep a whole tick.
            std::thread::sleep(Duration::from_micros(250));
        }
    }

    /// Send `signal` to every process in the sandbox.
    pub fn signal_all(&self, signal: i32) {
        for pid in self.pids() {
            // SAFETY: kill(2) with a pid read from our own cgroup.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Whether the kernel's OOM killer has acted in this sandbox.
    pub fn oom_killed(&self) -> bool {
        if let Some(d) = self.dir(Role::Unified)
            && let Ok(text) = fs::read_to_string(d.join("memory.events"))
        {
            return counter(&text, "oom_kill") > 0;
        }
        if let Some(d) = self.dir(Role::Memory)
            && let Ok(text) = fs::read_to_string(d.join("memory.oom_control"))
        {
            return counter(&text, "oom_kill") > 0;
        }
        false
    }

    /// Remove the cgroups (after `kill_all`).
    pub fn remove(&self) -> io::Result<()> {
        let mut first_err = None;
        for (_, d) in &self.dirs {
            let mut tries = 0;
            loop {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // A dying process may still be accounted for a moment.
                    Err(_) if tries < 100 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                        break;
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The kernel's `PF_EXITING` task flag (`include/linux/sched.h`).
const PF_EXITING: u64 = 0x4;

/// Whether `pid` is a process that can still run user code: not gone, not
/// a zombie, not in the kernel's exit path.
fn is_live(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_is_live(&stat),
        Err(_) => false,
    }
}

/// [`is_live`] from the text of `/proc/<pid>/stat`: the state and the
/// flags follow the command name, which is in parentheses and may hold
/// anything, so fields are counted from the last `)`.
fn stat_is_live(stat: &str) -> bool {
    let Some((_, rest)) = stat.rsplit_once(')') else { return true };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().copied().unwrap_or("R");
    let flags = fields.get(6).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    !matches!(state, "Z" | "X" | "x") && flags & PF_EXITING == 0
}

/// The pids in a `cgroup.procs` listing. A task that is being reaped can
/// be listed as `0` (its pid is already detached); such entries are
/// dropped, since `kill(0, …)` would signal the caller's own process group.
fn parse_procs(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse::<i32>().ok()).filter(|&p| p > 0).collect()
}

fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_or_sleeping_tasks_are_live() {
        let line = |comm: &str, state: &str, flags: u64| {
            format!("4242 ({comm}) {state} 1 4242 4242 0 -1 {flags} 120 0 0 0 0 0 0 0 20 0 1 0 100 0 0")
        };
        assert!(stat_is_live(&line("sh", "S", 0x400100)));
        assert!(stat_is_live(&line("sh", "R", 0)));
        assert!(stat_is_live(&line("sh", "D", 0x400000)));
        // A name may hold spaces and parentheses: fields count from the last `)`.
        assert!(stat_is_live(&line("a) Z 1 (b", "S", 0)));
        assert!(!stat_is_live(&line("bwrap", "Z", 0x400100)));
        assert!(!stat_is_live(&line("bwrap", "X", 0)));
        // Tearing down its namespaces: past the point of no return.
        assert!(!stat_is_live(&line("bwrap", "D", 0x400104)));
        assert!(!stat_is_live(&line("a) S 1 (b", "R", 0x4)));
    }

    #[test]
    fn a_pid_that_is_gone_is_not_live() {
        assert!(!is_live(i32::MAX));
        assert!(is_live(std::process::id() as i32));
    }

    /// A reaped task listed as 0 must never become `kill(0, …)`, which
    /// would signal the server's own process group.
    #[test]
    fn dying_tasks_listed_as_zero_are_not_pids() {
        assert_eq!(parse_procs("12\n0\n 34 \n\n-1\nx\n"), vec![12, 34]);
    }
}
