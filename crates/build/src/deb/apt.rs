//! Debian's own tools, driven from outside: `apt-get install -s` on an empty package database
//! resolves a package's dependency closure with exact versions (whatever this host has
//! installed), `apt-get download --print-uris` names the files and their hashes, and
//! `apt-get download` fetches what the cache lacks. Nothing is installed on this host.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::{BuildError, Cache};

/// Bump when the meaning of a cached resolution changes.
const RESOLVER_VERSION: &str = "bakeoff-deb-resolve/1";

/// One package of the closure, at an exact version, with the file apt downloads for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    /// `amd64`, `all`, ...
    pub arch: String,
    /// File name in the archive's pool (and in the download cache).
    pub file: String,
    pub size: u64,
    /// `SHA256:hex` (or whichever hash apt prints).
    pub hash: String,
}

impl DebPackage {
    /// What `apt-get download` accepts for exactly this version.
    pub fn spec(&self) -> String {
        if self.arch == "all" {
            format!("{}={}", self.name, self.version)
        } else {
            format!("{}:{}={}", self.name, self.arch, self.version)
        }
    }
}

/// A package and its dependency closure as apt resolves it on an empty system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The name the user gave.
    pub requested: String,
    /// The package apt installs for it (the same, unless `requested` is virtual with one provider).
    pub main: String,
    /// In apt's installation order (dependencies first).
    pub packages: Vec<DebPackage>,
}

impl Resolution {
    /// The exact package set, one line each: it goes into the artifact's input hash, so that a
    /// new version (after `apt-get update`) rebuilds.
    pub fn fingerprint(&self) -> String {
        let mut lines: Vec<String> = self
            .packages
            .iter()
            .map(|p| format!("{} {}\n", p.spec(), p.hash))
            .collect();
        lines.sort();
        format!("{}\n{}", self.main, lines.concat())
    }
}

/// A package apt would install: `Inst NAME (VERSION ARCHIVES [ARCH])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// Fails with the sentence the user needs when apt-get or dpkg-deb is missing.
pub(crate) fn require_tools() -> Result<(), BuildError> {
    for tool in ["apt-get", "dpkg-deb"] {
        if find_on_path(tool).is_none() {
            return Err(BuildError::AptMissing);
        }
    }
    Ok(())
}

pub(crate) fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn apt_command(args: &[&str]) -> Command {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]).env("LC_ALL", "C").env("LANGUAGE", "C");
    c
}

/// Resolves `package` with apt on an empty package database (`Dir::State::status=/dev/null`),
/// without recommends or suggests. The result is cached per state of apt's package lists, so
/// it is only computed again after `apt-get update` (or a change of sources).
pub fn resolve(package: &str, cache: &Cache, log: &dyn Fn(&str)) -> Result<Resolution, BuildError> {
    require_tools()?;
    let dir = cache.downloads().join("apt");
    let key = lists_key(package);
    let cached = key.as_ref().map(|k| dir.join(format!("resolved-{k}.json")));
    if let Some(path) = &cached {
        if let Ok(text) = std::fs::read(path) {
            if let Ok(r) = serde_json::from_slice::<Resolution>(&text) {
                return Ok(r);
            }
        }
    }
    log(&format!(
        "resolving {package} and its dependencies with apt"
    ));
    let out = apt_command(&[
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
        // Package names after `--`: never read as options.
        "--",
        package,
    ])
    .output()
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BuildError::AptMissing,
        _ => BuildError::Io(e),
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (main, planned) = interpret_simulation(package, out.status.success(), &stdout, &stderr)?;

    let specs: Vec<String> = planned
        .iter()
        .map(|p| {
            if p.arch == "all" {
                format!("{}={}", p.name, p.version)
            } else {
                format!("{}:{}={}", p.name, p.arch, p.version)
            }
        })
        .collect();
    let mut cmd = apt_command(&["apt-get", "download", "--print-uris", "-q", "--"]);
    cmd.args(&specs);
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(BuildError::CommandFailed {
            what: format!("deb:{package} (apt-get download --print-uris)"),
            status: out
                .status
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "killed".into()),
            output: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        });
    }
    let uris = parse_print_uris(&stdout);
    let mut packages = Vec::new();
    for p in &planned {
        let file = deb_file_name(&p.name, &p.version, &p.arch);
        let found = uris.iter().find(|u| u.file == file).ok_or_else(|| {
            BuildError::Deb(format!(
                "apt-get download --print-uris did not name {file} for {}={}",
                p.name, p.version
            ))
        })?;
        packages.push(DebPackage {
            name: p.name.clone(),
            version: p.version.clone(),
            arch: p.arch.clone(),
            file,
            size: found.size,
            hash: found.hash.clone(),
        });
    }
    let resolution = Resolution {
        requested: package.to_string(),
        main,
        packages,
    };
    if let Some(path) = &cached {
        fs_err::create_dir_all(&dir)?;
        // Written aside and renamed: concurrent builds never read a half-written file.
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        std::io::Write::write_all(
            &mut tmp,
            &serde_json::to_vec_pretty(&resolution).expect("resolution serializes"),
        )?;
        tmp.persist(path).map_err(|e| BuildError::Io(e.error))?;
    }
    Ok(resolution)
}

/// A key for the state of apt's configuration and package lists (names, sizes, mtimes); `None`
/// when the lists cannot be read (then nothing is cached).
fn lists_key(package: &str) -> Option<String> {
    let mut h = Sha256::new();
    h.update(RESOLVER_VERSION);
    h.update(package);
    let mut seen_lists = false;
    for dir in [
        "/var/lib/apt/lists",
        "/etc/apt",
        "/etc/apt/sources.list.d",
        "/etc/apt/preferences.d",
        "/etc/apt/apt.conf.d",
    ] {
        let Ok(read) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut rows: Vec<String> = Vec::new();
        for e in read.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .unwrap_or_default();
            rows.push(format!(
                "{}\0{}\0{}",
                e.file_name().to_string_lossy(),
                meta.len(),
                mtime.as_nanos()
            ));
        }
        rows.sort();
        seen_lists |= dir == "/var/lib/apt/lists" && !rows.is_empty();
        h.update(dir);
        h.update(rows.join("\n"));
    }
    seen_lists.then(|| hex::encode(&h.finalize()[..16]))
}

/// Reads the output of `apt-get install --simulate -q PACKAGE`: the package actually chosen for
/// `requested` and every package to install, in order. Errors are the user's sentences.
pub(crate) fn interpret_simulation(
    requested: &str,
    success: bool,
    stdout: &str,
    stderr: &str,
) -> Result<(String, Vec<Planned>), BuildError> {
    let all = format!("{stdout}\n{stderr}");
    let unknown = || BuildError::UnknownPackage(requested.to_string());
    if all.contains("Unable to locate package")
        || all.contains("for regex '")
        || all.contains("for glob '")
    {
        return Err(unknown());
    }
    if all.contains("has no installation candidate") {
        let providers = virtual_providers(stdout);
        return Err(match providers.first() {
            Some(first) => BuildError::VirtualPackage {
                name: requested.to_string(),
                first: first.clone(),
                providers: providers.join(", "),
            },
            None => unknown(),
        });
    }
    if !success {
        let errors: Vec<&str> = all
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| !is_progress(l))
            .collect();
        return Err(BuildError::CommandFailed {
            what: format!("deb:{requested} (apt-get install --simulate)"),
            status: "100".into(),
            output: errors.join("\n"),
        });
    }
    let planned: Vec<Planned> = stdout.lines().filter_map(parse_inst_line).collect();
    let main = if planned.iter().any(|p| p.name == requested) {
        requested.to_string()
    } else {
        selected_instead(stdout, requested)
            .filter(|m| planned.iter().any(|p| &p.name == m))
            .ok_or_else(unknown)?
    };
    Ok((main, planned))
}

fn is_progress(line: &str) -> bool {
    [
        "Reading package lists",
        "Building dependency tree",
        "Reading state information",
    ]
    .iter()
    .any(|p| line.starts_with(p))
}

/// `Inst libcap2 (1:2.66-4+deb12u3+b1 Debian:12.15/oldstable [amd64]) []` →
/// (libcap2, 1:2.66-4+deb12u3+b1, amd64).
pub(crate) fn parse_inst_line(line: &str) -> Option<Planned> {
    let rest = line.strip_prefix("Inst ")?;
    let (name, rest) = rest.split_once(' ')?;
    // A name may carry an architecture qualifier (`libc6:i386`).
    let name = name.split(':').next()?;
    // Upgrades print `Inst pkg [old] (new ...)`; skip a bracketed old version.
    let rest = match rest.strip_prefix('[') {
        Some(r) => r.split_once("] ")?.1,
        None => rest,
    };
    let inner = rest.strip_prefix('(')?;
    let inner = &inner[..inner.find(')')?];
    let version = inner.split_whitespace().next()?;
    let arch = inner.rsplit_once('[')?.1.strip_suffix(']')?;
    if name.is_empty() || version.is_empty() || arch.is_empty() {
        return None;
    }
    Some(Planned {
        name: name.to_string(),
        version: version.to_string(),
        arch: arch.to_string(),
    })
}

/// `Note, selecting 'mawk' instead of 'awk'` → `mawk`.
fn selected_instead(stdout: &str, requested: &str) -> Option<String> {
    let tail = format!("' instead of '{requested}'");
    stdout.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Note, selecting '")?
            .strip_suffix(&tail)
            .map(str::to_string)
    })
}

/// The indented lines after `Package X is a virtual package provided by:`.
fn virtual_providers(stdout: &str) -> Vec<String> {
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.contains("is a virtual package provided by"));
    lines.next();
    lines
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// One line of `apt-get download --print-uris`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Uri {
    pub uri: String,
    pub file: String,
    pub size: u64,
    pub hash: String,
}

/// `'http://…/nginx_1.22.1-9%2bdeb12u11_amd64.deb' nginx_1.22.1-9+deb12u11_amd64.deb 532468 SHA256:4e27…`
pub(crate) fn parse_print_uris(stdout: &str) -> Vec<Uri> {
    stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix('\'')?;
            let (uri, rest) = rest.split_once("' ")?;
            let mut words = rest.split_whitespace();
            let file = words.next()?.to_string();
            let size = words.next()?.parse().ok()?;
            let hash = words.next().unwrap_or("").to_string();
            Some(Uri {
                uri: uri.to_string(),
                file,
                size,
                hash,
            })
        })
        .collect()
}

/// The file name apt gives a downloaded package: an epoch's `:` is written `%3a`.
pub(crate) fn deb_file_name(name: &str, version: &str, arch: &str) -> String {
    format!("{name}_{}_{arch}.deb", version.replace(':', "%3a"))
}

/// True when the file has the size and hash apt announced.
fn verified(path: &Path, p: &DebPackage) -> Result<bool, BuildError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(false);
    };
    if meta.len() != p.size {
        return Ok(false);
    }
    let data = fs_err::read(path)?;
    Ok(match p.hash.split_once(':') {
        Some(("SHA256", hex)) => hex::encode(Sha256::digest(&data)).eq_ignore_ascii_case(hex),
        Some(("SHA512", hex)) => hex::encode(Sha512::digest(&data)).eq_ignore_ascii_case(hex),
        _ => true, // a hash we do not know: the size must do
    })
}

/// Makes sure every package of the closure is in the download cache (`downloads/debs`), fetching
/// the missing ones with `apt-get download`; returns their paths, in the resolution's order.
pub fn fetch(
    res: &Resolution,
    cache: &Cache,
    log: &dyn Fn(&str),
) -> Result<Vec<PathBuf>, BuildError> {
    let dir = cache.downloads().join("debs");
    fs_err::create_dir_all(&dir)?;
    let mut missing = Vec::new();
    for p in &res.packages {
        if !verified(&dir.join(&p.file), p)? {
            missing.push(p);
        }
    }
    if !missing.is_empty() {
        let bytes: u64 = missing.iter().map(|p| p.size).sum();
        log(&format!(
            "downloading {} Debian packages ({:.1} MB) with apt-get download",
            missing.len(),
            bytes as f64 / 1e6
        ));
        let partial = tempfile::Builder::new()
            .prefix(".partial-")
            .tempdir_in(&dir)?;
        // As root, apt downloads as `_apt`, which cannot write into a private cache: stay root.
        let mut cmd = apt_command(&[
            "apt-get",
            "download",
            "-q",
            "-o",
            "APT::Sandbox::User=root",
            "--",
        ]);
        cmd.args(missing.iter().map(|p| p.spec()))
            .current_dir(partial.path());
        let out = cmd.output()?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let errors: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("E:") || l.starts_with("Err"))
                .collect();
            return Err(BuildError::CommandFailed {
                what: format!("deb:{} (apt-get download)", res.requested),
                status: out
                    .status
                    .code()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "killed".into()),
                output: if errors.is_empty() {
                    text.trim_end().to_string()
                } else {
                    errors.join("\n")
                },
            });
        }
        for p in missing {
            let got = partial.path().join(&p.file);
            if !verified(&got, p)? {
                return Err(BuildError::Deb(format!(
                    "apt-get download of {}={} did not give {} with size {} and {}",
                    p.name, p.version, p.file, p.size, p.hash
                )));
            }
            fs_err::rename(&got, dir.join(&p.file))?;
        }
    }
    Ok(res.packages.iter().map(|p| dir.join(&p.file)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from `apt-get install -s -q -o Dir::State::status=/dev/null nginx` on bookworm.
    const NGINX_SIMULATION: &str = "\
Reading package lists...
Building dependency tree...
The following additional packages will be installed:
  debconf gcc-12-base iproute2 libbpf1 libbsd0 libc6 libcap2 libcap2-bin
Suggested packages:
  debconf-doc
The following NEW packages will be installed:
  debconf gcc-12-base iproute2 libbpf1 libbsd0 libc6 libcap2 libcap2-bin
0 upgraded, 29 newly installed, 0 to remove and 0 not upgraded.
Inst debconf (1.5.82 Debian:12.15/oldstable [all])
Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Inst libgcc-s1 (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64]) []
Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])
Inst libkrb5-3 (1.20.1-2+deb12u5 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])
Inst libcap2 (1:2.66-4+deb12u3+b1 Debian:12.15/oldstable [amd64])
Inst nginx-common (1.22.1-9+deb12u11 Debian-Security:12/oldstable-security [all])
Inst nginx (1.22.1-9+deb12u11 Debian-Security:12/oldstable-security [amd64])
Conf debconf (1.5.82 Debian:12.15/oldstable [all])
Conf nginx (1.22.1-9+deb12u11 Debian-Security:12/oldstable-security [amd64])
";

    fn p(name: &str, version: &str, arch: &str) -> Planned {
        Planned {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
        }
    }

    #[test]
    fn inst_lines_give_exact_versions_in_order() {
        let (main, planned) = interpret_simulation("nginx", true, NGINX_SIMULATION, "").unwrap();
        assert_eq!(main, "nginx");
        assert_eq!(
            planned,
            vec![
                p("debconf", "1.5.82", "all"),
                p("gcc-12-base", "12.2.0-14+deb12u1", "amd64"),
                p("libgcc-s1", "12.2.0-14+deb12u1", "amd64"),
                p("libc6", "2.36-9+deb12u14", "amd64"),
                p("libkrb5-3", "1.20.1-2+deb12u5", "amd64"),
                p("libcap2", "1:2.66-4+deb12u3+b1", "amd64"),
                p("nginx-common", "1.22.1-9+deb12u11", "all"),
                p("nginx", "1.22.1-9+deb12u11", "amd64"),
            ]
        );
    }

    #[test]
    fn odd_inst_lines() {
        assert_eq!(
            parse_inst_line("Inst libc6:i386 (2.36-9 Debian:12 [i386])"),
            Some(p("libc6", "2.36-9", "i386"))
        );
        assert_eq!(
            parse_inst_line("Inst bash [5.2.15-2] (5.2.15-2+b2 Debian:12 [amd64])"),
            Some(p("bash", "5.2.15-2+b2", "amd64"))
        );
        assert_eq!(parse_inst_line("Conf nginx (1.22 Debian [amd64])"), None);
        assert_eq!(parse_inst_line("Inst broken"), None);
        assert_eq!(parse_inst_line("Inst x (1.0 no-arch)"), None);
    }

    #[test]
    fn unknown_virtual_and_regex_names_are_refused_in_one_sentence() {
        let e = interpret_simulation(
            "nginxx",
            false,
            "Reading package lists...\n",
            "E: Unable to locate package nginxx\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no Debian package named `nginxx` (apt-cache knows nothing of it; run apt-get update?)"
        );
        // apt falls back to a regular expression when no package has the exact name.
        let regex =
            "Note, selecting 'nginx-doc' for regex 'nginx.'\nInst nginx-doc (1.0 Debian [all])\n";
        let e = interpret_simulation("nginx.", true, regex, "").unwrap_err();
        assert!(
            matches!(e, BuildError::UnknownPackage(ref n) if n == "nginx."),
            "{e}"
        );
        let awk = "Package awk is a virtual package provided by:\n  original-awk 2022-09-12-1\n  mawk 1.3.4.20200120-3.1\n  gawk 1:5.2.1-2\n\n";
        let e = interpret_simulation(
            "awk",
            false,
            awk,
            "E: Package 'awk' has no installation candidate\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Debian package `awk` is virtual (provided by original-awk, mawk, gawk); name one of them, for example deb:original-awk"
        );
    }

    #[test]
    fn a_virtual_package_with_one_provider_is_replaced_by_it() {
        let out = "Note, selecting 'mawk' instead of 'awk'\nInst libc6 (2.36 D [amd64])\nInst mawk (1.3.4 D [amd64])\n";
        let (main, planned) = interpret_simulation("awk", true, out, "").unwrap();
        assert_eq!((main.as_str(), planned.len()), ("mawk", 2));
    }

    #[test]
    fn unmet_dependencies_show_apt_errors() {
        let err = "Reading package lists...\nThe following packages have unmet dependencies:\n foo : Depends: bar but it is not installable\nE: Unable to correct problems, you have held broken packages.\n";
        let e = interpret_simulation("foo", false, "", err)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("building deb:foo (apt-get install --simulate) failed"),
            "{e}"
        );
        assert!(
            e.contains("Depends: bar but it is not installable")
                && !e.contains("Reading package lists"),
            "{e}"
        );
    }

    #[test]
    fn print_uris_and_file_names() {
        let out = "'http://deb.debian.org/debian/pool/main/libc/libcap2/libcap2_2.66-4%2bdeb12u3%2bb1_amd64.deb' libcap2_1%3a2.66-4+deb12u3+b1_amd64.deb 27708 SHA256:8d68\n\
                   'http://deb.debian.org/debian/pool/main/d/debconf/debconf_1.5.82_all.deb' debconf_1.5.82_all.deb 121212 SHA256:74ab\n\
                   W: some warning\n";
        let uris = parse_print_uris(out);
        assert_eq!(uris.len(), 2);
        assert_eq!(
            uris[0].file,
            deb_file_name("libcap2", "1:2.66-4+deb12u3+b1", "amd64")
        );
        assert_eq!(
            (uris[0].size, uris[0].hash.as_str()),
            (27708, "SHA256:8d68")
        );
        assert_eq!(
            uris[1].uri,
            "http://deb.debian.org/debian/pool/main/d/debconf/debconf_1.5.82_all.deb"
        );
        assert_eq!(
            deb_file_name("debconf", "1.5.82", "all"),
            "debconf_1.5.82_all.deb"
        );
    }

    #[test]
    fn fingerprint_changes_with_any_version() {
        let pkg = |v: &str| DebPackage {
            name: "nginx".into(),
            version: v.into(),
            arch: "amd64".into(),
            file: String::new(),
            size: 1,
            hash: "SHA256:00".into(),
        };
        let a = Resolution {
            requested: "nginx".into(),
            main: "nginx".into(),
            packages: vec![pkg("1.22.1-9+deb12u9")],
        };
        let mut b = a.clone();
        b.packages[0] = pkg("1.22.1-9+deb12u11");
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.packages[0].spec(), "nginx:amd64=1.22.1-9+deb12u9");
    }
}
