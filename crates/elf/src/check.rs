//! Which platforms can run a program, and why not. Pure: an [`ElfInfo`] in, verdicts out.

use std::collections::BTreeSet;

use bakeoff_spec::{Origin, Platform};
use serde::{Deserialize, Serialize};

use crate::inspect::{Calls, ElfClass, ElfInfo, ElfKind, Linkage};

/// The architecture bakeoff's platforms run here (the one this crate was built for).
const HOST_MACHINE: &str = std::env::consts::ARCH;

/// Libraries a Rumprun toolchain provides itself: NetBSD's libc (which also holds what glibc
/// splits into libdl, librt and libresolv), libm, libpthread, libutil, libcrypt and libz as built
/// by rumprun's build-rr.sh, and gcc's runtime.
const RUMPRUN_PROVIDED: &[&str] = &[
    "libc.so",
    "libm.so",
    "libpthread.so",
    "libdl.so",
    "librt.so",
    "libresolv.so",
    "libutil.so",
    "libcrypt.so",
    "libz.so",
    "libgcc_s.so",
];

/// Whether one platform can run the program. When `runnable`, `reasons` are notes worth
/// knowing; otherwise they say what stops it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub platform: Platform,
    pub runnable: bool,
    pub reasons: Vec<String>,
}

/// One verdict per platform, in [`Platform::ALL`] order. `from_source` says whether bakeoff
/// builds the program from source (so it can rebuild it with another toolchain) or only has
/// this binary.
pub fn check(info: &ElfInfo, origin: Origin) -> Vec<Verdict> {
    let calls = Calls::of(info);
    Platform::ALL
        .into_iter()
        .map(|platform| match platform {
            Platform::Docker | Platform::Qemu | Platform::Xen | Platform::Firecracker => {
                linux(platform, info, &calls, origin)
            }
            Platform::Rumprun => rumprun(info, &calls, origin),
        })
        .collect()
}

/// Docker and the Linux microVMs run the unmodified binary on a Linux kernel: fork, exec and
/// threads all work; the image holds only the program's file closure.
fn linux(platform: Platform, info: &ElfInfo, calls: &Calls, origin: Origin) -> Verdict {
    let mut blockers = not_a_program(info);
    if info.machine != HOST_MACHINE || info.class != ElfClass::Elf64 {
        blockers.push(format!(
            "the binary is for {}, this host runs {HOST_MACHINE}",
            info.architecture()
        ));
    }
    let mut notes = Vec::new();
    // What the image holds besides the program decides what an exec'd program may find there.
    let (programs, shell) = match origin {
        Origin::Package | Origin::Interpreted => (
            "the image holds the package's own files and its dependencies' libraries; other programs must be added with bakeoff.toml [[files]]",
            "/bin/sh and the programs the commands use are in the image only if a dependency brings them (else add them with bakeoff.toml [[files]])",
        ),
        Origin::Source | Origin::Binary => (
            "they and their libraries must be added to the image, which holds only this program and the files it loads",
            "/bin/sh and the programs the commands use must be added to the image",
        ),
    };
    if !calls.exec.is_empty() {
        notes.push(format!(
            "it starts other programs ({}): {programs}",
            call_list(&calls.exec)
        ));
    }
    if !calls.shell.is_empty() {
        notes.push(format!(
            "it runs shell commands ({}): {shell}",
            call_list(&calls.shell)
        ));
    }
    verdict(platform, blockers, notes)
}

/// A Rumprun unikernel is one process of a program rebuilt against NetBSD's libc and linked
/// with the rump kernel: no fork, no exec, no shell; threads run on one CPU.
fn rumprun(info: &ElfInfo, calls: &Calls, origin: Origin) -> Verdict {
    let mut blockers = not_a_program(info);
    if origin == Origin::Interpreted {
        blockers.push(
            "an interpreted app cannot run on Rumprun: its interpreter would have to be rebuilt for the unikernel, and the app's native modules with it"
                .to_string(),
        );
    } else if origin != Origin::Source {
        blockers.push(
            "a prebuilt binary cannot run on Rumprun: it must be rebuilt from source with the Rumprun toolchain"
                .to_string(),
        );
    }
    if !calls.fork.is_empty() {
        blockers.push(format!(
            "calls {}: a Rumprun unikernel runs a single process",
            call_list(&calls.fork)
        ));
    } else if calls.raw_clone() {
        blockers.push(format!(
            "calls {} to create processes: a Rumprun unikernel runs a single process",
            call_list(&calls.clone)
        ));
    }
    if !calls.exec.is_empty() {
        blockers.push(format!(
            "calls {}: a Rumprun unikernel runs a single program and cannot start another",
            call_list(&calls.exec)
        ));
    }
    if !calls.shell.is_empty() {
        blockers.push(format!(
            "calls {}: a Rumprun unikernel has no shell and cannot start another program",
            call_list(&calls.shell)
        ));
    }

    let mut notes = Vec::new();
    if !calls.thread.is_empty() {
        notes.push(format!(
            "creates threads ({}): Rumprun supports them, scheduled cooperatively on a single CPU",
            call_list(&calls.thread)
        ));
    }
    if matches!(info.linkage, Linkage::Static | Linkage::StaticPie) && info.stripped {
        notes.push(
            "the binary is statically linked and stripped, so whether it forks or starts other programs cannot be told from its symbols"
                .to_string(),
        );
    }
    let foreign: Vec<&str> = info
        .needed
        .iter()
        .map(String::as_str)
        .filter(|lib| {
            !lib.starts_with("ld-linux") && !RUMPRUN_PROVIDED.iter().any(|p| lib.starts_with(p))
        })
        .collect();
    match foreign.as_slice() {
        [] => {}
        [one] => notes.push(format!(
            "links {one}: it must also be built with the Rumprun toolchain"
        )),
        many => notes.push(format!(
            "links {}: these libraries must also be built with the Rumprun toolchain",
            english_list(many.iter().map(|s| s.to_string()).collect())
        )),
    }
    if origin == Origin::Source && blockers.is_empty() {
        notes.push(
            "it will be rebuilt with the Rumprun toolchain (x86_64-rumprun-netbsd-gcc, then rumprun-bake)".to_string(),
        );
    }
    verdict(Platform::Rumprun, blockers, notes)
}

/// The Rumprun verdict for a Debian package that bakeoff rebuilds from its source package
/// (`rebuilt`, e.g. "Debian's source package nginx 1.22.1"): the prebuilt binary is inspected
/// for what the rebuilt program will call. `one_process` says how the daemon is run as one
/// process when bakeoff knows a way ("as one process (master_process off; daemon off;)"); then
/// its fork, exec and shell calls are left unused, else a fork refuses it.
pub fn rumprun_rebuilt(info: &ElfInfo, rebuilt: &str, one_process: Option<&str>) -> Verdict {
    let calls = Calls::of(info);
    let mut blockers = not_a_program(info);
    let mut notes = Vec::new();
    let mut multi: Vec<String> = Vec::new();
    for set in [&calls.fork, &calls.exec, &calls.shell] {
        multi.extend(set.iter().map(|c| format!("{c}()")));
    }
    match one_process {
        Some(how) => {
            notes.push(format!(
                "rebuilt from {rebuilt} with the Rumprun toolchain, {how}"
            ));
            if !multi.is_empty() {
                notes.push(format!(
                    "its {} are left unused: a Rumprun unikernel runs a single process",
                    english_list(multi)
                ));
            }
        }
        None => {
            if !calls.fork.is_empty() || calls.raw_clone() {
                let list = if calls.fork.is_empty() {
                    &calls.clone
                } else {
                    &calls.fork
                };
                blockers.push(format!(
                    "calls {}: a Rumprun unikernel runs a single process, and bakeoff knows no way to run this daemon as one",
                    call_list(list)
                ));
            }
            if !calls.exec.is_empty() || !calls.shell.is_empty() {
                let mut both = calls.exec.clone();
                both.extend(calls.shell.iter().copied());
                blockers.push(format!(
                    "calls {}: a Rumprun unikernel runs a single program and cannot start another",
                    call_list(&both)
                ));
            }
            if blockers.is_empty() {
                notes.push(format!("rebuilt from {rebuilt} with the Rumprun toolchain"));
            }
        }
    }
    if !calls.thread.is_empty() {
        notes.push(format!(
            "creates threads ({}): Rumprun supports them, scheduled cooperatively on a single CPU",
            call_list(&calls.thread)
        ));
    }
    verdict(Platform::Rumprun, blockers, notes)
}

fn not_a_program(info: &ElfInfo) -> Vec<String> {
    match info.kind {
        ElfKind::SharedObject => {
            vec!["the file is a shared library, not a program: there is nothing to start".into()]
        }
        ElfKind::Other => vec![
            "the file is not an executable program (it is an object file or a core dump)".into(),
        ],
        ElfKind::Executable | ElfKind::PieExecutable => vec![],
    }
}

fn verdict(platform: Platform, blockers: Vec<String>, notes: Vec<String>) -> Verdict {
    let runnable = blockers.is_empty();
    let reasons = if runnable {
        notes
    } else {
        blockers.into_iter().chain(notes).collect()
    };
    Verdict {
        platform,
        runnable,
        reasons,
    }
}

/// `fork()`, `fork() and vfork()`, `execl(), execve() and execvp()`.
fn call_list(calls: &BTreeSet<&'static str>) -> String {
    english_list(calls.iter().map(|c| format!("{c}()")).collect())
}

fn english_list(mut items: Vec<String>) -> String {
    match items.len() {
        0 => String::new(),
        1 => items.remove(0),
        _ => {
            let last = items.pop().unwrap_or_default();
            format!("{} and {last}", items.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::ProcessFeatures;

    fn program(imports: &[&str], needed: &[&str]) -> ElfInfo {
        let mut info = ElfInfo {
            class: ElfClass::Elf64,
            machine: "x86_64".into(),
            kind: ElfKind::PieExecutable,
            linkage: Linkage::Dynamic,
            interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            soname: None,
            needed: needed.iter().map(|s| s.to_string()).collect(),
            rpath: vec![],
            runpath: vec![],
            stripped: true,
            imports: imports.iter().map(|s| s.to_string()).collect(),
            defined: BTreeSet::new(),
            features: ProcessFeatures::default(),
        };
        info.features = Calls::of(&info).features();
        info
    }

    fn by(verdicts: &[Verdict], p: Platform) -> &Verdict {
        verdicts.iter().find(|v| v.platform == p).unwrap()
    }

    #[test]
    fn every_platform_gets_one_verdict_in_order() {
        let v = check(&program(&[], &["libc.so.6"]), Origin::Source);
        assert_eq!(
            v.iter().map(|v| v.platform).collect::<Vec<_>>(),
            Platform::ALL.to_vec()
        );
        assert!(v.iter().all(|v| v.runnable), "{v:#?}");
    }

    #[test]
    fn forking_blocks_rumprun_only() {
        let v = check(
            &program(&["fork", "waitpid"], &["libc.so.6"]),
            Origin::Source,
        );
        let r = by(&v, Platform::Rumprun);
        assert!(!r.runnable);
        assert_eq!(
            r.reasons,
            vec!["calls fork(): a Rumprun unikernel runs a single process"]
        );
        assert!(by(&v, Platform::Docker).runnable);
        assert!(by(&v, Platform::Qemu).runnable);
    }

    #[test]
    fn prebuilt_binaries_cannot_run_on_rumprun() {
        let v = check(&program(&[], &["libc.so.6"]), Origin::Binary);
        assert_eq!(
            by(&v, Platform::Rumprun).reasons,
            vec!["a prebuilt binary cannot run on Rumprun: it must be rebuilt from source with the Rumprun toolchain"]
        );
    }

    #[test]
    fn a_debian_package_is_rebuilt_as_one_process_or_refused_when_it_forks() {
        let nginx = program(&["fork", "execve", "pthread_create"], &["libc.so.6"]);
        let v = rumprun_rebuilt(
            &nginx,
            "Debian's source package nginx 1.22.1",
            Some("as one process (master_process off; daemon off;)"),
        );
        assert!(v.runnable);
        assert_eq!(
            v.reasons,
            vec![
                "rebuilt from Debian's source package nginx 1.22.1 with the Rumprun toolchain, as one process (master_process off; daemon off;)",
                "its fork() and execve() are left unused: a Rumprun unikernel runs a single process",
                "creates threads (pthread_create()): Rumprun supports them, scheduled cooperatively on a single CPU",
            ]
        );
        let v = rumprun_rebuilt(&nginx, "Debian's source package inetd 0.1", None);
        assert!(!v.runnable);
        assert_eq!(
            v.reasons[0],
            "calls fork(): a Rumprun unikernel runs a single process, and bakeoff knows no way to run this daemon as one"
        );
        let plain = program(&["socket"], &["libc.so.6"]);
        let v = rumprun_rebuilt(&plain, "Debian's source package x 1", None);
        assert!(v.runnable);
        assert_eq!(
            v.reasons,
            vec!["rebuilt from Debian's source package x 1 with the Rumprun toolchain"]
        );
    }

    #[test]
    fn lists_read_as_english() {
        assert_eq!(call_list(&["fork"].into_iter().collect()), "fork()");
        assert_eq!(
            call_list(&["vfork", "fork"].into_iter().collect()),
            "fork() and vfork()"
        );
        assert_eq!(
            call_list(&["execv", "execl", "execve"].into_iter().collect()),
            "execl(), execv() and execve()"
        );
    }

    #[test]
    fn shared_libraries_run_nowhere() {
        let mut info = program(&[], &["libc.so.6"]);
        info.kind = ElfKind::SharedObject;
        assert!(check(&info, Origin::Source).iter().all(|v| !v.runnable));
    }
}
