use std::path::{Path, PathBuf};

use crate::{is_elf, DetectError, Source};

/// A directory's top-level entries, read once and handed to every detector.
#[derive(Debug)]
pub struct SourceTree {
    pub dir: PathBuf,
    /// File names at the top level, sorted.
    pub files: Vec<String>,
    pub spec: Option<bakeoff_spec::AppSpec>,
}

impl SourceTree {
    pub fn read(dir: &Path) -> Result<SourceTree, DetectError> {
        let io = |e| DetectError::Io {
            path: dir.to_path_buf(),
            source: e,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.file_type().map_err(io)?.is_file() {
                files.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        files.sort();
        let spec = bakeoff_spec::AppSpec::load_from_dir(dir)?;
        Ok(SourceTree {
            dir: dir.to_path_buf(),
            files,
            spec,
        })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.files.iter().any(|f| f == name)
    }
}

/// One way of recognising how a source tree is built.
pub trait Detector {
    fn name(&self) -> &'static str;
    /// `None` when this detector does not apply.
    fn detect(&self, tree: &SourceTree) -> Result<Option<Source>, DetectError>;
}

/// `[build] command = ...` in bakeoff.toml.
struct CustomBuild;
impl Detector for CustomBuild {
    fn name(&self) -> &'static str {
        "bakeoff.toml [build]"
    }
    fn detect(&self, tree: &SourceTree) -> Result<Option<Source>, DetectError> {
        let build = tree.spec.as_ref().and_then(|s| s.build.as_ref());
        Ok(build
            .and_then(|b| b.command.clone())
            .map(|command| Source::Custom {
                dir: tree.dir.clone(),
                command,
                output: build.and_then(|b| b.output.clone()),
            }))
    }
}

struct Cargo;
impl Detector for Cargo {
    fn name(&self) -> &'static str {
        "cargo"
    }
    fn detect(&self, tree: &SourceTree) -> Result<Option<Source>, DetectError> {
        Ok(tree.has("Cargo.toml").then(|| Source::Cargo {
            dir: tree.dir.clone(),
        }))
    }
}

struct Make;
impl Detector for Make {
    fn name(&self) -> &'static str {
        "make"
    }
    fn detect(&self, tree: &SourceTree) -> Result<Option<Source>, DetectError> {
        let found = ["GNUmakefile", "makefile", "Makefile"]
            .iter()
            .any(|m| tree.has(m));
        Ok(found.then(|| Source::Make {
            dir: tree.dir.clone(),
            output: tree
                .spec
                .as_ref()
                .and_then(|s| s.build.as_ref())
                .and_then(|b| b.output.clone()),
        }))
    }
}

struct SingleC;
impl Detector for SingleC {
    fn name(&self) -> &'static str {
        "single C file"
    }
    fn detect(&self, tree: &SourceTree) -> Result<Option<Source>, DetectError> {
        let c: Vec<&String> = tree.files.iter().filter(|f| f.ends_with(".c")).collect();
        match c.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(Source::CFile {
                file: tree.dir.join(one),
            })),
            many => Err(DetectError::SeveralCFiles {
                path: tree.dir.clone(),
                files: many
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// A directory holding one prebuilt ELF executable.
struct PrebuiltElf;
impl Detector for PrebuiltElf {
    fn name(&self) -> &'static str {
        "prebuilt ELF"
    }
    fn detect(&self, tree: &SourceTree) -> Result<Option<Source>, DetectError> {
        let elves: Vec<PathBuf> = tree
            .files
            .iter()
            .map(|f| tree.dir.join(f))
            .filter(|p| is_elf(p))
            .collect();
        Ok(match elves.as_slice() {
            [one] => Some(Source::Elf { path: one.clone() }),
            _ => None,
        })
    }
}

/// The detectors in the order they are asked.
pub fn default_detectors() -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(CustomBuild),
        Box::new(Cargo),
        Box::new(Make),
        Box::new(crate::lang::Node),
        Box::new(crate::lang::Python),
        Box::new(SingleC),
        Box::new(PrebuiltElf),
    ]
}
