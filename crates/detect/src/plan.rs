use std::path::{Path, PathBuf};

use bakeoff_spec::{parse_memory, HealthKind, HealthSpec};
use serde::{Deserialize, Serialize};

use crate::{AppInput, DetectError, Detector, SourceTree};

/// How the app's executable comes to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// One C file, compiled with `gcc -O2 -static`.
    CFile { file: PathBuf },
    /// `make` in a copy of the directory; the output is the one new executable (or `build.output`).
    Make {
        dir: PathBuf,
        output: Option<PathBuf>,
    },
    /// `cargo build --release`; the output is the package's binary.
    Cargo { dir: PathBuf },
    /// A user command from bakeoff.toml `[build]`.
    Custom {
        dir: PathBuf,
        command: String,
        output: Option<PathBuf>,
    },
    /// A prebuilt Linux executable, used as it is.
    Elf { path: PathBuf },
    /// A Debian package and its dependencies, unpacked (never installed on the host).
    Deb { package: String },
    /// A Python app (a directory, or one `.py` file) run by Debian's python3; `deps` names the
    /// file pip installs the dependencies from (`requirements.txt`, `pyproject.toml`,
    /// `Pipfile.lock`).
    Python { path: PathBuf, deps: Option<String> },
    /// A Node.js app (a directory with package.json) run by Debian's nodejs; `lock` when
    /// package-lock.json or npm-shrinkwrap.json is there (`npm ci`).
    Node { dir: PathBuf, lock: bool },
    /// An OCI image (`docker save` or OCI layout tarball): its layers are the rootfs, its
    /// configuration says how to run it.
    Image {
        archive: PathBuf,
        /// The image configuration's `User`, kept for the container.
        user: Option<String>,
    },
}

impl Source {
    /// Where the executable comes from.
    pub fn origin(&self) -> bakeoff_spec::Origin {
        match self {
            Source::Elf { .. } | Source::Image { .. } => bakeoff_spec::Origin::Binary,
            Source::Deb { .. } => bakeoff_spec::Origin::Package,
            Source::Python { .. } | Source::Node { .. } => bakeoff_spec::Origin::Interpreted,
            _ => bakeoff_spec::Origin::Source,
        }
    }

    /// True when the app is built here from source (Rumprun needs that).
    pub fn from_source(&self) -> bool {
        self.origin() == bakeoff_spec::Origin::Source
    }
}

/// Everything needed to build and run the app, decided before any effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildPlan {
    pub name: String,
    /// APP exactly as the user gave it.
    pub input: String,
    pub source: Source,
    /// Which detector (or the user's bakeoff.toml) chose the source.
    pub detected_by: String,
    /// Program and fixed leading arguments inside the image. Empty means "the built executable".
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Ports the app listens on inside the guest.
    pub ports: Vec<u16>,
    /// Where `ports` came from; [`PortsFrom::Observe`] leaves them to a probe run of the build.
    #[serde(default)]
    pub ports_from: PortsFrom,
    pub workdir: String,
    pub health: HealthSpec,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    /// Extra host files copied into the image: (absolute host path, image path).
    pub files: Vec<(PathBuf, String)>,
    pub rumprun_toolchain: Option<PathBuf>,
    /// bakeoff.toml's `user` (it wins over a unit's `User=` and an image's `User`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Where a plan's ports come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PortsFrom {
    /// `ports` in bakeoff.toml (or a flag).
    #[default]
    Declared,
    /// bakeoff's table of Debian daemons whose unit does not say.
    Known,
    /// A literal `htons(N)` in the C source.
    Source,
    /// The `PORT` convention of interpreted apps (bakeoff sets `PORT`).
    Convention,
    /// Not known before the build: a short probe run of the artifact finds them.
    Observe,
    /// Found by the probe run.
    Observed,
    /// The probe run saw no listening socket; the text says what it saw instead.
    Nothing { reason: String },
}

impl std::fmt::Display for PortsFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortsFrom::Declared => write!(f, "declared"),
            PortsFrom::Known => write!(f, "known daemon"),
            PortsFrom::Source => write!(f, "found in the source"),
            PortsFrom::Convention => write!(f, "PORT convention"),
            PortsFrom::Observe => write!(f, "to be observed by a probe run of the build"),
            PortsFrom::Observed => write!(f, "observed"),
            PortsFrom::Nothing { reason } => write!(f, "none observed: {reason}"),
        }
    }
}

/// Where the built executable lives inside every image.
pub fn app_binary_path(name: &str) -> String {
    format!("/app/{name}")
}

pub(crate) fn plan_for(
    input_text: &str,
    input: AppInput,
    detectors: &[Box<dyn Detector>],
) -> Result<BuildPlan, DetectError> {
    if let AppInput::OciArchive(archive) = input {
        return image_plan(input_text, &archive);
    }
    let (source, detected_by, spec, dir) = match input {
        AppInput::Dir(dir) => {
            let tree = SourceTree::read(&dir)?;
            let mut found = None;
            // `package = "..."` in bakeoff.toml: the directory configures a Debian package.
            if let Some(package) = tree.spec.as_ref().and_then(|s| s.package.clone()) {
                found = Some((Source::Deb { package }, "bakeoff.toml package".to_string()));
            }
            let detectors = if found.is_some() { &[][..] } else { detectors };
            for d in detectors {
                if let Some(source) = d.detect(&tree)? {
                    found = Some((source, d.name().to_string()));
                    break;
                }
            }
            let (source, by) = found.ok_or_else(|| DetectError::NothingBuildable(dir.clone()))?;
            (source, by, tree.spec, Some(dir))
        }
        AppInput::CFile(file) => {
            // A bakeoff.toml beside the file applies to it.
            let spec = match file.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(dir) => bakeoff_spec::AppSpec::load_from_dir(dir)?,
                None => bakeoff_spec::AppSpec::load_from_dir(Path::new("."))?,
            };
            (Source::CFile { file }, "single C file".into(), spec, None)
        }
        AppInput::Elf(path) => (Source::Elf { path }, "prebuilt ELF".into(), None, None),
        AppInput::OciArchive(_) => unreachable!("handled above"),
        AppInput::Deb(package) => (Source::Deb { package }, "debian package".into(), None, None),
        AppInput::PyFile(file) => {
            // A bakeoff.toml beside the file applies to it.
            let spec = match file.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(dir) => bakeoff_spec::AppSpec::load_from_dir(dir)?,
                None => bakeoff_spec::AppSpec::load_from_dir(Path::new("."))?,
            };
            (
                crate::lang::python_file(file),
                "python file".into(),
                spec,
                None,
            )
        }
    };
    let spec = spec.unwrap_or_default();
    let name = match &spec.name {
        Some(n) => n.clone(),
        None => default_name(&source, dir.as_deref()),
    };
    bakeoff_spec::validate_name(&name)?;

    let daemon = match &source {
        Source::Deb { package } => KNOWN_DAEMONS
            .iter()
            .find(|d| d.packages.contains(&package.as_str())),
        _ => None,
    };
    let (ports, ports_from) = match (&spec.ports, daemon) {
        (Some(p), _) => (p.clone(), PortsFrom::Declared),
        (None, Some(d)) => (d.ports.to_vec(), PortsFrom::Known),
        (None, None) => guess_ports(&source),
    };
    let interpreted = matches!(source, Source::Python { .. } | Source::Node { .. });
    let detected_command = match &spec.command {
        Some(_) => None,
        None => crate::lang::command(&source)?,
    };
    let health = match spec.health.clone() {
        Some(mut h) => {
            h.port = h.port.or(ports.first().copied());
            h
        }
        None => HealthSpec {
            kind: daemon.map_or(HealthKind::Http, |d| d.health),
            path: "/".into(),
            port: ports.first().copied(),
            timeout: None,
        },
    };
    let base = dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let files = spec
        .files
        .iter()
        .map(|f| {
            (
                if f.src.is_absolute() {
                    f.src.clone()
                } else {
                    base.join(&f.src)
                },
                f.dst.clone(),
            )
        })
        .collect();
    Ok(BuildPlan {
        name,
        input: input_text.to_string(),
        detected_by,
        command: spec
            .command
            .clone()
            .or_else(|| daemon.map(|d| owned(d.command)))
            .or(detected_command)
            .unwrap_or_default()
            .into_iter()
            .map(|w| match ports.first() {
                Some(p) => w.replace("${PORT}", &p.to_string()),
                None => w,
            })
            .collect(),
        args: spec
            .args
            .clone()
            .or_else(|| daemon.map(|d| owned(d.args)))
            .unwrap_or_default(),
        env: {
            let mut env: Vec<(String, String)> = spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            // The cloud convention: an interpreted app reads its port from PORT.
            if let (true, Some(p)) = (interpreted, ports.first()) {
                if !env.iter().any(|(k, _)| k == "PORT") {
                    env.push(("PORT".into(), p.to_string()));
                }
            }
            env
        },
        ports,
        ports_from,
        workdir: spec.workdir.clone().unwrap_or_else(|| {
            if interpreted {
                crate::lang::APP_DIR.into()
            } else {
                "/".into()
            }
        }),
        health,
        memory: spec
            .resources
            .memory
            .as_deref()
            .map(parse_memory)
            .transpose()?,
        cpus: spec.resources.cpus,
        files,
        rumprun_toolchain: spec.rumprun.as_ref().and_then(|r| r.toolchain.clone()),
        user: spec.user.clone(),
        source,
    })
}

/// The plan of an image archive: everything from its configuration; HTTP health on the first
/// exposed port.
fn image_plan(input_text: &str, archive: &Path) -> Result<BuildPlan, DetectError> {
    let image = crate::oci::ImageArchive::open(archive)?;
    let rc = image.run_config();
    if rc.command.is_empty() {
        return Err(DetectError::NoEntry {
            path: archive.to_path_buf(),
            hint: "the image configuration has neither Entrypoint nor Cmd".into(),
        });
    }
    let name = sanitize(&image.repo.clone().unwrap_or_else(|| {
        archive
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }));
    bakeoff_spec::validate_name(&name)?;
    Ok(BuildPlan {
        name,
        input: input_text.to_string(),
        source: Source::Image {
            archive: archive.to_path_buf(),
            user: rc.user,
        },
        detected_by: "oci image".into(),
        command: rc.command,
        args: rc.args,
        env: rc.env,
        health: HealthSpec {
            kind: HealthKind::Http,
            path: "/".into(),
            port: rc.ports.first().copied(),
            timeout: None,
        },
        ports_from: if rc.ports.is_empty() {
            PortsFrom::Observe
        } else {
            PortsFrom::Declared
        },
        ports: rc.ports,
        workdir: rc.workdir,
        memory: None,
        cpus: None,
        files: Vec::new(),
        rumprun_toolchain: None,
        user: None,
    })
}

/// A Debian daemon whose systemd unit is wrong for a foreground run, so bakeoff says how to run
/// it instead (every other package's command comes from its unit at build time, and its ports
/// from a probe run): how to keep it in the foreground, where it listens and how to tell it is
/// ready. `bakeoff.toml` overrides each field.
///
/// - nginx: nginx.service is `Type=forking` with `-g 'daemon on; master_process on;'`.
/// - redis: redis-server.service runs `--supervised systemd`, and the redis.conf it names binds
///   127.0.0.1 with protected mode on, so nothing outside the guest could reach it.
struct KnownDaemon {
    packages: &'static [&'static str],
    command: &'static [&'static str],
    args: &'static [&'static str],
    ports: &'static [u16],
    health: HealthKind,
}

const KNOWN_DAEMONS: &[KnownDaemon] = &[
    KnownDaemon {
        packages: &["nginx", "nginx-light", "nginx-full", "nginx-extras"],
        command: &["/usr/sbin/nginx"],
        args: &["-g", "daemon off;"],
        ports: &[80],
        health: HealthKind::Http,
    },
    KnownDaemon {
        // Everything that keeps it in the foreground and reachable from outside the guest is in
        // `command`, so that `run -- ARGS` (e.g. `--port 7000`) only adds to it.
        packages: &["redis-server", "redis"],
        command: &[
            "/usr/bin/redis-server",
            "/etc/redis/redis.conf",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--bind",
            "0.0.0.0",
            "--supervised",
            "no",
            "--logfile",
            "",
        ],
        args: &[],
        ports: &[6379],
        health: HealthKind::Tcp,
    },
];

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn sanitize(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        s.remove(0);
    }
    s.truncate(63);
    if s.is_empty() {
        "app".into()
    } else {
        s
    }
}

fn default_name(source: &Source, dir: Option<&Path>) -> String {
    let stem = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let raw = match (dir, source) {
        (Some(d), _) => stem(&std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf())),
        (None, Source::CFile { file }) => stem(file),
        (None, Source::Elf { path }) => stem(path),
        (None, Source::Deb { package }) => package.clone(),
        (None, Source::Python { path, .. }) => stem(path),
        (None, _) => String::new(),
    };
    sanitize(&raw)
}

/// Ports before the build: a literal `htons(N)` in a single C file; for a C file without one, a
/// prebuilt ELF or a Debian package outside the table, none yet (a probe run of the build
/// observes them); else 8080, the `PORT` convention. bakeoff.toml `ports` overrides.
fn guess_ports(source: &Source) -> (Vec<u16>, PortsFrom) {
    let text = match source {
        Source::CFile { file } => std::fs::read_to_string(file).unwrap_or_default(),
        Source::Elf { .. } | Source::Deb { .. } => return (Vec::new(), PortsFrom::Observe),
        _ => String::new(),
    };
    let mut ports = Vec::new();
    for (i, _) in text.match_indices("htons(") {
        let digits: String = text[i + 6..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        if let Ok(p) = digits.parse::<u16>() {
            if p != 0 && !ports.contains(&p) {
                ports.push(p);
            }
        }
    }
    match (ports.is_empty(), source) {
        (false, _) => (ports, PortsFrom::Source),
        (true, Source::CFile { .. }) => (ports, PortsFrom::Observe),
        (true, _) => (vec![8080], PortsFrom::Convention),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn redacted(plan: &BuildPlan, root: &Path) -> String {
        serde_json::to_string_pretty(plan)
            .unwrap()
            .replace(&root.display().to_string(), "[ROOT]")
    }

    #[test]
    fn example_hello_plan() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
        let plan = detect(root.to_str().unwrap()).unwrap();
        assert_eq!(plan.name, "hello");
        // Nobody declared a port: a probe run of the build observes it.
        assert_eq!(plan.ports, Vec::<u16>::new());
        assert_eq!(plan.ports_from, PortsFrom::Observe);
        assert!(matches!(plan.source, Source::CFile { .. }));
        insta::assert_snapshot!(redacted(&plan, &root));
    }

    /// A named pipe as APP used to block `build` forever on its first read.
    #[test]
    fn a_named_pipe_or_device_is_refused_at_once() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("app.c");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mkfifo");
        for p in [fifo.to_str().unwrap(), "/dev/zero", "/dev/null"] {
            let e = detect(p).unwrap_err().to_string();
            assert_eq!(e, format!("{p} is not a regular file, a directory or deb:NAME (a named pipe, socket or device cannot be an app)"));
        }
    }

    #[test]
    fn a_bakeoff_toml_beside_a_c_file_applies_to_it() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "srv.c", "int main(void) { return 0; }\n");
        let file = t.path().join("srv.c");
        let plan = detect(file.to_str().unwrap()).unwrap();
        assert_eq!((plan.ports_from, plan.ports), (PortsFrom::Observe, vec![]));
        write(
            t.path(),
            "bakeoff.toml",
            "ports = [7070]\n[env]\nGREETING = \"hi\"\n",
        );
        let plan = detect(file.to_str().unwrap()).unwrap();
        assert_eq!(plan.ports, vec![7070]);
        assert_eq!(plan.ports_from, PortsFrom::Declared);
        assert_eq!(plan.env, vec![("GREETING".into(), "hi".into())]);
    }

    #[test]
    fn example_python_web_plan() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-web");
        let plan = detect(root.to_str().unwrap()).unwrap();
        assert_eq!(plan.command, vec!["/usr/bin/python3", "/app/app.py"]);
        assert_eq!(plan.env, vec![("PORT".into(), "8080".into())]);
        insta::assert_snapshot!(redacted(&plan, &root));
    }

    #[test]
    fn example_node_web_plan() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/node-web");
        let plan = detect(root.to_str().unwrap()).unwrap();
        assert_eq!(plan.command, vec!["/usr/bin/node", "server.js"]);
        assert_eq!(plan.workdir, "/app");
        insta::assert_snapshot!(redacted(&plan, &root));
    }

    #[test]
    fn python_commands_are_found_not_guessed() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        // A WSGI app served by the server named in the dependencies, on the declared port.
        write(d, "requirements.txt", "Flask>=2\ngunicorn==21.2 # server\n");
        write(
            d,
            "app.py",
            "from flask import Flask\napp = Flask(__name__)\n",
        );
        write(d, "bakeoff.toml", "ports = [5000]\n");
        let plan = detect(d.to_str().unwrap()).unwrap();
        assert_eq!(
            plan.command,
            vec![
                "/usr/bin/python3",
                "-m",
                "gunicorn",
                "--bind",
                "0.0.0.0:5000",
                "app:app"
            ]
        );
        assert_eq!(plan.env, vec![("PORT".into(), "5000".into())]);
        // A [project.scripts] entry wins over app.py.
        write(d, "pyproject.toml", "[project]\nname = \"svc\"\ndependencies = [\"uvicorn\"]\n[project.scripts]\nsvc = \"svc.cli:main\"\n");
        let plan = detect(d.to_str().unwrap()).unwrap();
        assert_eq!(
            plan.command[2],
            "import sys; from svc.cli import main; sys.exit(main())"
        );
        assert!(
            matches!(plan.source, Source::Python { ref deps, .. } if deps.as_deref() == Some("pyproject.toml"))
        );
        // One .py file is an app by itself.
        write(d, "tool.py", "print(1)\n");
        let plan = detect(d.join("tool.py").to_str().unwrap()).unwrap();
        assert_eq!(
            (plan.name.as_str(), plan.command[1].as_str()),
            ("tool", "/app/tool.py")
        );
    }

    #[test]
    fn node_without_start_or_main_says_what_to_add() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "package.json",
            "{\"name\": \"x\", \"scripts\": {\"test\": \"jest\"}}",
        );
        let e = detect(t.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("bakeoff cannot tell how to start this app: it has no `scripts.start` and no `main`"), "{e}");
        write(
            t.path(),
            "package.json",
            "{\"scripts\": {\"start\": \"NODE_ENV=x node a.js && echo\"}}",
        );
        let e = detect(t.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("is not of the form `node FILE ARGS`"), "{e}");
        write(t.path(), "package.json", "{\"main\": \"lib/index.js\"}");
        let plan = detect(t.path().to_str().unwrap()).unwrap();
        assert_eq!(plan.command, vec!["/usr/bin/node", "lib/index.js"]);
    }

    #[test]
    fn single_file_guesses_port_from_htons() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "srv.c", "int main(){ a.sin_port = htons(9000); }");
        let plan = detect(t.path().join("srv.c").to_str().unwrap()).unwrap();
        assert_eq!(
            (plan.name.as_str(), plan.ports.clone()),
            ("srv", vec![9000])
        );
    }

    #[test]
    fn toml_overrides_detection() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "a.c", "int main(){}");
        write(
            t.path(),
            "bakeoff.toml",
            "name = \"web\"\nargs = [\"-v\"]\nports = [81]\n[env]\nA = \"1\"\n[health]\nkind = \"tcp\"\n[resources]\nmemory = \"64M\"\n",
        );
        let plan = detect(t.path().to_str().unwrap()).unwrap();
        assert_eq!(plan.name, "web");
        assert_eq!(plan.args, vec!["-v"]);
        assert_eq!(plan.ports, vec![81]);
        assert_eq!(plan.health.port, Some(81));
        assert_eq!(plan.health.kind, HealthKind::Tcp);
        assert_eq!(plan.memory, Some(64 << 20));
        assert_eq!(plan.env, vec![("A".into(), "1".into())]);
    }

    #[test]
    fn detector_order_make_before_c_and_cargo_first() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "a.c", "");
        write(t.path(), "b.c", "");
        write(t.path(), "Makefile", "all:\n");
        assert!(matches!(
            detect(t.path().to_str().unwrap()).unwrap().source,
            Source::Make { .. }
        ));
        write(t.path(), "Cargo.toml", "[package]\nname='x'\n");
        assert!(matches!(
            detect(t.path().to_str().unwrap()).unwrap().source,
            Source::Cargo { .. }
        ));
    }

    #[test]
    fn bad_inputs_say_what_is_wrong() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().to_str().unwrap().to_string();
        let e = detect(&format!("{p}/missing")).unwrap_err().to_string();
        assert_eq!(e, format!("{p}/missing does not exist"));
        let e = detect(&p).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{p} has nothing bakeoff can build")),
            "{e}"
        );
        write(t.path(), "a.c", "");
        write(t.path(), "b.c", "");
        let e = detect(&p).unwrap_err().to_string();
        assert_eq!(e, format!("{p} holds several C files (a.c, b.c); add a Makefile or a bakeoff.toml [build] section saying how to build them"));
        write(t.path(), "notes.txt", "hi");
        let e = detect(&format!("{p}/notes.txt")).unwrap_err().to_string();
        assert!(e.contains("is neither a directory"), "{e}");
        assert_eq!(
            detect("deb:").unwrap_err().to_string(),
            "`deb:` needs a package name, for example deb:nginx"
        );
        assert!(detect("deb:Bad_Name").is_err());
        // Options are not package names (they reached apt-get as options).
        for opt in ["--version", "-s", "-ofoo=bar"] {
            assert_eq!(
                detect(&format!("deb:{opt}")).unwrap_err().to_string(),
                format!("invalid Debian package name `{opt}`")
            );
        }
        write(t.path(), "bakeoff.toml", "nmae = \"x\"\n");
        let e = detect(&p).unwrap_err().to_string();
        assert!(
            e.contains("bakeoff.toml line 1: unknown field `nmae`"),
            "{e}"
        );
    }

    #[test]
    fn prebuilt_elf_and_deb() {
        let plan = detect("/bin/true").unwrap();
        assert!(matches!(plan.source, Source::Elf { .. }));
        assert!(!plan.source.from_source());
        let plan = detect("deb:nginx").unwrap();
        assert_eq!(
            (plan.name.as_str(), plan.ports.clone()),
            ("nginx", vec![80])
        );
    }

    #[test]
    fn known_debian_daemons_get_a_foreground_command_and_health() {
        let nginx = detect("deb:nginx").unwrap();
        assert_eq!(nginx.command, vec!["/usr/sbin/nginx"]);
        assert_eq!(nginx.args, vec!["-g", "daemon off;"]);
        assert_eq!(
            (nginx.health.kind, nginx.health.port),
            (HealthKind::Http, Some(80))
        );
        let redis = detect("deb:redis-server").unwrap();
        assert_eq!(
            redis.command[..2],
            ["/usr/bin/redis-server", "/etc/redis/redis.conf"]
        );
        let joined = redis.command.join(" ");
        for flag in [
            "--daemonize no",
            "--protected-mode no",
            "--bind 0.0.0.0",
            "--supervised no",
        ] {
            assert!(joined.contains(flag), "{joined}");
        }
        assert_eq!(
            redis.command.last().map(String::as_str),
            Some(""),
            "--logfile '' logs to stdout"
        );
        assert_eq!(
            (redis.ports.clone(), redis.health.kind, redis.health.port),
            (vec![6379], HealthKind::Tcp, Some(6379))
        );
        // Unknown packages get no command here; the build says how to give one.
        let other = detect("deb:memcached").unwrap();
        assert!(other.command.is_empty() && other.args.is_empty());
        assert!(matches!(other.source, Source::Deb { ref package } if package == "memcached"));
    }

    #[test]
    fn a_directory_with_package_configures_a_debian_package() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("site");
        std::fs::create_dir_all(dir.join("html")).unwrap();
        write(&dir, "index.c", "int main(){}"); // not built: the package wins
        write(
            &dir,
            "bakeoff.toml",
            "package = \"nginx\"\nports = [8081]\n[[files]]\nsrc = \"html\"\ndst = \"/var/www/html\"\n",
        );
        let plan = detect(dir.to_str().unwrap()).unwrap();
        assert_eq!(
            plan.source,
            Source::Deb {
                package: "nginx".into()
            }
        );
        assert_eq!(plan.detected_by, "bakeoff.toml package");
        assert_eq!(plan.name, "site");
        assert_eq!(
            plan.command,
            vec!["/usr/sbin/nginx"],
            "the known command still applies"
        );
        assert_eq!(
            (plan.ports.clone(), plan.health.port),
            (vec![8081], Some(8081))
        );
        assert_eq!(
            plan.files,
            vec![(dir.join("html"), "/var/www/html".to_string())]
        );
        write(&dir, "bakeoff.toml", "package = \"memcached\"\ncommand = [\"/usr/bin/memcached\", \"-u\", \"nobody\"]\nports = [11211]\n");
        let plan = detect(dir.to_str().unwrap()).unwrap();
        assert_eq!(plan.command, vec!["/usr/bin/memcached", "-u", "nobody"]);
    }
}
