//! Interpreted apps: Python and Node.js. Recognising the tree and finding the command are pure
//! reads of the app's own files (`package.json`, `pyproject.toml`, `requirements.txt`, ...);
//! the interpreter itself comes from Debian's packages at build time.

use std::path::{Path, PathBuf};

use crate::detectors::{Detector, SourceTree};
use crate::{DetectError, Source};

/// Where the app's files are copied inside every image.
pub const APP_DIR: &str = "/app";
/// Where pip installs the dependencies inside the image (on `PYTHONPATH`).
pub const PYTHON_DEPS_DIR: &str = "/app/.deps";
/// Debian's interpreters, as the packages install them.
pub const PYTHON: &str = "/usr/bin/python3";
pub const NODE: &str = "/usr/bin/node";

/// Dependency files pip understands, in the order they are preferred.
const PYTHON_DEPS: &[&str] = &["Pipfile.lock", "pyproject.toml", "requirements.txt"];
/// Files that make a directory a Python app even without dependencies.
const PYTHON_ENTRIES: &[&str] = &["__main__.py", "app.py", "main.py", "wsgi.py", "asgi.py"];

pub(crate) struct Python;
impl Detector for Python {
    fn name(&self) -> &'static str {
        "python"
    }
    fn detect(&self, tree: &SourceTree) -> Result<Option<Source>, DetectError> {
        let deps = PYTHON_DEPS
            .iter()
            .find(|f| tree.has(f))
            .map(|f| f.to_string());
        let entry = PYTHON_ENTRIES.iter().any(|f| tree.has(f));
        Ok((deps.is_some() || entry).then(|| Source::Python {
            path: tree.dir.clone(),
            deps,
        }))
    }
}

pub(crate) struct Node;
impl Detector for Node {
    fn name(&self) -> &'static str {
        "node"
    }
    fn detect(&self, tree: &SourceTree) -> Result<Option<Source>, DetectError> {
        Ok(tree.has("package.json").then(|| Source::Node {
            dir: tree.dir.clone(),
            lock: tree.has("package-lock.json") || tree.has("npm-shrinkwrap.json"),
        }))
    }
}

/// The command that starts an interpreted app, read from its files; `None` for other sources.
pub(crate) fn command(source: &Source) -> Result<Option<Vec<String>>, DetectError> {
    match source {
        Source::Python { path, deps } => python_command(path, deps.as_deref()).map(Some),
        Source::Node { dir, .. } => node_command(dir).map(Some),
        _ => Ok(None),
    }
}

fn read(path: &Path) -> Result<String, DetectError> {
    std::fs::read_to_string(path).map_err(|e| DetectError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Names of the distributions the app depends on, lower-cased (`Flask>=2` → `flask`).
pub fn python_requirements(dir: &Path, deps: Option<&str>) -> Result<Vec<String>, DetectError> {
    let Some(deps) = deps else {
        return Ok(Vec::new());
    };
    let text = read(&dir.join(deps))?;
    let name_of = |spec: &str| {
        spec.trim()
            .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
            .replace('_', "-")
    };
    let names: Vec<String> = match deps {
        "requirements.txt" => text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty() && !l.starts_with('-'))
            .map(name_of)
            .collect(),
        "pyproject.toml" => {
            let doc: toml::Value = toml::from_str(&text).map_err(|e| DetectError::BadManifest {
                path: dir.join(deps),
                reason: e.message().to_string(),
            })?;
            doc.get("project")
                .and_then(|p| p.get("dependencies"))
                .and_then(|d| d.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str()).map(name_of).collect())
                .unwrap_or_default()
        }
        _ => {
            let doc: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| DetectError::BadManifest {
                    path: dir.join(deps),
                    reason: e.to_string(),
                })?;
            doc.get("default")
                .and_then(|d| d.as_object())
                .map(|o| o.keys().map(|k| name_of(k)).collect())
                .unwrap_or_default()
        }
    };
    Ok(names.into_iter().filter(|n| !n.is_empty()).collect())
}

/// `[project.scripts]`' first entry, `name = "module:function"`.
fn project_script(dir: &Path) -> Result<Option<(String, String)>, DetectError> {
    let path = dir.join("pyproject.toml");
    if !path.is_file() {
        return Ok(None);
    }
    let doc: toml::Value = toml::from_str(&read(&path)?).map_err(|e| DetectError::BadManifest {
        path: path.clone(),
        reason: e.message().to_string(),
    })?;
    let Some(scripts) = doc
        .get("project")
        .and_then(|p| p.get("scripts"))
        .and_then(|s| s.as_table())
    else {
        return Ok(None);
    };
    Ok(scripts.iter().find_map(|(_, v)| {
        let (module, func) = v.as_str()?.split_once(':')?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        };
        (ok(module.trim()) && ok(func.trim()))
            .then(|| (module.trim().to_string(), func.trim().to_string()))
    }))
}

/// True when `text` binds `name` at the top level (`app = Flask(__name__)`).
fn binds(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(name).is_some_and(|rest| {
            rest.trim_start().starts_with('=') && !rest.trim_start().starts_with("==")
        })
    })
}

fn python_command(path: &Path, deps: Option<&str>) -> Result<Vec<String>, DetectError> {
    if path.is_file() {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        return Ok(vec![PYTHON.into(), format!("{APP_DIR}/{file}")]);
    }
    if let Some((module, func)) = project_script(path)? {
        return Ok(vec![
            PYTHON.into(),
            "-c".into(),
            format!("import sys; from {module} import {func}; sys.exit({func}())"),
        ]);
    }
    if path.join("__main__.py").is_file() {
        return Ok(vec![PYTHON.into(), APP_DIR.into()]);
    }
    // A WSGI/ASGI app served by a server the app depends on.
    let requirements = python_requirements(path, deps)?;
    for (file, module) in [
        ("app.py", "app"),
        ("main.py", "main"),
        ("wsgi.py", "wsgi"),
        ("asgi.py", "asgi"),
    ] {
        let p = path.join(file);
        if !p.is_file() {
            continue;
        }
        let text = read(&p)?;
        let object = ["app", "application"].into_iter().find(|o| binds(&text, o));
        if let Some(object) = object {
            let target = format!("{module}:{object}");
            let has = |d: &str| requirements.iter().any(|r| r == d);
            if has("gunicorn") {
                return Ok(owned(&[
                    PYTHON,
                    "-m",
                    "gunicorn",
                    "--bind",
                    "0.0.0.0:${PORT}",
                    &target,
                ]));
            }
            if has("uvicorn") {
                return Ok(owned(&[
                    PYTHON, "-m", "uvicorn", "--host", "0.0.0.0", "--port", "${PORT}", &target,
                ]));
            }
            if has("waitress") {
                return Ok(owned(&[
                    PYTHON,
                    "-m",
                    "waitress",
                    "--port=${PORT}",
                    &target,
                ]));
            }
        }
        if file == "app.py" || file == "main.py" {
            return Ok(vec![PYTHON.into(), format!("{APP_DIR}/{file}")]);
        }
    }
    Err(DetectError::NoEntry {
        path: path.to_path_buf(),
        hint: "a Python app needs __main__.py, app.py or main.py, a [project.scripts] entry in pyproject.toml, or `command = [...]` in bakeoff.toml".into(),
    })
}

fn node_command(dir: &Path) -> Result<Vec<String>, DetectError> {
    let path = dir.join("package.json");
    let doc: serde_json::Value =
        serde_json::from_str(&read(&path)?).map_err(|e| DetectError::BadManifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if let Some(start) = doc.pointer("/scripts/start").and_then(|s| s.as_str()) {
        let words: Vec<&str> = start.split_whitespace().collect();
        let plain = words
            .iter()
            .all(|w| !w.contains(|c: char| "$&|;<>`'\"\\*?(){}".contains(c)));
        return match words.split_first() {
            Some((&"node", rest)) if plain => Ok(std::iter::once(NODE)
                .chain(rest.iter().copied())
                .map(String::from)
                .collect()),
            _ => Err(DetectError::NoEntry {
                path: path.clone(),
                hint: format!("its start script `{start}` is not of the form `node FILE ARGS` (the image has no shell); set `command = [...]` in bakeoff.toml"),
            }),
        };
    }
    if let Some(main) = doc.get("main").and_then(|m| m.as_str()) {
        return Ok(vec![NODE.into(), main.to_string()]);
    }
    Err(DetectError::NoEntry {
        path,
        hint: "it has no `scripts.start` and no `main`; add `\"scripts\": {\"start\": \"node server.js\"}` or `command = [...]` in bakeoff.toml".into(),
    })
}

/// A `.py` file given as APP.
pub(crate) fn python_file(file: PathBuf) -> Source {
    Source::Python {
        path: file,
        deps: None,
    }
}
