//! What one ELF file is: class, machine, kind, linkage, dynamic section, and the process
//! primitives (fork, exec, shell, threads) it uses.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read as _;
use std::path::Path;

use goblin::elf::{dynamic, header, program_header, section_header, sym, Elf};
use serde::{Deserialize, Serialize};

use crate::ElfError;

/// 32- or 64-bit ELF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ElfClass {
    #[serde(rename = "32")]
    Elf32,
    #[serde(rename = "64")]
    Elf64,
}

impl ElfClass {
    pub fn bits(self) -> u8 {
        match self {
            ElfClass::Elf32 => 32,
            ElfClass::Elf64 => 64,
        }
    }
}

impl fmt::Display for ElfClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-bit", self.bits())
    }
}

/// What the file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ElfKind {
    /// `ET_EXEC`: a position-dependent program.
    Executable,
    /// `ET_DYN` with a program interpreter or the `DF_1_PIE` flag: a position-independent program.
    PieExecutable,
    /// `ET_DYN` that is not a program: a shared library (`.so`).
    SharedObject,
    /// Relocatable objects (`.o`), core dumps and other ELF types that cannot be run.
    Other,
}

/// How the program gets its libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Linkage {
    /// Everything is in the file; no program interpreter.
    Static,
    /// `gcc -static-pie`: position independent, relocates itself, no program interpreter.
    StaticPie,
    /// Loaded by a program interpreter (ld.so) together with its DT_NEEDED libraries.
    Dynamic,
}

/// Process primitives a program uses, derived from its imported symbols (dynamic programs) or
/// from the libc functions linked into it (static programs with a symbol table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessFeatures {
    /// fork, vfork, daemon, forkpty, or a raw clone() that is not explained by threads.
    pub forks: bool,
    /// The exec family or posix_spawn: it starts other programs.
    pub execs: bool,
    /// system() or popen(): it runs commands through /bin/sh.
    pub spawns_shell: bool,
    /// pthread_create or thrd_create.
    pub threads: bool,
}

/// Facts about one ELF file, as read by [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElfInfo {
    pub class: ElfClass,
    /// Debian-style architecture name: `x86_64`, `aarch64`, `i386`, `arm`, `riscv64`, ...
    pub machine: String,
    pub kind: ElfKind,
    pub linkage: Linkage,
    /// PT_INTERP, e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interpreter: Option<String>,
    /// DT_SONAME.
    pub soname: Option<String>,
    /// DT_NEEDED, in order.
    pub needed: Vec<String>,
    /// DT_RPATH directories, in order, unexpanded (`$ORIGIN/../lib`).
    pub rpath: Vec<String>,
    /// DT_RUNPATH directories, in order, unexpanded.
    pub runpath: Vec<String>,
    /// No `.symtab` section.
    pub stripped: bool,
    /// Undefined dynamic symbols, without versions (`fork`, not `fork@GLIBC_2.2.5`).
    pub imports: BTreeSet<String>,
    /// For static programs: the process-related functions linked in from libc (fork, execve,
    /// system, pthread_create, ...), read from `.symtab`. Static linking keeps only the objects
    /// a program references, so `fork` is here only if the program (or something it calls) uses it.
    pub defined: BTreeSet<String>,
    pub features: ProcessFeatures,
}

impl ElfInfo {
    /// `x86_64`, or `i386 (32-bit)` when the class is not the machine's usual one.
    pub fn architecture(&self) -> String {
        let usual = match self.machine.as_str() {
            "i386" | "arm" | "mips" | "powerpc" | "riscv32" | "s390" | "sparc" => ElfClass::Elf32,
            _ => ElfClass::Elf64,
        };
        if self.class == usual {
            self.machine.clone()
        } else {
            format!("{} ({})", self.machine, self.class)
        }
    }
}

/// Reads and parses the ELF file at `path`.
pub fn inspect(path: &Path) -> Result<ElfInfo, ElfError> {
    // look at the magic first, so that a large file that is not ELF is not read whole
    let head = read_head(path)?;
    if head.len() < 4 || head[..4] != *header::ELFMAG {
        return Err(ElfError::NotElf {
            path: path.to_path_buf(),
        });
    }
    let bytes = read_file(path)?;
    let parsed = parse(path, &bytes)?;
    // Zeroed or missing program headers: the kernel would refuse to exec it (or crash at run).
    // (A foreign machine's binary is refused by the check with a better sentence.)
    if parsed.loads == 0
        && parsed.ident.e_machine == header::EM_X86_64
        && matches!(
            parsed.info.kind,
            ElfKind::Executable | ElfKind::PieExecutable | ElfKind::SharedObject
        )
    {
        return Err(ElfError::Corrupt {
            path: path.to_path_buf(),
            reason: "it has no loadable segment (its program headers are missing or zeroed)".into(),
        });
    }
    Ok(parsed.info)
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, ElfError> {
    std::fs::read(path).map_err(|source| ElfError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// The identity ld.so compares when it decides whether a library fits a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ident {
    pub class: ElfClass,
    pub little_endian: bool,
    pub e_machine: u16,
}

/// The first 64 bytes of `path` (an ELF header at most), or fewer if the file is shorter.
pub(crate) fn read_head(path: &Path) -> Result<Vec<u8>, ElfError> {
    let unreadable = |source| ElfError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut head = Vec::with_capacity(64);
    file.take(64).read_to_end(&mut head).map_err(unreadable)?;
    Ok(head)
}

/// What ld.so's `open_verify` does with a candidate library for a program of identity `want`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verify {
    Load,
    /// Another class or machine: ld.so quietly tries the next candidate.
    Skip(String),
    /// ld.so gives up with an error (too short, not ELF, other byte order, not a shared object).
    Fatal(String),
}

pub(crate) fn verify(head: &[u8], want: Ident) -> Verify {
    let header_size = if want.class == ElfClass::Elf64 {
        64
    } else {
        52
    };
    if head.len() < header_size {
        return Verify::Fatal(format!(
            "it is {} bytes long, shorter than an ELF header",
            head.len()
        ));
    }
    if head[..4] != *header::ELFMAG {
        return Verify::Fatal("it is not an ELF file".to_string());
    }
    let Some(ident) = ident_of(head) else {
        return Verify::Fatal(
            "its ELF identification has an unknown class or byte order".to_string(),
        );
    };
    if ident.class != want.class {
        return Verify::Skip(format!("is for {}", describe(ident)));
    }
    if ident.little_endian != want.little_endian {
        return Verify::Fatal(format!("it is {}", describe(ident)));
    }
    if ident.e_machine != want.e_machine {
        return Verify::Skip(format!("is for {}", describe(ident)));
    }
    let raw = [head[16], head[17]];
    let e_type = if ident.little_endian {
        u16::from_le_bytes(raw)
    } else {
        u16::from_be_bytes(raw)
    };
    if e_type != header::ET_DYN {
        return Verify::Fatal(format!("it is not a shared object (ELF type {e_type})"));
    }
    Verify::Load
}

/// `x86_64 (64-bit, little-endian)`.
pub(crate) fn describe(ident: Ident) -> String {
    let machine = machine_name(ident.e_machine, ident.class);
    format!(
        "{machine} ({}, {}-endian)",
        ident.class,
        if ident.little_endian { "little" } else { "big" }
    )
}

fn ident_of(bytes: &[u8]) -> Option<Ident> {
    if bytes.len() < 20 || bytes[..4] != *header::ELFMAG {
        return None;
    }
    let class = match bytes[header::EI_CLASS] {
        header::ELFCLASS32 => ElfClass::Elf32,
        header::ELFCLASS64 => ElfClass::Elf64,
        _ => return None,
    };
    let little_endian = match bytes[header::EI_DATA] {
        header::ELFDATA2LSB => true,
        header::ELFDATA2MSB => false,
        _ => return None,
    };
    let raw = [bytes[18], bytes[19]];
    let e_machine = if little_endian {
        u16::from_le_bytes(raw)
    } else {
        u16::from_be_bytes(raw)
    };
    Some(Ident {
        class,
        little_endian,
        e_machine,
    })
}

/// Everything the closure walk needs beyond [`ElfInfo`].
#[derive(Debug)]
pub(crate) struct Parsed {
    pub info: ElfInfo,
    pub ident: Ident,
    /// DF_1_NODEFLIB: ld.so must not search ld.so.cache or the default directories for this object's needs.
    pub nodeflib: bool,
    /// PT_LOAD segments: a program without one cannot be loaded.
    pub loads: usize,
}

pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed, ElfError> {
    if bytes.len() < 4 || bytes[..4] != *header::ELFMAG {
        return Err(ElfError::NotElf {
            path: path.to_path_buf(),
        });
    }
    let corrupt = |reason: String| ElfError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let ident = ident_of(bytes).ok_or_else(|| {
        corrupt(format!(
            "the ELF identification is {} bytes long or has an unknown class or byte order",
            bytes.len().min(20)
        ))
    })?;
    // goblin reports malformed input as errors; the unwind guard is a second line of defence so
    // that a hostile file can never take the caller down.
    let elf = std::panic::catch_unwind(|| Elf::parse(bytes))
        .map_err(|_| corrupt("the ELF parser gave up on it".to_string()))?
        .map_err(|e| corrupt(e.to_string()))?;

    let has_interp = elf
        .program_headers
        .iter()
        .any(|ph| ph.p_type == program_header::PT_INTERP);
    let flags_1 = elf.dynamic.as_ref().map_or(0, |d| d.info.flags_1);
    let is_pie_flag = flags_1 & dynamic::DF_1_PIE != 0;
    let needed: Vec<String> = elf.libraries.iter().map(|s| s.to_string()).collect();

    let (kind, linkage) = match elf.header.e_type {
        header::ET_EXEC if has_interp || !needed.is_empty() => {
            (ElfKind::Executable, Linkage::Dynamic)
        }
        header::ET_EXEC => (ElfKind::Executable, Linkage::Static),
        header::ET_DYN if has_interp => (ElfKind::PieExecutable, Linkage::Dynamic),
        header::ET_DYN if is_pie_flag && needed.is_empty() => {
            (ElfKind::PieExecutable, Linkage::StaticPie)
        }
        header::ET_DYN if is_pie_flag => (ElfKind::PieExecutable, Linkage::Dynamic),
        header::ET_DYN => (ElfKind::SharedObject, Linkage::Dynamic),
        _ => (
            ElfKind::Other,
            if needed.is_empty() {
                Linkage::Static
            } else {
                Linkage::Dynamic
            },
        ),
    };

    let stripped = !elf
        .section_headers
        .iter()
        .any(|sh| sh.sh_type == section_header::SHT_SYMTAB);

    let imports: BTreeSet<String> = elf
        .dynsyms
        .iter()
        .filter(|s| s.st_shndx == section_header::SHN_UNDEF as usize && s.st_name != 0)
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name))
        .filter(|name| !name.is_empty())
        .map(|name| unversioned(name).to_string())
        .collect();

    let defined: BTreeSet<String> = if matches!(linkage, Linkage::Static | Linkage::StaticPie) {
        elf.syms
            .iter()
            .filter(|s| s.st_shndx != section_header::SHN_UNDEF as usize)
            .filter(|s| {
                matches!(
                    s.st_type(),
                    sym::STT_FUNC | sym::STT_GNU_IFUNC | sym::STT_NOTYPE
                )
            })
            .filter_map(|s| elf.strtab.get_at(s.st_name))
            .map(unversioned)
            .filter(|name| classify(name).is_some())
            .map(str::to_string)
            .collect()
    } else {
        BTreeSet::new()
    };

    let split = |entries: &[&str]| -> Vec<String> {
        entries
            .iter()
            .flat_map(|e| e.split(':'))
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut info = ElfInfo {
        class: ident.class,
        machine: machine_name(elf.header.e_machine, ident.class),
        kind,
        linkage,
        interpreter: elf.interpreter.map(str::to_string),
        soname: elf.soname.map(str::to_string),
        needed,
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
        stripped,
        imports,
        defined,
        features: ProcessFeatures::default(),
    };
    info.features = Calls::of(&info).features();
    Ok(Parsed {
        info,
        ident,
        nodeflib: flags_1 & dynamic::DF_1_NODEFLIB != 0,
        loads: elf
            .program_headers
            .iter()
            .filter(|ph| ph.p_type == program_header::PT_LOAD)
            .count(),
    })
}

fn unversioned(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

/// Debian-style architecture names for the machines people run.
pub(crate) fn machine_name(e_machine: u16, class: ElfClass) -> String {
    let is64 = class == ElfClass::Elf64;
    match e_machine {
        header::EM_X86_64 => "x86_64",
        header::EM_386 => "i386",
        header::EM_AARCH64 => "aarch64",
        header::EM_ARM => "arm",
        header::EM_RISCV if is64 => "riscv64",
        header::EM_RISCV => "riscv32",
        header::EM_PPC64 => "ppc64",
        header::EM_PPC => "powerpc",
        header::EM_S390 if is64 => "s390x",
        header::EM_S390 => "s390",
        header::EM_MIPS if is64 => "mips64",
        header::EM_MIPS => "mips",
        header::EM_LOONGARCH => "loongarch64",
        header::EM_SPARCV9 => "sparc64",
        header::EM_SPARC => "sparc",
        header::EM_IA_64 => "ia64",
        other => return format!("ELF machine {other}"),
    }
    .to_string()
}

/// The groups of calls that matter to the platforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    Fork,
    Clone,
    Exec,
    Shell,
    Thread,
}

/// Interesting symbol → (the public function a user knows, its group). glibc's static archive
/// defines internal aliases next to the public names (`__libc_fork`, `_Fork`, `__libc_system`).
const CALLS: &[(&str, &str, CallKind)] = &[
    ("fork", "fork", CallKind::Fork),
    ("_Fork", "fork", CallKind::Fork),
    ("__fork", "fork", CallKind::Fork),
    ("__libc_fork", "fork", CallKind::Fork),
    ("vfork", "vfork", CallKind::Fork),
    ("__vfork", "vfork", CallKind::Fork),
    ("daemon", "daemon", CallKind::Fork),
    ("forkpty", "forkpty", CallKind::Fork),
    ("clone", "clone", CallKind::Clone),
    ("__clone", "clone", CallKind::Clone),
    ("clone3", "clone3", CallKind::Clone),
    ("__clone3", "clone3", CallKind::Clone),
    ("execve", "execve", CallKind::Exec),
    ("__execve", "execve", CallKind::Exec),
    ("execv", "execv", CallKind::Exec),
    ("execvp", "execvp", CallKind::Exec),
    ("execvpe", "execvpe", CallKind::Exec),
    ("__execvpe", "execvpe", CallKind::Exec),
    ("execl", "execl", CallKind::Exec),
    ("execle", "execle", CallKind::Exec),
    ("execlp", "execlp", CallKind::Exec),
    ("fexecve", "fexecve", CallKind::Exec),
    ("execveat", "execveat", CallKind::Exec),
    ("posix_spawn", "posix_spawn", CallKind::Exec),
    ("__posix_spawn", "posix_spawn", CallKind::Exec),
    ("posix_spawnp", "posix_spawnp", CallKind::Exec),
    ("system", "system", CallKind::Shell),
    ("__libc_system", "system", CallKind::Shell),
    ("popen", "popen", CallKind::Shell),
    ("_IO_popen", "popen", CallKind::Shell),
    ("_IO_new_popen", "popen", CallKind::Shell),
    ("pthread_create", "pthread_create", CallKind::Thread),
    ("__pthread_create_2_1", "pthread_create", CallKind::Thread),
    ("thrd_create", "thrd_create", CallKind::Thread),
];

pub(crate) fn classify(name: &str) -> Option<(&'static str, CallKind)> {
    CALLS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, public, kind)| (*public, *kind))
}

/// The process-related calls of a program, by group, as public function names.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    pub fork: BTreeSet<&'static str>,
    pub clone: BTreeSet<&'static str>,
    pub exec: BTreeSet<&'static str>,
    pub shell: BTreeSet<&'static str>,
    pub thread: BTreeSet<&'static str>,
}

impl Calls {
    pub fn of(info: &ElfInfo) -> Calls {
        let mut calls = Calls::default();
        for name in info.imports.iter().chain(info.defined.iter()) {
            if let Some((public, kind)) = classify(name) {
                let set = match kind {
                    CallKind::Fork => &mut calls.fork,
                    CallKind::Clone => &mut calls.clone,
                    CallKind::Exec => &mut calls.exec,
                    CallKind::Shell => &mut calls.shell,
                    CallKind::Thread => &mut calls.thread,
                };
                set.insert(public);
            }
        }
        calls
    }

    /// clone() on its own creates processes; next to pthread_create (which uses it), fork,
    /// exec or system (static glibc's posix_spawn uses it) it is explained by them.
    pub fn raw_clone(&self) -> bool {
        !self.clone.is_empty()
            && self.thread.is_empty()
            && self.fork.is_empty()
            && self.exec.is_empty()
            && self.shell.is_empty()
    }

    pub fn features(&self) -> ProcessFeatures {
        ProcessFeatures {
            forks: !self.fork.is_empty() || self.raw_clone(),
            execs: !self.exec.is_empty(),
            spawns_shell: !self.shell.is_empty(),
            threads: !self.thread.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal_header(class: u8, data: u8, e_type: u16, machine: u16) -> Vec<u8> {
        crate::test_support::elf_header(class, data, e_type, machine)
    }

    #[test]
    fn a_header_only_aarch64_executable_is_read() {
        let bytes = minimal_header(2, 1, header::ET_EXEC, header::EM_AARCH64);
        let parsed = parse(Path::new("/tmp/arm"), &bytes).unwrap();
        assert_eq!(parsed.info.machine, "aarch64");
        assert_eq!(parsed.info.class, ElfClass::Elf64);
        assert_eq!(parsed.info.kind, ElfKind::Executable);
        assert_eq!(parsed.info.linkage, Linkage::Static);
        assert!(parsed.info.stripped);
        assert_eq!(parsed.info.architecture(), "aarch64");
    }

    #[test]
    fn big_endian_and_32_bit_headers_are_read() {
        let bytes = minimal_header(1, 2, header::ET_EXEC, header::EM_PPC);
        let parsed = parse(Path::new("/tmp/ppc"), &bytes).unwrap();
        assert_eq!(parsed.info.machine, "powerpc");
        assert_eq!(
            parsed.ident,
            Ident {
                class: ElfClass::Elf32,
                little_endian: false,
                e_machine: header::EM_PPC
            }
        );
        let x32 = parse(
            Path::new("/tmp/x32"),
            &minimal_header(1, 1, header::ET_EXEC, header::EM_X86_64),
        )
        .unwrap();
        assert_eq!(x32.info.architecture(), "x86_64 (32-bit)");
    }

    #[test]
    fn not_elf_and_short_files_are_named() {
        let err = parse(Path::new("/etc/motd"), b"Welcome\n").unwrap_err();
        assert_eq!(err.to_string(), "/etc/motd is not an ELF file");
        let err = parse(Path::new("/x/empty"), b"").unwrap_err();
        assert_eq!(err.to_string(), "/x/empty is not an ELF file");
        let err = parse(Path::new("/x/stub"), b"\x7fELF\x02\x01").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/x/stub is truncated or corrupt: the ELF identification is 6 bytes long or has an unknown class or byte order"
        );
    }

    /// A program whose program headers were zeroed passed `check` and `build` and crashed at run.
    #[test]
    fn zeroed_program_headers_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let mut bytes = std::fs::read("/bin/true").unwrap();
        let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
        let phentsize = u16::from_le_bytes([bytes[54], bytes[55]]) as usize;
        let phnum = u16::from_le_bytes([bytes[56], bytes[57]]) as usize;
        bytes[phoff..phoff + phentsize * phnum].fill(0);
        let p = t.path().join("zeroed");
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(
            inspect(&p).unwrap_err().to_string(),
            format!("{} is truncated or corrupt: it has no loadable segment (its program headers are missing or zeroed)", p.display())
        );
        inspect(Path::new("/bin/true")).unwrap();
    }

    #[test]
    fn program_headers_past_the_end_are_corrupt() {
        let mut bytes = minimal_header(2, 1, header::ET_EXEC, header::EM_X86_64);
        bytes[32..40].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_phoff far beyond the file
        bytes[56..58].copy_from_slice(&4u16.to_le_bytes()); // e_phnum
        let err = parse(Path::new("/x/bad"), &bytes).unwrap_err().to_string();
        assert!(err.starts_with("/x/bad is truncated or corrupt: "), "{err}");
    }

    #[test]
    fn candidates_are_verified_like_ld_so_does() {
        let want = Ident {
            class: ElfClass::Elf64,
            little_endian: true,
            e_machine: header::EM_X86_64,
        };
        let padded = |mut h: Vec<u8>| {
            h.resize(4096, 0);
            h
        };
        let lib = padded(minimal_header(2, 1, header::ET_DYN, header::EM_X86_64));
        assert_eq!(verify(&lib, want), Verify::Load);
        let i386 = padded(minimal_header(1, 1, header::ET_DYN, header::EM_386));
        assert_eq!(
            verify(&i386, want),
            Verify::Skip("is for i386 (32-bit, little-endian)".into())
        );
        let arm = padded(minimal_header(2, 1, header::ET_DYN, header::EM_AARCH64));
        assert_eq!(
            verify(&arm, want),
            Verify::Skip("is for aarch64 (64-bit, little-endian)".into())
        );
        let big = padded(minimal_header(2, 2, header::ET_DYN, header::EM_X86_64));
        assert_eq!(
            verify(&big, want),
            Verify::Fatal("it is x86_64 (64-bit, big-endian)".into())
        );
        let exec = padded(minimal_header(2, 1, header::ET_EXEC, header::EM_X86_64));
        assert_eq!(
            verify(&exec, want),
            Verify::Fatal("it is not a shared object (ELF type 2)".into())
        );
        assert_eq!(
            verify(&[b'x'; 100], want),
            Verify::Fatal("it is not an ELF file".into())
        );
        assert_eq!(
            verify(b"\x7fELF", want),
            Verify::Fatal("it is 4 bytes long, shorter than an ELF header".into())
        );
    }

    #[test]
    fn versions_are_stripped_and_calls_are_grouped() {
        assert_eq!(unversioned("fork@GLIBC_2.2.5"), "fork");
        assert_eq!(unversioned("fork"), "fork");
        assert_eq!(classify("__libc_fork"), Some(("fork", CallKind::Fork)));
        assert_eq!(classify("printf"), None);
    }

    fn info_with(imports: &[&str], defined: &[&str]) -> ElfInfo {
        let mut parsed = parse(
            Path::new("/t"),
            &minimal_header(2, 1, header::ET_EXEC, header::EM_X86_64),
        )
        .unwrap();
        parsed.info.imports = imports.iter().map(|s| s.to_string()).collect();
        parsed.info.defined = defined.iter().map(|s| s.to_string()).collect();
        parsed.info
    }

    #[test]
    fn clone_counts_as_forking_only_when_nothing_else_explains_it() {
        let threads = Calls::of(&info_with(
            &[],
            &["pthread_create", "clone", "__clone", "clone3"],
        ))
        .features();
        assert_eq!(
            threads,
            ProcessFeatures {
                threads: true,
                ..Default::default()
            }
        );
        let raw = Calls::of(&info_with(&["clone"], &[])).features();
        assert_eq!(
            raw,
            ProcessFeatures {
                forks: true,
                ..Default::default()
            }
        );
        let shell = Calls::of(&info_with(
            &[],
            &["system", "__libc_system", "__clone", "__posix_spawn"],
        ))
        .features();
        assert_eq!(
            shell,
            ProcessFeatures {
                spawns_shell: true,
                execs: true,
                ..Default::default()
            }
        );
    }
}

/// Property tests of ELF inspection on hostile input: 256 arbitrary files and 256 mutations of
/// a real program (bytes overwritten at random offsets); parsing never panics.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(Path::new("/x/any"), &bytes);
            let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
            elf.extend_from_slice(&bytes);
            let _ = parse(Path::new("/x/any"), &elf);
        }

        #[test]
        fn mutated_programs_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        ) {
            static TRUE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let mut bytes = TRUE.get_or_init(|| std::fs::read("/bin/true").unwrap()).clone();
            // Most edits land in the headers, where the parser looks first.
            for (i, b) in edits {
                let span = if b % 2 == 0 { 4096.min(bytes.len()) } else { bytes.len() };
                let at = i.index(span);
                bytes[at] = b;
            }
            let _ = parse(Path::new("/x/mutated"), &bytes);
        }
    }
}
