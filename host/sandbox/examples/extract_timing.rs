//! A quick timing of extraction against the tools, for before/after
//! comparisons of the extractor (the full benchmarks are in
//! `host/cli/benches`). Builds a ~100 MB repo-like `.tar.gz` once (40 000
//! text files in 200 directories), then extracts it into fresh directories
//! on a tmpfs with our extractor and with `tar xzf`, alternating.
//!
//! `cargo run --release -p crownest-sandbox --example extract_timing [runs]`

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use crownest_sandbox::extract::{Budgets, extract_tar_gz};

const ARCHIVE: &str = "/tmp/crownest-extract-timing.tar.gz";
const SCRATCH: &str = "/dev/shm/crownest-extract-timing";

/// One ustar header for a regular file.
fn header(name: &str, size: usize) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mut octal = |at: usize, len: usize, v: u64| {
        h[at..at + len].copy_from_slice(format!("{:0w$o}\0", v, w = len - 1).as_bytes());
    };
    octal(100, 8, 0o644);
    octal(108, 8, 0);
    octal(116, 8, 0);
    octal(124, 12, size as u64);
    octal(136, 12, 1_700_000_000);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn make_archive(path: &Path) {
    if path.exists() {
        return;
    }
    let out = std::fs::File::create(path).unwrap();
    let mut enc = flate2::write::GzEncoder::new(std::io::BufWriter::new(out), flate2::Compression::default());
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for d in 0..200 {
        for f in 0..200 {
            let size = 1024 + (next() % 10_240) as usize;
            let mut body = Vec::with_capacity(size + 64);
            while body.len() < size {
                writeln!(body, "let v{} = 0x{:016x};", next() % 1000, next()).unwrap();
            }
            enc.write_all(&header(&format!("src/mod{d:03}/file{f:04}.rs"), body.len())).unwrap();
            enc.write_all(&body).unwrap();
            enc.write_all(&vec![0u8; body.len().next_multiple_of(512) - body.len()]).unwrap();
        }
    }
    enc.write_all(&[0u8; 1024]).unwrap();
    enc.finish().unwrap().flush().unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let archive = Path::new(ARCHIVE);
    make_archive(archive);
    let _ = std::fs::remove_dir_all(SCRATCH);
    std::fs::create_dir_all(SCRATCH).unwrap();
    let (mut ours, mut tars) = (Vec::new(), Vec::new());
    let mut entries = 0;
    for i in 0..runs {
        let dest = Path::new(SCRATCH).join(format!("tar-{i}"));
        std::fs::create_dir(&dest).unwrap();
        let started = Instant::now();
        assert!(Command::new("tar").arg("xzf").arg(archive).arg("-C").arg(&dest).status().unwrap().success());
        tars.push(started.elapsed());

        let dest = Path::new(SCRATCH).join(format!("ours-{i}"));
        std::fs::create_dir(&dest).unwrap();
        let root = Dir::open_ambient_dir(&dest, ambient_authority()).unwrap();
        let started = Instant::now();
        let file = std::fs::File::open(archive).unwrap();
        let r = extract_tar_gz(file, &root, Budgets::default(), None, &mut |_, _| {}).unwrap();
        ours.push(started.elapsed());
        entries = r.entries;
    }
    std::fs::remove_dir_all(SCRATCH).unwrap();
    let size = std::fs::metadata(archive).unwrap().len();
    let (t, o) = (median(tars), median(ours));
    println!("archive: {:.1} MB compressed, {entries} entries, {runs} runs each", size as f64 / 1e6);
    println!("tar xzf:         median {:.1} ms", t.as_secs_f64() * 1e3);
    println!("extract_tar_gz:  median {:.1} ms", o.as_secs_f64() * 1e3);
    println!("ratio: {:.2}x tar's time", o.as_secs_f64() / t.as_secs_f64());
}
