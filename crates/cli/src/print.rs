//! What the verbs print: tables for people, JSON for scripts.

use std::time::Duration;

use anyhow::Result;
use bakeoff_detect::BuildPlan;
use bakeoff_runtime::{Entry, Prepared, ServiceView};

pub fn plan(plan: &BuildPlan) {
    println!("name:     {}", plan.name);
    println!("input:    {}", plan.input);
    println!(
        "source:   {} ({})",
        serde_json::to_value(&plan.source).unwrap()["kind"]
            .as_str()
            .unwrap_or("?"),
        plan.detected_by
    );
    let cmd = if plan.command.is_empty() {
        vec![bakeoff_detect::app_binary_path(&plan.name)]
    } else {
        plan.command.clone()
    };
    println!(
        "command:  {}",
        cmd.iter()
            .chain(&plan.args)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    );
    ports_line(plan);
    println!(
        "health:   {:?} {} on port {}",
        plan.health.kind,
        plan.health.path,
        plan.health
            .port
            .map(|p| p.to_string())
            .unwrap_or("-".into())
    );
    for (k, v) in &plan.env {
        println!("env:      {k}={v}");
    }
}

/// `ports: 9090 (observed)`, `ports: 80 (known daemon)`, `ports: none (it exited ...)`.
fn ports_line(plan: &BuildPlan) {
    let ports = plan
        .ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match &plan.ports_from {
        bakeoff_detect::PortsFrom::Nothing { reason } => println!("ports:    none ({reason})"),
        from if ports.is_empty() => println!("ports:    ({from})"),
        from => println!("ports:    {ports} ({from})"),
    }
}

/// `check`: one row per platform, whether it can run the app and whether it is available here.
pub fn check(
    app: &str,
    prepared: &Prepared,
    rows: &[(&bakeoff_elf::Verdict, Option<String>)],
    json: bool,
) -> Result<()> {
    let info = &prepared.elf;
    let binary = &prepared.artifact.manifest.binary;
    if json {
        let out = serde_json::json!({
            "app": app,
            "binary": { "path": binary, "machine": info.machine, "linkage": format!("{:?}", info.linkage).to_lowercase(),
                        "features": info.features },
            "platforms": rows.iter().map(|(v, unavailable)| serde_json::json!({
                "platform": v.platform, "runnable": v.runnable, "reasons": v.reasons,
                "available_here": unavailable.is_none(), "unavailable_reason": unavailable,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} ({}, {})",
        binary,
        info.architecture(),
        format!("{:?}", info.linkage).to_lowercase()
    );
    for (v, unavailable) in rows {
        let verdict = if v.runnable { "can run" } else { "cannot run" };
        let here = match unavailable {
            None => "available here".to_string(),
            Some(why) => format!("not available here: {why}"),
        };
        println!("{:<12} {:<11} {}", v.platform, verdict, here);
        for r in &v.reasons {
            println!("{:<12} {:<11} - {r}", "", "");
        }
    }
    Ok(())
}

pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub fn build(
    prepared: &Prepared,
    images: &[bakeoff_launch::Image],
    seconds: f64,
    json: bool,
) -> Result<()> {
    let m = &prepared.artifact.manifest;
    let cached = prepared.cached;
    if json {
        let out = serde_json::json!({
            "artifact": { "id": m.id, "binary": m.binary, "binary_size": m.binary_size,
                          "linkage": m.linkage, "cached": cached, "seconds": seconds },
            "ports": prepared.plan.ports, "ports_from": prepared.plan.ports_from,
            "images": images, "user": m.user,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "artifact {} ({}, {} binary {}){} in {:.2}s",
        &m.id[..12],
        m.name,
        m.linkage,
        human_bytes(m.binary_size),
        if cached { ", cached" } else { "" },
        seconds
    );
    ports_line(&prepared.plan);
    if let Some(u) = &m.user {
        println!(
            "user:     {} (uid {}, gid {}, from {})",
            u.spec, u.uid, u.gid, u.from
        );
    }
    for img in images {
        println!(
            "{:<8} {}  {} ({} compressed){}",
            img.target.to_string(),
            img.digest,
            human_bytes(img.size_bytes),
            human_bytes(img.compressed_bytes),
            img.reference
                .as_ref()
                .map(|r| format!("  {r}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn human_age(d: Duration) -> String {
    match d.as_secs() {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub fn ps(
    services: &[ServiceView],
    windows: &[Option<bakeoff_front::Window>],
    rows: &[Entry],
    json: bool,
) -> Result<()> {
    let p99_ms = |w: &Option<bakeoff_front::Window>| {
        w.as_ref()
            .and_then(|w| w.latency)
            .map(|l| l.p99.as_secs_f64() * 1000.0)
    };
    if json {
        let mut out: Vec<_> = services
            .iter()
            .zip(windows)
            .map(|(v, w)| {
                let r = &v.record;
                serde_json::json!({
                    "name": r.name, "kind": "service", "address": r.listen.to_string(), "mode": r.mode,
                    "platform": r.platform, "backend": r.backend, "backends": r.backends,
                    "status": v.status.to_string(), "pid": r.pid, "app": r.app, "created": r.created,
                    "auto": r.auto, "metrics": r.metrics,
                    "rate": w.as_ref().map(|w| w.rate), "p99_ms": p99_ms(w),
                })
            })
            .collect();
        out.extend(rows
            .iter()
            .map(|e| match e {
                Entry::Instance(i) => serde_json::json!({
                    "name": i.name, "platform": i.platform, "image": i.image, "image_digest": i.image_digest,
                    "status": i.status.to_string(), "ports": i.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                    "created": i.created, "age_seconds": i.age().as_secs(), "app": i.app,
                }),
                Entry::Damaged { name, reason, .. } => serde_json::json!({
                    "name": name, "status": "unreadable", "reason": reason,
                }),
            }));
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if !services.is_empty() {
        println!(
            "{:<20} {:<22} {:<18} {:<28} {:<10} {:>9} {:>9}",
            "SERVICE", "ADDRESS", "PLATFORM", "BACKEND", "STATUS", "REQ/S", "P99"
        );
        for (v, w) in services.iter().zip(windows) {
            let r = &v.record;
            let mut backend = r.backend.clone().unwrap_or_else(|| "-".into());
            let others = r
                .backends
                .iter()
                .filter(|b| Some(*b) != r.backend.as_ref())
                .count();
            if others > 0 {
                backend.push_str(&format!(" (+{others})"));
            }
            let platform = match &r.auto {
                Some(a) if a.pinned => format!("{} (pinned)", r.platform),
                Some(a) => format!("{} (auto:{})", r.platform, a.policy),
                None => r.platform.to_string(),
            };
            println!(
                "{:<20} {:<22} {:<18} {:<28} {:<10} {:>9} {:>9}",
                r.name,
                format!("{} ({})", r.listen, r.mode),
                platform,
                backend,
                v.status,
                w.as_ref()
                    .map(|w| format!("{:.1}", w.rate))
                    .unwrap_or("-".into()),
                p99_ms(w).map(|p| format!("{p:.1}ms")).unwrap_or("-".into())
            );
        }
        println!();
    }
    println!(
        "{:<20} {:<12} {:<32} {:<12} {:<28} AGE",
        "NAME", "PLATFORM", "IMAGE", "STATUS", "PORTS"
    );
    for e in rows {
        let i = match e {
            Entry::Instance(i) => i,
            Entry::Damaged { name, reason, .. } => {
                println!("{name:<20} {:<12} {:<32} unreadable   ({reason}; `bakeoff rm -f {name}` removes it)", "?", "?");
                continue;
            }
        };
        let ports = i
            .ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        // VM images live in the cache: show their kind and digest, like a tag.
        let image = if i.image.starts_with('/') {
            format!(
                "{}@{}",
                i.platform.target(),
                i.image_digest
                    .trim_start_matches("sha256:")
                    .get(..12)
                    .unwrap_or("?")
            )
        } else {
            i.image.clone()
        };
        println!(
            "{:<20} {:<12} {:<32} {:<12} {:<28} {}",
            i.name,
            i.platform,
            image,
            i.status.to_string(),
            ports,
            human_age(i.age())
        );
    }
    Ok(())
}
