//! Data packages a program reads at run time (CA certificates, time zones, MIME types,
//! `/etc/services`): kept whole when a kept package depends on them, and configured the way
//! their maintainer scripts would (the CA bundle, `/etc/localtime`), since those scripts are
//! not run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{host, make_link, write_file};
use crate::BuildError;

/// The packages that count as data: names, not a guess from their contents (a bounded list,
/// documented in docs/deb.md). `mime-support` and `mailcap` come with `media-types`.
pub(crate) const DATA_PACKAGES: &[&str] = &[
    "ca-certificates",
    "tzdata",
    "media-types",
    "mime-support",
    "mailcap",
    "netbase",
    "publicsuffix",
];

/// Package names in a `Depends:`/`Pre-Depends:` value: every alternative, without version
/// constraints or architecture qualifiers (`debconf (>= 0.5) | debconf-2.0, perl:any`).
pub(crate) fn depends_names(value: &str) -> Vec<String> {
    value
        .split([',', '|'])
        .filter_map(|alt| {
            let name = alt.split_whitespace().next()?;
            let name = name.split(':').next().unwrap_or(name);
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// The `Depends` and `Pre-Depends` of a control file's text.
pub(crate) fn control_depends(control: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let flush = |current: &mut Option<String>, out: &mut Vec<String>| {
        if let Some(v) = current.take() {
            out.extend(depends_names(&v));
        }
    };
    for line in control.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = current.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        flush(&mut current, &mut out);
        if let Some((k, v)) = line.split_once(':') {
            if k == "Depends" || k == "Pre-Depends" {
                current = Some(v.trim().to_string());
            }
        }
    }
    flush(&mut current, &mut out);
    out
}

/// Which data packages of `available` to keep: those named in `depends` of a kept package,
/// then those the kept data packages depend on in turn. `depends_of(name)` reads a package's
/// dependencies.
pub(crate) fn wanted(
    roots: &[String],
    available: &[String],
    depends_of: &dyn Fn(&str) -> Vec<String>,
) -> Vec<String> {
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<String> = roots.iter().flat_map(|r| depends_of(r)).collect();
    // Bounded: each data package is added at most once, and there are few.
    while let Some(name) = queue.pop() {
        if DATA_PACKAGES.contains(&name.as_str())
            && available.contains(&name)
            && wanted.insert(name.clone())
        {
            queue.extend(depends_of(&name));
        }
    }
    wanted.into_iter().collect()
}

/// What the data packages' maintainer scripts would have made: the CA bundle that
/// `update-ca-certificates` writes (every certificate the package ships, as its default
/// `/etc/ca-certificates.conf` enables them all) and `/etc/localtime` for UTC (tzdata's
/// default answer).
pub(crate) fn configure(rootfs: &Path, kept: &[String]) -> Result<Vec<String>, BuildError> {
    let mut made = Vec::new();
    if kept.iter().any(|k| k == "ca-certificates") {
        let dir = host(rootfs, Path::new("/usr/share/ca-certificates"));
        let mut certs = Vec::new();
        if dir.is_dir() {
            crt_files(&dir, &mut certs)?;
        }
        certs.sort();
        let mut bundle = String::new();
        for c in &certs {
            let text = fs_err::read_to_string(c)?;
            bundle.push_str(text.trim_end());
            bundle.push('\n');
        }
        if !certs.is_empty() {
            write_file(rootfs, "/etc/ssl/certs/ca-certificates.crt", &bundle, 0o644)?;
            made.push(format!(
                "/etc/ssl/certs/ca-certificates.crt ({} certificates)",
                certs.len()
            ));
        }
    }
    if kept.iter().any(|k| k == "tzdata")
        && host(rootfs, Path::new("/usr/share/zoneinfo/Etc/UTC")).exists()
        && std::fs::symlink_metadata(host(rootfs, Path::new("/etc/localtime"))).is_err()
    {
        make_link(rootfs, "/etc/localtime", "/usr/share/zoneinfo/Etc/UTC")?;
        write_file(rootfs, "/etc/timezone", "Etc/UTC\n", 0o644)?;
        made.push("/etc/localtime -> /usr/share/zoneinfo/Etc/UTC".into());
    }
    Ok(made)
}

fn crt_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BuildError> {
    for e in fs_err::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            crt_files(&e.path(), out)?;
        } else if t.is_file() && e.path().extension().is_some_and(|x| x == "crt") {
            out.push(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn depends_fields_are_read_with_alternatives_and_qualifiers() {
        assert_eq!(
            depends_names("openssl (>= 1.1.1), debconf (>= 0.5) | debconf-2.0, perl:any"),
            ["openssl", "debconf", "debconf-2.0", "perl"]
        );
        let control = "Package: nslcd\nPre-Depends: init-system-helpers\nDepends: libc6 (>= 2.34),\n adduser, ca-certificates\nDescription: x\n tzdata is not a dependency here\n";
        assert_eq!(
            control_depends(control),
            ["init-system-helpers", "libc6", "adduser", "ca-certificates"]
        );
    }

    #[test]
    fn only_named_data_packages_are_wanted_and_their_own_data_dependencies() {
        let deps = |p: &str| -> Vec<String> {
            match p {
                "daemon" => vec!["libc6".into(), "mime-support".into(), "tzdata".into()],
                "mime-support" => vec!["media-types".into(), "mailcap".into()],
                "mailcap" => vec!["perl".into(), "media-types".into()],
                _ => vec![],
            }
        };
        let available: Vec<String> = [
            "daemon",
            "libc6",
            "mime-support",
            "media-types",
            "mailcap",
            "perl",
            "ca-certificates",
        ]
        .map(String::from)
        .to_vec();
        // tzdata is named but not in the resolution; ca-certificates is there but nobody asked.
        assert_eq!(
            wanted(&["daemon".into()], &available, &deps),
            ["mailcap", "media-types", "mime-support"]
        );
    }

    #[test]
    fn the_ca_bundle_and_localtime_are_made() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for (p, text) in [
            ("usr/share/ca-certificates/mozilla/B.crt", "-----B-----\n"),
            ("usr/share/ca-certificates/mozilla/A.crt", "-----A-----"),
            ("usr/share/ca-certificates/mozilla/notes.txt", "no"),
            ("usr/share/zoneinfo/Etc/UTC", "TZif"),
        ] {
            std::fs::create_dir_all(r.join(p).parent().unwrap()).unwrap();
            std::fs::write(r.join(p), text).unwrap();
        }
        let made = configure(r, &["ca-certificates".into(), "tzdata".into()]).unwrap();
        assert_eq!(made.len(), 2, "{made:?}");
        assert_eq!(
            std::fs::read_to_string(r.join("etc/ssl/certs/ca-certificates.crt")).unwrap(),
            "-----A-----\n-----B-----\n"
        );
        assert_eq!(
            std::fs::read_link(r.join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Etc/UTC")
        );
        assert!(configure(r, &[]).unwrap().is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn any_control_text_gives_names_without_spaces(s in "\\PC{0,200}") {
            for n in control_depends(&s) {
                prop_assert!(!n.is_empty() && !n.contains(char::is_whitespace) && !n.contains(','));
            }
        }
    }
}
