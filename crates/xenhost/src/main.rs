//! `bakeoff-xenhost`: boots the nested Xen host and keeps it until Enter (or end of input), or
//! runs one command in a running host.
//!
//! ```text
//! bakeoff-xenhost up [--bakeoff PATH] [--forward PORT]... [--file HOST_PATH:DOM0_PATH]...
//! bakeoff-xenhost exec AGENT_PORT COMMAND...
//! ```

use std::path::PathBuf;
use std::time::Duration;

use bakeoff_xenhost::{HostOptions, XenHost, AGENT_PORT};

fn usage() -> ! {
    eprintln!("usage: bakeoff-xenhost up [--bakeoff PATH] [--forward PORT]... [--file HOST_PATH:DOM0_PATH]...\n       bakeoff-xenhost exec AGENT_PORT COMMAND...");
    std::process::exit(2)
}

fn cache_dir() -> PathBuf {
    std::env::var_os("BAKEOFF_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/bakeoff")))
        .unwrap_or_else(|| PathBuf::from("/tmp/bakeoff-cache"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("up") => up(&args[1..]),
        Some("exec") if args.len() >= 3 => {
            let port: u16 = args[1].parse().unwrap_or_else(|_| usage());
            let host = bakeoff_xenhost::Channel { port };
            match host.exec(&args[2..].join(" "), Duration::from_secs(600)) {
                Ok(o) => {
                    print!("{}", o.output);
                    std::process::exit(o.code)
                }
                Err(e) => {
                    eprintln!("bakeoff-xenhost: {e}");
                    std::process::exit(1)
                }
            }
        }
        _ => usage(),
    }
}

fn up(args: &[String]) {
    let mut bakeoff = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("bakeoff")))
        .unwrap_or_else(|| PathBuf::from("bakeoff"));
    let mut forwards = Vec::new();
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--bakeoff" => bakeoff = PathBuf::from(v),
            "--forward" => forwards.push(v.parse().unwrap_or_else(|_| usage())),
            "--file" => {
                let (h, d) = v.split_once(':').unwrap_or_else(|| usage());
                files.push((PathBuf::from(h), d.to_string()));
            }
            _ => usage(),
        }
    }
    let work = std::env::temp_dir().join(format!("bakeoff-xenhost-{}", std::process::id()));
    let opts = HostOptions {
        cache_dir: cache_dir(),
        work_dir: work.clone(),
        bakeoff,
        files,
        guest_kernel: true,
        forwards,
        boot_timeout: Duration::from_secs(600),
        log: |m| eprintln!("bakeoff-xenhost: {m}"),
    };
    let host = match XenHost::boot(&opts) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("bakeoff-xenhost: {e}");
            std::process::exit(1)
        }
    };
    let agent = host.port(AGENT_PORT).unwrap_or(0);
    println!(
        "Xen host up in {:.1} s (console: {}).",
        host.boot_time.as_secs_f64(),
        host.console.display()
    );
    if let Some(k) = &host.prepared.guest_kernel {
        println!("Guest kernel in dom0: --kernel {k}");
    }
    if let Some(m) = &host.prepared.minimal_kernel {
        println!("bakeoff's minimal kernel in dom0's cache (the default): {m}");
    }
    for (outer, inner) in &host.forwards {
        println!("  127.0.0.1:{outer} -> dom0:{inner}");
    }
    println!("Run commands in dom0 with: bakeoff-xenhost exec {agent} bakeoff ps");
    println!("Press Enter to power it off.");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    host.shutdown(Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(work);
}
