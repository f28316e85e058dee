//! Interpreted apps (Python, Node.js): the app's files and its dependencies, installed here at
//! build time with the ecosystem's own tool (pip, npm), then laid out beside an interpreter
//! from Debian's packages (see `deb/runtime.rs`).
//!
//! Installed dependencies are cached by a hash of the files that declare them (and of the
//! interpreter packages' versions), so editing the app's code does not reinstall them.

use std::path::{Path, PathBuf};
use std::process::Command;

use bakeoff_detect::{BuildPlan, Source};
use sha2::{Digest, Sha256};

use crate::deb::runtime::Interpreter;
use crate::deb::{Laid, Resolution};
use crate::{hash, BuildError, Cache};

/// Bump when what is kept of the interpreter's packages changes, so cached artifacts are rebuilt.
pub(crate) const LAYOUT_VERSION: &str = "bakeoff-lang-layout/3";

/// The Debian package that brings each language's interpreter.
pub(crate) fn interpreter_package(source: &Source) -> Option<&'static str> {
    match source {
        Source::Python { .. } => Some("python3"),
        Source::Node { .. } => Some("nodejs"),
        _ => None,
    }
}

/// Stages the app with its dependencies and lays it out with its interpreter into `rootfs`.
pub(crate) fn lay_out(
    plan: &BuildPlan,
    res: &Resolution,
    cache: &Cache,
    work: &Path,
    rootfs: &Path,
    log: &dyn Fn(&str),
) -> Result<Laid, BuildError> {
    let app = work.join("app");
    let interpreter = match &plan.source {
        Source::Python { path, deps } => {
            stage_python(path, deps.as_deref(), res, cache, &app, log)?;
            Interpreter {
                program: bakeoff_detect::PYTHON,
                whole: &|_: &str, s: &str| s == "python3-defaults" || s.starts_with("python3."),
            }
        }
        Source::Node { dir, lock } => {
            stage_node(dir, *lock, res, cache, &app, log)?;
            Interpreter {
                program: bakeoff_detect::NODE,
                // Debian loads some of node's builtins from /usr/share/nodejs (node-acorn, ...).
                whole: &|name: &str, s: &str| s == "nodejs" || name.starts_with("node-"),
            }
        }
        other => {
            return Err(BuildError::Unsupported(format!(
                "{other:?} is not an interpreted app"
            )))
        }
    };
    let mut laid = crate::deb::runtime::lay_out(res, interpreter, &app, cache, work, rootfs, log)?;
    match &plan.source {
        Source::Python { .. } => laid.env.extend([
            (
                "PYTHONPATH".to_string(),
                bakeoff_detect::PYTHON_DEPS_DIR.to_string(),
            ),
            ("PYTHONUNBUFFERED".into(), "1".into()),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
        ]),
        _ => laid.env.push(("NODE_ENV".into(), "production".into())),
    }
    Ok(laid)
}

fn run_tool(cmd: &mut Command, what: &str, log: &dyn Fn(&str)) -> Result<(), BuildError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    log(&format!("running {what}"));
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BuildError::ToolMissing {
            tool: program.clone(),
            hint: match program.as_str() {
                "npm" => {
                    "install Node.js and npm on the build host (apt-get install -y npm)".into()
                }
                _ => "install Python 3 and pip on the build host (apt-get install -y python3-pip)"
                    .into(),
            },
        },
        _ => BuildError::Io(e),
    })?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        if output.is_empty() {
            output = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        }
        return Err(BuildError::CommandFailed {
            what: what.to_string(),
            status: out
                .status
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "killed".into()),
            output,
        });
    }
    Ok(())
}

/// The cache directory for dependencies declared by `files` of `dir`, for interpreter `res`.
fn deps_dir(
    cache: &Cache,
    kind: &str,
    dir: &Path,
    files: &[&str],
    res: &Resolution,
) -> Result<PathBuf, BuildError> {
    let mut h = Sha256::new();
    h.update(kind);
    h.update(res.fingerprint());
    for f in files {
        let p = dir.join(f);
        if p.exists() {
            h.update(f);
            hash::hash_path(&mut h, &p)?;
        }
    }
    Ok(cache.root().join(kind).join(&hash::hex(h)[..32]))
}

/// Fills `dest` once (through a temporary sibling renamed into place) unless it exists.
fn cached(
    dest: &Path,
    fill: impl FnOnce(&Path) -> Result<(), BuildError>,
) -> Result<bool, BuildError> {
    if dest.is_dir() {
        return Ok(true);
    }
    let parent = dest.parent().expect("cache entries have a parent");
    fs_err::create_dir_all(parent)?;
    let tmp = tempfile::tempdir_in(parent)?;
    fill(tmp.path())?;
    let staged = tmp.keep();
    if std::fs::rename(&staged, dest).is_err() {
        let _ = std::fs::remove_dir_all(&staged);
        if !dest.is_dir() {
            return Err(BuildError::Deb(format!("cannot fill {}", dest.display())));
        }
    }
    Ok(false)
}

fn host_python_version() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn python_version(res: &Resolution) -> Option<String> {
    res.packages.iter().find_map(|p| {
        let v = p.name.strip_prefix("python")?.strip_suffix("-minimal")?;
        (v.contains('.') && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .then(|| v.to_string())
    })
}

fn stage_python(
    path: &Path,
    deps: Option<&str>,
    res: &Resolution,
    cache: &Cache,
    app: &Path,
    log: &dyn Fn(&str),
) -> Result<(), BuildError> {
    if path.is_file() {
        fs_err::create_dir_all(app)?;
        crate::compile::copy_tree(path, &app.join(path.file_name().unwrap_or_default()))?;
    } else {
        crate::compile::copy_tree(path, app)?;
        for junk in [".venv", "venv", "__pycache__", ".deps"] {
            let _ = std::fs::remove_dir_all(app.join(junk));
        }
    }
    // A syntax error stops the build here, in one sentence, instead of at the first request.
    syntax_check(app)?;
    let Some(deps) = deps else {
        return Ok(());
    };
    let dir = path;
    // `pip install .` installs the project itself too: its whole tree decides the result.
    let files: &[&str] = if deps == "pyproject.toml" {
        &["."]
    } else {
        &[deps]
    };
    let dest = deps_dir(cache, "pip", dir, files, res)?;
    let version = python_version(res);
    let hit = cached(&dest, |target| {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "pip",
            "install",
            "--no-compile",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--target",
        ])
        .arg(target);
        if let Some(v) = version
            .as_ref()
            .filter(|v| host_python_version().as_ref() != Some(*v))
        {
            // Wheels for Debian's interpreter, not this host's (pip cannot build for another).
            cmd.args(["--python-version", v, "--only-binary=:all:"]);
            cmd.args([
                "--platform",
                "manylinux2014_x86_64",
                "--platform",
                "linux_x86_64",
                "--implementation",
                "cp",
            ]);
        }
        match deps {
            "requirements.txt" => {
                cmd.arg("-r").arg(dir.join(deps));
            }
            "Pipfile.lock" => {
                let reqs = pipfile_requirements(&dir.join(deps))?;
                let file = target.join(".requirements-from-pipfile.txt");
                fs_err::write(&file, reqs)?;
                cmd.arg("-r").arg(&file);
            }
            _ => {
                // pip builds the project from a copy: the app's tree stays untouched.
                cmd.arg(app);
            }
        }
        run_tool(&mut cmd, &format!("pip install ({deps})"), log)
    })?;
    if hit {
        log(&format!("dependencies of {deps}: cached"));
    }
    crate::compile::copy_tree(&dest, &app.join(".deps"))?;
    Ok(())
}

/// `default` packages of a Pipfile.lock as `name==version` lines.
fn pipfile_requirements(path: &Path) -> Result<String, BuildError> {
    let doc: serde_json::Value = serde_json::from_str(&fs_err::read_to_string(path)?)
        .map_err(|e| BuildError::Deb(format!("{} is not valid JSON: {e}", path.display())))?;
    let mut out = String::new();
    if let Some(o) = doc.get("default").and_then(|d| d.as_object()) {
        for (name, v) in o {
            out.push_str(name);
            out.push_str(v.get("version").and_then(|v| v.as_str()).unwrap_or(""));
            out.push('\n');
        }
    }
    Ok(out)
}

/// Compiles every .py file of the app (not its dependencies) with this host's Python, in memory.
fn syntax_check(app: &Path) -> Result<(), BuildError> {
    const CHECK: &str = r#"
import ast, os, sys
root = sys.argv[1]
for d, dirs, files in os.walk(root):
    dirs[:] = sorted(x for x in dirs if x not in (".deps", "node_modules", ".git"))
    for f in sorted(files):
        if f.endswith(".py"):
            p = os.path.join(d, f)
            try:
                ast.parse(open(p, "rb").read(), p)
            except SyntaxError as e:
                print(f"{os.path.relpath(p, root)} line {e.lineno}: {e.msg}")
                sys.exit(1)
"#;
    let out = Command::new("python3")
        .args(["-c", CHECK])
        .arg(app)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BuildError::ToolMissing {
                tool: "python3".into(),
                hint: "install Python 3 on the build host (apt-get install -y python3-pip)".into(),
            },
            _ => BuildError::Io(e),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(BuildError::Unsupported(format!(
        "the Python app has a syntax error: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    )))
}

fn stage_node(
    dir: &Path,
    lock: bool,
    res: &Resolution,
    cache: &Cache,
    app: &Path,
    log: &dyn Fn(&str),
) -> Result<(), BuildError> {
    crate::compile::copy_tree(dir, app)?;
    let _ = std::fs::remove_dir_all(app.join("node_modules"));
    let dest = deps_dir(
        cache,
        "npm",
        dir,
        &["package.json", "package-lock.json", "npm-shrinkwrap.json"],
        res,
    )?;
    let hit = cached(&dest, |tmp| {
        for f in ["package.json", "package-lock.json", "npm-shrinkwrap.json"] {
            if dir.join(f).is_file() {
                fs_err::copy(dir.join(f), tmp.join(f))?;
            }
        }
        let mut cmd = Command::new("npm");
        cmd.arg(if lock { "ci" } else { "install" })
            .args([
                "--omit=dev",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(tmp);
        run_tool(
            &mut cmd,
            &format!(
                "npm {} in {}",
                if lock { "ci" } else { "install" },
                dir.display()
            ),
            log,
        )?;
        if !tmp.join("node_modules").is_dir() {
            fs_err::create_dir_all(tmp.join("node_modules"))?;
        }
        Ok(())
    })?;
    if hit {
        log("npm dependencies: cached");
    }
    crate::compile::copy_tree(&dest.join("node_modules"), &app.join("node_modules"))?;
    Ok(())
}
