//! The seccomp filter every sandboxed process runs under, as a classic BPF
//! program handed to bubblewrap (`--seccomp FD`).
//!
//! Default allow, with a deny list of what a sandboxed build or test has no
//! business doing and what container escapes are made of: mounting, kernel
//! keyrings, eBPF, perf, userfaultfd, io_uring, module and kexec loading,
//! ptrace, new namespaces (`unshare`, `setns`, `clone` with `CLONE_NEW*`),
//! handle-based file opens, terminal injection (`TIOCSTI`, `TIOCLINUX`), and
//! every x32 syscall number. Denied calls fail with `EPERM` (`clone3`, which
//! cannot be inspected, with `ENOSYS` so libc falls back to `clone`); a
//! foreign architecture is killed outright.

/// One BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_low(i: u32) -> u32 {
    16 + 8 * i
}

/// `CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET`.
const CLONE_NEW_ANY: u32 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541c;

/// Syscalls denied outright, by name and x86_64 number.
pub const DENIED: &[(&str, u32)] = &[
    ("mount", 165),
    ("umount2", 166),
    ("pivot_root", 155),
    ("swapon", 167),
    ("swapoff", 168),
    ("reboot", 169),
    ("init_module", 175),
    ("delete_module", 176),
    ("finit_module", 313),
    ("kexec_load", 246),
    ("kexec_file_load", 320),
    ("ptrace", 101),
    ("syslog", 103),
    ("acct", 163),
    ("quotactl", 179),
    ("lookup_dcookie", 212),
    ("keyctl", 250),
    ("add_key", 248),
    ("request_key", 249),
    ("bpf", 321),
    ("perf_event_open", 298),
    ("userfaultfd", 323),
    ("io_uring_setup", 425),
    ("io_uring_enter", 426),
    ("io_uring_register", 427),
    ("unshare", 272),
    ("setns", 308),
    ("name_to_handle_at", 303),
    ("open_by_handle_at", 304),
    ("open_tree", 428),
    ("move_mount", 429),
    ("fsopen", 430),
    ("fsconfig", 431),
    ("fsmount", 432),
    ("fspick", 433),
    ("mount_setattr", 442),
    ("iopl", 172),
    ("ioperm", 173),
    ("uselib", 134),
];

const SYS_CLONE: u32 = 56;
const SYS_CLONE3: u32 = 435;
const SYS_IOCTL: u32 = 16;

/// Where a jump lands: one of the shared return instructions at the end.
#[derive(Clone, Copy)]
enum Target {
    Next,
    Allow,
    Eperm,
    Enosys,
    Kill,
}

enum Op {
    Load(u32),
    Jump { code: u16, k: u32, jt: Target, jf: Target },
}

/// Build the filter program.
pub fn program() -> Vec<Insn> {
    use Target::*;
    let mut ops = vec![
        Op::Load(OFF_ARCH),
        Op::Jump { code: BPF_JEQ_K, k: AUDIT_ARCH_X86_64, jt: Next, jf: Kill },
        Op::Load(OFF_NR),
        Op::Jump { code: BPF_JGE_K, k: X32_SYSCALL_BIT, jt: Eperm, jf: Next },
    ];
    for (_, nr) in DENIED {
        ops.push(Op::Jump { code: BPF_JEQ_K, k: *nr, jt: Eperm, jf: Next });
    }
    ops.push(Op::Jump { code: BPF_JEQ_K, k: SYS_CLONE3, jt: Enosys, jf: Next });
    // clone(flags, ...): refuse new namespaces.
    ops.push(Op::Jump { code: BPF_JEQ_K, k: SYS_CLONE, jt: Next, jf: Target::Next });
    let clone_at = ops.len() - 1;
    // ioctl(fd, cmd, ...): refuse terminal injection.
    ops.push(Op::Jump { code: BPF_JEQ_K, k: SYS_IOCTL, jt: Next, jf: Allow });
    let ioctl_at = ops.len() - 1;
    ops.push(Op::Load(off_arg_low(1)));
    ops.push(Op::Jump { code: BPF_JEQ_K, k: TIOCSTI, jt: Eperm, jf: Next });
    ops.push(Op::Jump { code: BPF_JEQ_K, k: TIOCLINUX, jt: Eperm, jf: Allow });
    let clone_body = ops.len();
    ops.push(Op::Load(off_arg_low(0)));
    ops.push(Op::Jump { code: BPF_JSET_K, k: CLONE_NEW_ANY, jt: Eperm, jf: Allow });

    // Returns follow the ops: Allow, Eperm, Enosys, Kill.
    let n = ops.len();
    let ret_index = |t: Target| match t {
        Allow => n,
        Eperm => n + 1,
        Enosys => n + 2,
        Kill => n + 3,
        Next => unreachable!(),
    };
    let mut out = Vec::with_capacity(n + 4);
    for (i, op) in ops.iter().enumerate() {
        let rel = |t: Target, taken: bool| -> u8 {
            let dest = match t {
                Next if taken && i == clone_at => clone_body,
                Next if !taken && i == ioctl_at => i + 1,
                Next => i + 1,
                other => ret_index(other),
            };
            u8::try_from(dest - i - 1).expect("seccomp jump within 255 instructions")
        };
        out.push(match *op {
            Op::Load(off) => Insn { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: off },
            Op::Jump { code, k, jt, jf } => Insn { code, jt: rel(jt, true), jf: rel(jf, false), k },
        });
    }
    for ret in [SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM, SECCOMP_RET_ERRNO | ENOSYS, SECCOMP_RET_KILL_PROCESS] {
        out.push(Insn { code: BPF_RET_K, jt: 0, jf: 0, k: ret });
    }
    out
}

/// The program as the bytes of a `struct sock_filter[]`, as bwrap reads it.
pub fn program_bytes() -> Vec<u8> {
    let mut bytes = Vec::new();
    for insn in program() {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter, enough to run our program.
    fn run(prog: &[Insn], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let insn = prog[pc];
            match insn.code {
                BPF_LD_W_ABS => {
                    let o = insn.k as usize;
                    acc = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
                    pc += 1;
                }
                BPF_RET_K => return insn.k,
                code => {
                    let taken = match code {
                        BPF_JEQ_K => acc == insn.k,
                        BPF_JGE_K => acc >= insn.k,
                        BPF_JSET_K => acc & insn.k != 0,
                        _ => panic!("unknown opcode {code:#x}"),
                    };
                    pc += 1 + usize::from(if taken { insn.jt } else { insn.jf });
                }
            }
        }
    }

    fn verdict(nr: u32, args: [u64; 6]) -> u32 {
        run(&program(), nr, AUDIT_ARCH_X86_64, args)
    }

    const EPERM_RET: u32 = SECCOMP_RET_ERRNO | EPERM;

    #[test]
    fn ordinary_syscalls_pass() {
        for nr in [0, 1, 2, 3, 9, 57, 59, 60, 231, 257] {
            assert_eq!(verdict(nr, [0; 6]), SECCOMP_RET_ALLOW, "syscall {nr}");
        }
        assert_eq!(verdict(SYS_IOCTL, [1, 0x5401, 0, 0, 0, 0]), SECCOMP_RET_ALLOW, "TCGETS");
        assert_eq!(verdict(SYS_CLONE, [0x01200011, 0, 0, 0, 0, 0]), SECCOMP_RET_ALLOW, "fork-style clone");
    }

    #[test]
    fn dangerous_syscalls_are_refused() {
        for (name, nr) in DENIED {
            assert_eq!(verdict(*nr, [0; 6]), EPERM_RET, "{name}");
        }
        assert_eq!(verdict(SYS_IOCTL, [0, u64::from(TIOCSTI), 0, 0, 0, 0]), EPERM_RET);
        assert_eq!(verdict(SYS_IOCTL, [0, u64::from(TIOCLINUX), 0, 0, 0, 0]), EPERM_RET);
        assert_eq!(verdict(SYS_CLONE, [0x1000_0000, 0, 0, 0, 0, 0]), EPERM_RET, "clone(CLONE_NEWUSER)");
        assert_eq!(verdict(SYS_CLONE3, [0; 6]), SECCOMP_RET_ERRNO | ENOSYS);
        assert_eq!(verdict(X32_SYSCALL_BIT | 1, [0; 6]), EPERM_RET, "x32 write");
    }

    #[test]
    fn foreign_architectures_are_killed() {
        assert_eq!(run(&program(), 1, 0x4000_0003, [0; 6]), SECCOMP_RET_KILL_PROCESS);
    }

    #[test]
    fn bytes_are_eight_per_instruction() {
        assert_eq!(program_bytes().len(), program().len() * 8);
    }
}
