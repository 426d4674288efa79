//! Compiles an OCI `linux.seccomp` profile into a classic BPF program on the host, so
//! the guest agent only installs instructions (no libseccomp in the guest).
//!
//! The program dispatches on the architecture (x86_64, and i386 when the profile lists
//! SCMP_ARCH_X86), then tries each rule in profile order: `ld nr; jeq NR; <argument
//! checks>; ret ACTION`, falling through to the next rule on a mismatch, and ends with
//! the default action. The profile's filter flags travel with the program. Syscall names this table does
//! not know are skipped with a warning, as runc does for names foreign to the arch.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use skiff_proto::{SeccompProgram, MAX_SECCOMP_INSNS};

use super::syscalls_i386::SYSCALLS as SYSCALLS_I386;
use super::syscalls_x86_64::SYSCALLS;
use crate::{Error, Result};

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
// seccomp(2) filter flags.
const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;
/// Syscall numbers with this bit set are the x32 ABI, which a profile for x86_64 must
/// not let through unchecked.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

// struct seccomp_data offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RET_K: u16 = 0x06;
const JA: u16 = 0x05; // BPF_JMP | BPF_JA

type Insn = (u16, u8, u8, u32);

fn bad(msg: impl Into<String>) -> Error {
    Error::Invalid(format!("linux.seccomp: {}", msg.into()))
}

#[cfg(test)]
fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32> {
    use LinuxSeccompAction as A;
    match a {
        A::ScmpActAllow
        | A::ScmpActKill
        | A::ScmpActKillThread
        | A::ScmpActKillProcess
        | A::ScmpActTrap
        | A::ScmpActLog => Ok(a.as_u32(None)),
        A::ScmpActErrno => Ok(a.as_u32(Some(errno.unwrap_or(libc::EPERM as u32) & 0xffff))),
        A::ScmpActNotify | A::ScmpActTrace => Err(bad(format!(
            "action {a} is not supported inside the microVM (supported: SCMP_ACT_ALLOW, \
             SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_THREAD, SCMP_ACT_KILL_PROCESS, \
             SCMP_ACT_TRAP, SCMP_ACT_LOG)"
        ))),
    }
}

/// A jump target inside one rule.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum To {
    /// The following instruction.
    Next,
    /// The end of the current argument check: the check passed.
    Pass,
    /// The next rule: this rule does not match.
    Fail,
}

type Sym = (u16, To, To, u32);

/// One argument check; `Pass` means the check holds, `Fail` tries the next rule.
/// Arguments are 64-bit and compared as two 32-bit halves (little-endian layout).
fn arg_check(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    two: Option<u64>,
) -> Result<Vec<Sym>> {
    use LinuxSeccompOperator as O;
    use To::{Fail, Next, Pass};
    if index > 5 {
        return Err(bad(format!("argument index {index} is out of range 0..=5")));
    }
    let lo_off = OFF_ARGS + 8 * index as u32;
    let hi_off = lo_off + 4;
    let (hi, lo) = ((value >> 32) as u32, value as u32);
    let ld = |off| (LD_W_ABS, Next, Next, off);
    Ok(match op {
        O::ScmpCmpEq => vec![
            ld(hi_off),
            (JEQ_K, Next, Fail, hi),
            ld(lo_off),
            (JEQ_K, Pass, Fail, lo),
        ],
        O::ScmpCmpNe => vec![
            ld(hi_off),
            (JEQ_K, Next, Pass, hi),
            ld(lo_off),
            (JEQ_K, Fail, Pass, lo),
        ],
        O::ScmpCmpMaskedEq => {
            let want = two.unwrap_or(0);
            vec![
                ld(hi_off),
                (AND_K, Next, Next, (value >> 32) as u32),
                (JEQ_K, Next, Fail, (want >> 32) as u32),
                ld(lo_off),
                (AND_K, Next, Next, value as u32),
                (JEQ_K, Pass, Fail, want as u32),
            ]
        }
        // a > v: hi > H, or hi == H and lo > L (>= L for Ge).
        O::ScmpCmpGt | O::ScmpCmpGe => vec![
            ld(hi_off),
            (JGT_K, Pass, Next, hi),
            (JEQ_K, Next, Fail, hi),
            ld(lo_off),
            (
                if op == O::ScmpCmpGt { JGT_K } else { JGE_K },
                Pass,
                Fail,
                lo,
            ),
        ],
        // a < v is !(a >= v); a <= v is !(a > v).
        O::ScmpCmpLt | O::ScmpCmpLe => vec![
            ld(hi_off),
            (JGT_K, Fail, Next, hi),
            (JEQ_K, Next, Pass, hi),
            ld(lo_off),
            (
                if op == O::ScmpCmpLt { JGE_K } else { JGT_K },
                Fail,
                Pass,
                lo,
            ),
        ],
    })
}

/// The instructions of one rule: match the syscall number, check every argument (all
/// must hold), return the action; any mismatch falls through to the next rule.
fn rule(nr: u32, checks: &[Vec<Sym>], ret: u32) -> Result<Vec<Insn>> {
    let body: usize = 2 + checks.iter().map(Vec::len).sum::<usize>();
    let rule_end = body + 1; // index just past `ret`
    let mut out = Vec::with_capacity(rule_end);
    let jump = |from: usize, to: usize| -> Result<u8> {
        u8::try_from(to - from - 1).map_err(|_| bad("a rule is too long to compile"))
    };
    out.push((LD_W_ABS, 0, 0, OFF_NR));
    out.push((JEQ_K, 0, jump(1, rule_end)?, nr));
    let mut at = 2;
    for check in checks {
        let end = at + check.len();
        for (i, (code, jt, jf, k)) in check.iter().enumerate() {
            let here = at + i;
            let resolve = |t: To| match t {
                To::Next => jump(here, here + 1),
                To::Pass => jump(here, end),
                To::Fail => jump(here, rule_end),
            };
            let is_jump = *code & 0x07 == 0x05;
            let (jt, jf) = if is_jump {
                (resolve(*jt)?, resolve(*jf)?)
            } else {
                (0, 0)
            };
            out.push((*code, jt, jf, *k));
        }
        at = end;
    }
    out.push((RET_K, 0, 0, ret));
    Ok(out)
}

/// The filter flags the guest kernel takes with the program (`seccomp(2)` flags).
fn filter_flags(s: &LinuxSeccomp) -> Result<u32> {
    use LinuxSeccompFilterFlag as F;
    let mut flags = 0;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            F::SeccompFilterFlagTsync => FLAG_TSYNC,
            F::SeccompFilterFlagLog => FLAG_LOG,
            F::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            F::SeccompFilterFlagWaitKillableRecv => {
                return Err(bad(
                    "flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs seccomp notify, which \
                     is not supported",
                ))
            }
        };
    }
    Ok(flags)
}

/// The profile's rules for one architecture's syscall table, then the default action.
fn section(
    s: &LinuxSeccomp,
    table: &[(&str, u32)],
    default: u32,
    native: bool,
) -> Result<Vec<Insn>> {
    let mut prog = Vec::new();
    for sc in s.syscalls().iter().flatten() {
        let ret = action(sc.action(), sc.errno_ret())?;
        let checks = sc
            .args()
            .iter()
            .flatten()
            .map(|a| arg_check(a.index(), a.op(), a.value(), a.value_two()))
            .collect::<Result<Vec<_>>>()?;
        for name in sc.names() {
            let Some(nr) = table.iter().find(|(n, _)| n == name).map(|(_, nr)| *nr) else {
                // Names foreign to one architecture are normal in multi-arch profiles.
                if native {
                    tracing::warn!(syscall = %name, "seccomp: unknown syscall on x86_64; ignored");
                }
                continue;
            };
            // A rule with the default action changes nothing.
            if ret == default {
                continue;
            }
            prog.extend(rule(nr, &checks, ret)?);
            if prog.len() >= MAX_SECCOMP_INSNS {
                return Err(bad(format!(
                    "the profile compiles to more than {MAX_SECCOMP_INSNS} instructions"
                )));
            }
        }
    }
    prog.push((RET_K, 0, 0, default));
    Ok(prog)
}

/// Compiles `linux.seccomp` for the guest: x86_64 always, and the i386 ABI with its own
/// syscall numbers when the profile lists SCMP_ARCH_X86 (as libseccomp adds that
/// architecture). Other architectures (x32 included) are killed, as libseccomp's
/// bad-architecture action does.
pub fn compile(s: &LinuxSeccomp) -> Result<SeccompProgram> {
    if !cfg!(target_arch = "x86_64") {
        return Err(bad("seccomp profiles are only supported on x86_64 hosts"));
    }
    let arches = s.architectures().clone().unwrap_or_default();
    if !arches.is_empty()
        && !arches
            .iter()
            .any(|a| matches!(a, Arch::ScmpArchX86_64 | Arch::ScmpArchNative))
    {
        return Err(bad(format!(
            "architectures {arches:?} do not include SCMP_ARCH_X86_64, the guest's"
        )));
    }
    if s.listener_path().is_some() {
        return Err(bad("listenerPath (seccomp notify) is not supported"));
    }
    let flags = filter_flags(s)?;
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut x86_64 = vec![
        (LD_W_ABS, 0, 0, OFF_NR),
        (JGE_K, 0, 1, X32_SYSCALL_BIT),
        (RET_K, 0, 0, RET_KILL_PROCESS),
    ];
    x86_64.extend(section(s, SYSCALLS, default, true)?);
    let i386 = if arches.iter().any(|a| matches!(a, Arch::ScmpArchX86)) {
        Some(section(s, SYSCALLS_I386, default, false)?)
    } else {
        None
    };
    // Dispatch on the architecture; `ja` reaches sections beyond an 8-bit jump.
    let mut prog: Vec<Insn> = vec![(LD_W_ABS, 0, 0, OFF_ARCH)];
    let head = if i386.is_some() { 6 } else { 4 };
    prog.push((JEQ_K, 0, 1, AUDIT_ARCH_X86_64));
    prog.push((JA, 0, 0, (head - 3) as u32));
    if i386.is_some() {
        prog.push((JEQ_K, 0, 1, AUDIT_ARCH_I386));
        prog.push((JA, 0, 0, (1 + x86_64.len()) as u32));
    }
    prog.push((RET_K, 0, 0, RET_KILL_PROCESS));
    debug_assert_eq!(prog.len(), head);
    prog.extend(x86_64);
    prog.extend(i386.into_iter().flatten());
    if prog.len() > MAX_SECCOMP_INSNS {
        return Err(bad(format!(
            "the profile compiles to more than {MAX_SECCOMP_INSNS} instructions"
        )));
    }
    Ok(SeccompProgram {
        instructions: prog,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter for the opcodes the compiler emits.
    fn run(prog: &[Insn], nr: u32, args: [u64; 6]) -> u32 {
        run_arch(prog, AUDIT_ARCH_X86_64, nr, args)
    }

    fn run_arch(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let (code, jt, jf, k) = prog[pc];
            pc += 1;
            match code {
                LD_W_ABS => {
                    let k = k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                AND_K => acc &= k,
                RET_K => return k,
                JA => pc += k as usize,
                JEQ_K | JGT_K | JGE_K => {
                    let t = match code {
                        JEQ_K => acc == k,
                        JGT_K => acc > k,
                        _ => acc >= k,
                    };
                    pc += usize::from(if t { jt } else { jf });
                }
                _ => panic!("opcode {code:#x}"),
            }
        }
    }

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    const ALLOW: u32 = 0x7fff_0000;

    #[test]
    fn errno_rules_and_default() {
        let p = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["mkdir","mkdirat","no_such_call"],"action":"SCMP_ACT_ERRNO"},
            {"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
        ))
        .unwrap();
        let mkdir = syscall_number("mkdir").unwrap();
        let mkdirat = syscall_number("mkdirat").unwrap();
        assert_eq!(run(&p.instructions, mkdir, [0; 6]), 0x0005_0001);
        assert_eq!(run(&p.instructions, mkdirat, [0; 6]), 0x0005_0001);
        assert_eq!(run(&p.instructions, 39, [0; 6]), 0x0005_0026);
        assert_eq!(run(&p.instructions, 0, [0; 6]), ALLOW);
    }

    #[test]
    fn argument_comparisons_are_64_bit() {
        for (op, value, two, yes, no) in [
            ("SCMP_CMP_EQ", 0x1_0000_0005u64, 0, 0x1_0000_0005u64, 5u64),
            ("SCMP_CMP_NE", 5, 0, 6, 5),
            ("SCMP_CMP_GT", 0x1_0000_0000, 0, 0x1_0000_0001, 0xffff_ffff),
            ("SCMP_CMP_GE", 0x1_0000_0000, 0, 0x1_0000_0000, 0xffff_ffff),
            ("SCMP_CMP_LT", 0x1_0000_0000, 0, 0xffff_ffff, 0x1_0000_0000),
            (
                "SCMP_CMP_LE",
                0x1_0000_0000,
                0,
                0x1_0000_0000,
                0x1_0000_0001,
            ),
            ("SCMP_CMP_MASKED_EQ", 0xff00, 0x1200, 0x12ab, 0x13ab),
        ] {
            let p = compile(&profile(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["personality"],
                "action":"SCMP_ACT_ALLOW","args":[{{"index":1,"value":{value},"valueTwo":{two},"op":"{op}"}}]}}]}}"#
            )))
            .unwrap();
            let nr = syscall_number("personality").unwrap();
            assert_eq!(
                run(&p.instructions, nr, [0, yes, 0, 0, 0, 0]),
                ALLOW,
                "{op} {yes:#x}"
            );
            assert_ne!(
                run(&p.instructions, nr, [0, no, 0, 0, 0, 0]),
                ALLOW,
                "{op} {no:#x}"
            );
        }
    }

    #[test]
    fn i386_gets_its_own_numbers_when_listed_and_is_killed_otherwise() {
        let json = |arches: &str| {
            format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","architectures":[{arches}],
                "syscalls":[{{"names":["mkdir","arch_prctl"],"action":"SCMP_ACT_ERRNO","errnoRet":1}}]}}"#
            )
        };
        let both = compile(&profile(&json(
            r#""SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32""#,
        )))
        .unwrap();
        let i386_mkdir = SYSCALLS_I386.iter().find(|(n, _)| *n == "mkdir").unwrap().1;
        assert_eq!(i386_mkdir, 39);
        let x64_mkdir = syscall_number("mkdir").unwrap();
        assert_eq!(
            run_arch(&both.instructions, AUDIT_ARCH_I386, i386_mkdir, [0; 6]),
            0x0005_0001
        );
        // i386's 83 is symlink, not x86_64's mkdir: the default applies.
        assert_eq!(
            run_arch(&both.instructions, AUDIT_ARCH_I386, x64_mkdir, [0; 6]),
            ALLOW
        );
        assert_eq!(run(&both.instructions, x64_mkdir, [0; 6]), 0x0005_0001);
        assert_eq!(run(&both.instructions, 39, [0; 6]), ALLOW); // getpid on x86_64
        assert_eq!(
            run(&both.instructions, 39 | X32_SYSCALL_BIT, [0; 6]),
            RET_KILL_PROCESS
        );
        assert_eq!(
            run_arch(&both.instructions, 0xc000_00b7, 0, [0; 6]),
            RET_KILL_PROCESS
        );
        let only = compile(&profile(&json(r#""SCMP_ARCH_X86_64""#))).unwrap();
        assert_eq!(
            run_arch(&only.instructions, AUDIT_ARCH_I386, i386_mkdir, [0; 6]),
            RET_KILL_PROCESS
        );
        assert_eq!(run(&only.instructions, x64_mkdir, [0; 6]), 0x0005_0001);
    }

    #[test]
    fn filter_flags_are_carried_or_refused() {
        let p = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW","SECCOMP_FILTER_FLAG_TSYNC"]}"#,
        ))
        .unwrap();
        assert_eq!(p.flags, FLAG_LOG | FLAG_SPEC_ALLOW | FLAG_TSYNC);
        let none = compile(&profile(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#)).unwrap();
        assert_eq!(none.flags, 0);
        let err = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}"#,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("WAIT_KILLABLE_RECV"), "{err}");
    }

    #[test]
    fn unsupported_profiles_are_refused() {
        for json in [
            r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_TRACE"}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_AARCH64"]}"#,
        ] {
            assert!(compile(&profile(json)).is_err(), "{json}");
        }
    }

    #[test]
    fn the_default_profile_of_podman_fits() {
        let names: Vec<String> = SYSCALLS.iter().map(|(n, _)| format!("{n:?}")).collect();
        let p = compile(&profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[{{"names":[{}],"action":"SCMP_ACT_ALLOW"}}]}}"#,
            names.join(",")
        )))
        .unwrap();
        assert!(p.instructions.len() < MAX_SECCOMP_INSNS);
        assert_eq!(run(&p.instructions, 1, [0; 6]), ALLOW);
        // Podman lists x86_64, x86 and x32: every name of both tables still fits.
        let all: std::collections::BTreeSet<String> = SYSCALLS
            .iter()
            .chain(SYSCALLS_I386)
            .map(|(n, _)| format!("{n:?}"))
            .collect();
        let p = compile(&profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
            "syscalls":[{{"names":[{}],"action":"SCMP_ACT_ALLOW"}}]}}"#,
            all.into_iter().collect::<Vec<_>>().join(",")
        )))
        .unwrap();
        assert!(p.instructions.len() <= MAX_SECCOMP_INSNS);
        assert_eq!(run_arch(&p.instructions, AUDIT_ARCH_I386, 1, [0; 6]), ALLOW);
    }
}
