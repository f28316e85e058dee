//! The Debian packages of the Xen host, fetched with `apt-get download` into the shared download
//! cache (`<cache>/downloads/debs`, the directory `deb:` inputs use) and unpacked with
//! `dpkg-deb -x` into cached directories. Nothing is installed on this host.

use std::path::{Path, PathBuf};
use std::process::Command;

use fs_err as fs;

use crate::XenHostError;

/// Packages whose dependency closure (as apt resolves it on an empty system) makes the dom0
/// root: the Xen libraries, xenstore's tools, iptables (the driver's DNAT rules), a shell.
pub const ROOT_PACKAGES: &[&str] = &[
    "libxenmisc4.17",
    "xenstore-utils",
    "iptables",
    "busybox-static",
    "libncurses6",
    "liblzma5",
    "libgcc-s1",
];

/// Packages taken without their dependencies: the tools (whose declared dependencies pull in
/// python3 for scripts the host never runs) and the hypervisor.
pub const TOOL_PACKAGES: &[&str] = &[
    "xen-utils-4.17",
    "xen-utils-common",
    "xen-hypervisor-4.17-amd64",
];

/// The metapackage naming Debian's current generic kernel, which can be dom0 (the cloud kernel
/// cannot: it has no `CONFIG_XEN_DOM0`).
pub const DOM0_KERNEL_METAPACKAGE: &str = "linux-image-amd64";

/// One exact package version to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkg {
    pub name: String,
    pub version: String,
}

impl Pkg {
    fn spec(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

fn apt(args: &[&str]) -> Result<std::process::Output, XenHostError> {
    Command::new(args[0])
        .args(&args[1..])
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| XenHostError::Tool {
            command: args.join(" "),
            reason: e.to_string(),
        })
}

/// `Inst NAME (VERSION ...)` lines of `apt-get install --simulate`.
pub fn parse_simulation(stdout: &str) -> Vec<Pkg> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            let version = rest.strip_prefix('(')?.split_whitespace().next()?;
            Some(Pkg {
                name: name.to_string(),
                version: version.to_string(),
            })
        })
        .collect()
}

/// The candidate version of each named package, without dependencies (`apt-cache policy`).
pub fn parse_candidate(policy: &str) -> Option<String> {
    policy.lines().find_map(|l| {
        let v = l.trim().strip_prefix("Candidate:")?.trim();
        (v != "(none)").then(|| v.to_string())
    })
}

fn lists_missing(what: &str) -> XenHostError {
    XenHostError::AptLists {
        package: what.to_string(),
    }
}

/// The exact package set of the host: the closure of [`ROOT_PACKAGES`], the [`TOOL_PACKAGES`]
/// and the dom0 kernel image.
pub fn resolve() -> Result<Vec<Pkg>, XenHostError> {
    let mut args = vec![
        "apt-get",
        "install",
        "--simulate",
        "-q",
        "-o",
        "Dir::State::status=/dev/null",
        "-o",
        "APT::Install-Recommends=false",
        "-o",
        "APT::Install-Suggests=false",
        "-o",
        "Debug::NoLocking=true",
        "--",
    ];
    args.extend(ROOT_PACKAGES);
    let out = apt(&args)?;
    let mut pkgs = parse_simulation(&String::from_utf8_lossy(&out.stdout));
    if !out.status.success() || pkgs.is_empty() {
        return Err(lists_missing(&ROOT_PACKAGES.join(" ")));
    }
    let kernel = dom0_kernel_package()?;
    for name in TOOL_PACKAGES.iter().copied().chain([kernel.as_str()]) {
        let out = apt(&["apt-cache", "policy", name])?;
        let version = parse_candidate(&String::from_utf8_lossy(&out.stdout))
            .ok_or_else(|| lists_missing(name))?;
        pkgs.push(Pkg {
            name: name.to_string(),
            version,
        });
    }
    Ok(pkgs)
}

/// `linux-image-6.1.0-N-amd64`, the package `linux-image-amd64` depends on.
pub fn dom0_kernel_package() -> Result<String, XenHostError> {
    let out = apt(&[
        "apt-cache",
        "depends",
        "--no-recommends",
        "--no-suggests",
        DOM0_KERNEL_METAPACKAGE,
    ])?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let dep = l.trim().strip_prefix("Depends:")?.trim();
            dep.starts_with("linux-image-").then(|| dep.to_string())
        })
        .ok_or_else(|| lists_missing(DOM0_KERNEL_METAPACKAGE))
}

/// The .deb of each package in `debs` (the download cache), fetching the missing ones.
pub fn fetch(pkgs: &[Pkg], debs: &Path, log: &dyn Fn(&str)) -> Result<Vec<PathBuf>, XenHostError> {
    fs::create_dir_all(debs)?;
    let find = |p: &Pkg| -> Option<PathBuf> {
        // apt names files NAME_VERSION_ARCH.deb with ':' in the version as %3a.
        let prefix = format!("{}_{}_", p.name, p.version.replace(':', "%3a"));
        std::fs::read_dir(debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|f| {
                f.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
    };
    let missing: Vec<&Pkg> = pkgs.iter().filter(|p| find(p).is_none()).collect();
    if !missing.is_empty() {
        log(&format!(
            "downloading {} Debian packages for the Xen host with apt-get download",
            missing.len()
        ));
        let partial = tempfile::Builder::new()
            .prefix(".partial-")
            .tempdir_in(debs)?;
        let specs: Vec<String> = missing.iter().map(|p| p.spec()).collect();
        let out = Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", "--"])
            .args(&specs)
            .current_dir(partial.path())
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| XenHostError::Tool {
                command: "apt-get download".into(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let reason: Vec<&str> = err.lines().filter(|l| l.starts_with("E:")).collect();
            return Err(XenHostError::Tool {
                command: format!("apt-get download {}", specs.join(" ")),
                reason: reason.join(" "),
            });
        }
        for e in fs::read_dir(partial.path())?.flatten() {
            fs::rename(e.path(), debs.join(e.file_name()))?;
        }
    }
    pkgs.iter()
        .map(|p| {
            find(p).ok_or_else(|| XenHostError::Tool {
                command: format!("apt-get download {}", p.spec()),
                reason: format!("it left no .deb in {}", debs.display()),
            })
        })
        .collect()
}

/// Unpacks `debs` into `dir` (once: a complete directory has a marker and is reused).
pub fn unpack(debs: &[PathBuf], dir: &Path) -> Result<(), XenHostError> {
    const MARKER: &str = ".bakeoff-complete";
    if dir.join(MARKER).is_file() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)?;
    for deb in debs {
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(tmp.path())
            .output()
            .map_err(|e| XenHostError::Tool {
                command: "dpkg-deb -x".into(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(XenHostError::Tool {
                command: format!("dpkg-deb -x {}", deb.display()),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    fs::write(tmp.path().join(MARKER), b"")?;
    let tmp = tmp.keep();
    if dir.exists() {
        let _ = fs::remove_dir_all(dir);
    }
    if std::fs::rename(&tmp, dir).is_err() && !dir.join(MARKER).is_file() {
        return Err(XenHostError::Tool {
            command: "rename".into(),
            reason: format!("cannot move {} to {}", tmp.display(), dir.display()),
        });
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_apt_simulation_and_policy() {
        let sim = "NOTE: This is only a simulation!\nInst libc6 (2.36-9+deb12u13 Debian:12.13/stable [amd64])\nInst busybox-static (1:1.35.0-4+deb12u1+b1 Debian:12.13/stable [amd64])\nConf libc6 (2.36-9+deb12u13 Debian:12.13/stable [amd64])\n";
        assert_eq!(
            parse_simulation(sim),
            vec![
                Pkg {
                    name: "libc6".into(),
                    version: "2.36-9+deb12u13".into()
                },
                Pkg {
                    name: "busybox-static".into(),
                    version: "1:1.35.0-4+deb12u1+b1".into()
                }
            ]
        );
        let policy =
            "xen-utils-4.17:\n  Installed: (none)\n  Candidate: 4.17.7+13-g2445b30a44-0+deb12u1\n";
        assert_eq!(
            parse_candidate(policy).as_deref(),
            Some("4.17.7+13-g2445b30a44-0+deb12u1")
        );
        assert_eq!(parse_candidate("x:\n  Candidate: (none)\n"), None);
        assert_eq!(parse_candidate(""), None);
    }
}
