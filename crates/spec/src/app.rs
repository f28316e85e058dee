use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{parse_cpus, parse_memory, validate_name, SpecError};

/// `bakeoff.toml`: what the user states about an app. Every field is optional; what is given
/// overrides detection. Unknown keys are errors naming the key and its line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub name: Option<String>,
    /// A Debian package to run instead of building this directory (what `deb:NAME` means);
    /// the directory then supplies the command, config files (`files`) and the rest.
    pub package: Option<String>,
    /// The program and its fixed leading arguments, as run inside the image (e.g. ["/usr/sbin/nginx"]).
    pub command: Option<Vec<String>>,
    /// Default arguments, replaced by `run -- ARGS`.
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Ports the app listens on inside the guest.
    pub ports: Option<Vec<u16>>,
    pub workdir: Option<String>,
    pub health: Option<HealthSpec>,
    #[serde(default)]
    pub resources: ResourceSpec,
    pub build: Option<BuildSpec>,
    /// Extra files or directories to ship with the app.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    pub rumprun: Option<RumprunSpec>,
    /// Who the app runs as: `NAME`, `UID`, `NAME:GROUP` or `UID:GID`, looked up in the
    /// image's own /etc/passwd and /etc/group (a unit's `User=` or an image's `User` otherwise;
    /// root when nothing says).
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    #[default]
    Http,
    Tcp,
}

/// How to tell the app is ready: an HTTP GET answering 2xx, or a TCP accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    #[serde(default)]
    pub kind: HealthKind,
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Guest port; defaults to the first of `ports`.
    pub port: Option<u16>,
    /// Seconds to wait for readiness.
    pub timeout: Option<u64>,
}

fn default_health_path() -> String {
    "/".to_string()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// e.g. "64M".
    pub memory: Option<String>,
    pub cpus: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// A shell command run in a copy of the app directory instead of the detected build.
    pub command: Option<String>,
    /// Path of the built executable, relative to the app directory.
    pub output: Option<PathBuf>,
}

/// A host file or directory (relative to the app dir, or absolute) copied to `dst` in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub src: PathBuf,
    pub dst: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RumprunSpec {
    /// Directory holding the toolchain's bin/ (x86_64-rumprun-netbsd-gcc, rumprun-bake, rumprun).
    pub toolchain: Option<PathBuf>,
}

impl AppSpec {
    /// Parses and validates `bakeoff.toml` text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<AppSpec, SpecError> {
        let shown = path.display().to_string();
        let spec: AppSpec = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim_end_matches('\n').replace('\n', " ");
            SpecError::Toml {
                path: match line {
                    Some(l) => format!("{shown} line {l}"),
                    None => shown.clone(),
                },
                message,
            }
        })?;
        spec.validate().map_err(|message| SpecError::Toml {
            path: shown,
            message,
        })?;
        Ok(spec)
    }

    /// Reads `bakeoff.toml` from a directory when present.
    pub fn load_from_dir(dir: &Path) -> Result<Option<AppSpec>, SpecError> {
        let path = dir.join("bakeoff.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => AppSpec::parse(&text, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SpecError::Toml {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.name {
            validate_name(name).map_err(|e| e.to_string())?;
        }
        if let Some(pkg) = &self.package {
            if !is_debian_package_name(pkg) {
                return Err(format!("`package` `{pkg}` is not a Debian package name (lowercase letters, digits, '+', '-', '.')"));
            }
            if self.build.is_some() {
                return Err(
                    "`package` and `[build]` cannot both be set: a Debian package is not built"
                        .into(),
                );
            }
        }
        if let Some(cmd) = &self.command {
            if cmd.is_empty() || cmd[0].is_empty() {
                return Err("`command` must name a program".into());
            }
        }
        if let Some(ports) = &self.ports {
            if ports.contains(&0) {
                return Err("`ports` must be from 1 to 65535".into());
            }
        }
        if let Some(m) = &self.resources.memory {
            parse_memory(m).map_err(|e| e.to_string())?;
        }
        if let Some(c) = self.resources.cpus {
            parse_cpus(&c.to_string()).map_err(|e| e.to_string())?;
        }
        for f in &self.files {
            if !f.dst.starts_with('/') {
                return Err(format!(
                    "`files` destination `{}` must be an absolute path",
                    f.dst
                ));
            }
            if f.dst.split('/').any(|c| c == "..") {
                return Err(format!(
                    "`files` entry `{}` → `{}`: the destination must stay inside the image, without `..`",
                    f.src.display(),
                    f.dst
                ));
            }
        }
        if let Some(k) = self.env.keys().find(|k| k.is_empty() || k.contains('=')) {
            return Err(format!("environment key `{k}` is not valid"));
        }
        Ok(())
    }
}

/// Debian policy 5.6.1: lowercase letters, digits, '+', '-', '.', at least two characters,
/// starting with a letter or digit.
pub fn is_debian_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_destinations_cannot_climb_out_of_the_image() {
        for dst in ["/../../../../x", "/etc/../../x", "/a/.."] {
            let text = format!("[[files]]\nsrc = \"conf\"\ndst = \"{dst}\"\n");
            let e = AppSpec::parse(&text, Path::new("b.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!(
                    "`files` entry `conf` → `{dst}`: the destination must stay inside the image"
                )),
                "{e}"
            );
        }
        AppSpec::parse(
            "[[files]]\nsrc = \"conf\"\ndst = \"/etc/a..b/.x\"\n",
            Path::new("b.toml"),
        )
        .unwrap();
    }

    #[test]
    fn package_key_is_checked() {
        let s = AppSpec::parse(
            "package = \"nginx\"\ncommand = [\"/usr/sbin/nginx\"]\n",
            Path::new("b.toml"),
        )
        .unwrap();
        assert_eq!(s.package.as_deref(), Some("nginx"));
        let e = AppSpec::parse("package = \"Nginx\"\n", Path::new("b.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "b.toml: `package` `Nginx` is not a Debian package name (lowercase letters, digits, '+', '-', '.')");
        let e = AppSpec::parse(
            "package = \"nginx\"\n[build]\ncommand = \"make\"\n",
            Path::new("b.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot both be set"), "{e}");
    }

    #[test]
    fn full_spec_parses() {
        let text = r#"
name = "hello"
command = ["/app/hello"]
args = ["8080"]
ports = [8080]
[env]
GREETING = "hi"
[health]
kind = "tcp"
[resources]
memory = "64M"
cpus = 1
[[files]]
src = "conf"
dst = "/etc/hello"
"#;
        let s = AppSpec::parse(text, Path::new("bakeoff.toml")).unwrap();
        assert_eq!(s.name.as_deref(), Some("hello"));
        assert_eq!(s.health.unwrap().kind, HealthKind::Tcp);
        assert_eq!(s.files[0].dst, "/etc/hello");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "name = \"x\"\n\nportz = [80]\n";
        let e = AppSpec::parse(text, Path::new("app/bakeoff.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("app/bakeoff.toml line 3: unknown field `portz`"),
            "{e}"
        );
    }

    #[test]
    fn nested_unknown_key_and_bad_values() {
        let e = AppSpec::parse(
            "[health]\nkind = \"http\"\nurl = \"/\"\n",
            Path::new("b.toml"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("b.toml line 3: unknown field `url`"),
            "{e}"
        );
        let e =
            AppSpec::parse("[resources]\nmemory = \"huge\"\n", Path::new("b.toml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "b.toml: invalid memory size `huge`: expected a size such as 128M, 512m or 1G"
        );
        let e = AppSpec::parse("name = \"bad name\"\n", Path::new("b.toml")).unwrap_err();
        assert!(e.to_string().contains("invalid name `bad name`"), "{e}");
    }
}
