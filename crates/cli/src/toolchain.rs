//! `bakeoff toolchain build|show`: bakeoff's own Rumprun toolchain (crates/pack/src/toolchain.rs).

use anyhow::Result;
use bakeoff_pack::rumprun::find_toolchain;
use bakeoff_pack::toolchain::{self, Source};
use bakeoff_runtime::Runtime;

use crate::args::ToolchainCommand;

pub fn toolchain(t: ToolchainCommand) -> Result<i32> {
    match t {
        ToolchainCommand::Build { source, jobs } => build(source.as_deref(), jobs),
        ToolchainCommand::Show { json } => show(json),
    }
}

fn build(source: Option<&std::path::Path>, jobs: Option<usize>) -> Result<i32> {
    let rt = Runtime::from_env();
    let source = Source::choose(source);
    let jobs = jobs
        .filter(|j| *j > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    eprintln!("bakeoff: toolchain: source: {}", source.describe());
    let built = toolchain::build(rt.cache(), &source, jobs, &mut |line| {
        eprintln!("bakeoff: toolchain: {line}")
    })?;
    print_built(&built);
    Ok(0)
}

fn print_built(b: &toolchain::Built) {
    let m = &b.manifest;
    println!("toolchain: {}", b.prefix.display());
    println!("  bakes:   {}", m.bakes.join(", "));
    println!("  source:  {} (sha256 {})", m.source, m.source_digest);
    println!("  recipe:  sha256 {}", m.recipe_digest);
    println!("  built in {:.1} min", m.build_seconds / 60.0);
}

fn show(json: bool) -> Result<i32> {
    let rt = Runtime::from_env();
    let built = toolchain::list_built(rt.cache());
    let used = find_toolchain(None, None);
    if json {
        let v = serde_json::json!({
            "built": built.iter().map(|b| serde_json::json!({
                "prefix": b.prefix, "manifest": b.manifest,
            })).collect::<Vec<_>>(),
            "used": match &used {
                Ok(t) => serde_json::json!({
                    "bin": t.bin, "origin": t.origin,
                    "bakes": t.configs.iter().map(|c| c.name()).collect::<Vec<_>>(),
                }),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    if built.is_empty() {
        println!("bakeoff has built no Rumprun toolchain (`bakeoff toolchain build` makes one)");
    }
    for b in &built {
        print_built(b);
    }
    match used {
        Ok(t) => println!(
            "used now: {} (from {}; bakes {})",
            t.bin.display(),
            t.origin,
            t.configs
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => println!("used now: none: {e}"),
    }
    Ok(0)
}
