//! bakeoff-init: PID 1 of a bakeoff microVM.
//!
//! Mounts the API file systems, loads the kernel modules named in `/bakeoff/config.json`,
//! configures the network from `bakeoff.*` kernel parameters, starts the app, reaps zombies,
//! forwards SIGTERM/SIGINT/SIGHUP (and an ACPI power-button press, as SIGTERM) to the app, and
//! powers the VM off when the app ends, after printing exactly one line
//! `bakeoff-init: app exited with status N` or `bakeoff-init: app killed by signal S`.
//! A failure of init itself prints one `bakeoff-init: ...` line and ends the same way with 127.

mod run_as;
mod sys;
mod watch;

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bakeoff_init::{
    app_launch, normalize_module_name, parse_cmdline, resume, BootParams, GuestConfig, NetConfig,
    CONFIG_PATH, LOG_PREFIX, RUN_PATH,
};
use sys::Exit;

/// How long `eth0` may take to appear after the modules are loaded.
const ETH0_WAIT: Duration = Duration::from_secs(5);

fn say(line: &str) {
    say_raw(&format!("{LOG_PREFIX}{line}"));
}

/// Prints one whole line as given.
fn say_raw(line: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

fn main() {
    if std::process::id() != 1 {
        say("must run as PID 1 inside a bakeoff microVM");
        std::process::exit(2);
    }
    let exit = match boot_and_run() {
        Ok(exit) => exit,
        Err(message) => {
            say(&message);
            Exit::Code(127)
        }
    };
    match exit {
        Exit::Code(n) => say(&format!("app exited with status {n}")),
        Exit::Signal(s) => say(&format!("app killed by signal {s}")),
    }
    let _ = sys::send_signal(-1, sys::SIGKILL);
    let deadline = Instant::now() + Duration::from_millis(500);
    while sys::reap_one().is_some() && Instant::now() < deadline {}
    let e = sys::power_off();
    say(&format!("cannot power off: {}", sys::describe(&e)));
    // Returning from PID 1 panics the kernel; with panic=-1 and QEMU's -no-reboot that ends the VM too.
}

fn boot_and_run() -> Result<Exit, String> {
    // Block these first: a stop request during boot stays pending and reaches the app once it
    // runs (PID 1 would otherwise drop it). The app's process unblocks them before exec.
    let sigfd = sys::block_into_signalfd(&[sys::SIGCHLD, sys::SIGTERM, sys::SIGINT, sys::SIGHUP])
        .map_err(|e| format!("cannot set up signal handling: {}", sys::describe(&e)))?;
    // The kernel's boot ends here; mounting the API file systems is PID 1's own work, counted
    // in the next phase (`network`).
    watch::report(bakeoff_init::phases::Phase::Pid1);
    mount_api_filesystems()?;
    sys::disable_ctrl_alt_del();

    let cmdline = fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("cannot read /proc/cmdline: {}", sys::describe(&e)))?;
    let mut boot = parse_cmdline(&cmdline).map_err(|e| e.to_string())?;
    // The run's values from the per-run initramfs, if the VMM gave one (they override any
    // `bakeoff.run` on the command line); removed so the app does not find them on disk.
    match fs::read_to_string(RUN_PATH) {
        Ok(text) => {
            boot.run = bakeoff_init::RunOverrides::from_json(&text)
                .map_err(|m| format!("invalid {RUN_PATH}: {m}"))?;
            let _ = fs::remove_file(RUN_PATH);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {RUN_PATH}: {}", sys::describe(&e))),
    }
    let config_text = fs::read_to_string(CONFIG_PATH)
        .map_err(|e| format!("cannot read {CONFIG_PATH}: {}", sys::describe(&e)))?;
    let config = GuestConfig::from_json(&config_text).map_err(|e| e.to_string())?;

    let t = Instant::now();
    load_modules(&config.modules, &boot)?;
    if !config.modules.is_empty() {
        say(&format!(
            "modules loaded in {} ms ({} modules)",
            t.elapsed().as_millis(),
            config.modules.len()
        ));
    }
    if boot.wait_for_run {
        // A warm-start template: its network is the same in every copy (user networking's
        // fixed addresses), so it is brought up before the snapshot; the run's values come after.
        bring_up_network(boot.net.as_ref())?;
        wait_for_run(&mut boot)?;
    }
    let launch = app_launch(&config, &boot);

    if let Some(name) = &launch.hostname {
        sys::set_hostname(name)
            .map_err(|e| format!("cannot set the hostname to {name}: {}", sys::describe(&e)))?;
    }

    let t = Instant::now();
    if !boot.wait_for_run {
        bring_up_network(boot.net.as_ref())?;
    }
    write_hosts(boot.net.as_ref(), launch.hostname.as_deref())?;
    if let Some(net) = &boot.net {
        let via = net.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        let when = if boot.wait_for_run {
            "before the snapshot".to_string()
        } else {
            format!("in {} ms", t.elapsed().as_millis())
        };
        say(&format!(
            "network up {when} (eth0 {}/{}{via})",
            net.address, net.prefix
        ));
        watch::report(bakeoff_init::phases::Phase::Network);
    }

    std::env::set_current_dir(&launch.workdir).map_err(|e| {
        format!(
            "cannot change to the working directory {}: {}",
            launch.workdir,
            sys::describe(&e)
        )
    })?;

    let buttons = open_power_buttons();

    let program = &launch.argv[0];
    say(&format!("starting {program}"));
    let mut command = Command::new(program);
    command
        .args(&launch.argv[1..])
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)));
    // SAFETY: the closure only calls sigemptyset/sigprocmask, which are async-signal-safe.
    unsafe { command.pre_exec(sys::unblock_all_signals) };
    if let Some(user) = &config.user {
        run_as::give_owned(user, say);
        run_as::switch_user(&mut command, user);
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {program}: {}", sys::describe(&e)))?;
    let app = child.id() as sys::pid_t;
    if config.user.is_some() {
        // What the kernel says the app runs as (spawn returns after the exec succeeded).
        if let Some(creds) = run_as::credentials(child.id()) {
            say(&format!("app runs as {creds}"));
        }
    }
    drop(child); // we reap with waitpid(-1) ourselves
    watch::report(bakeoff_init::phases::Phase::App);

    supervise(app, &sigfd, buttons)
}

/// A warm-start template (`bakeoff.wait=console`): waits on the console for the run's values
/// (`bakeoff_init::resume`). The VMM snapshots the guest while it waits here and writes the line
/// into each copy it restores: the wall clock, fresh randomness, the hostname and the overrides.
fn wait_for_run(boot: &mut BootParams) -> Result<(), String> {
    use std::io::BufRead;
    let console = |e: &io::Error| {
        format!(
            "cannot read the run's values on the console: {}",
            sys::describe(e)
        )
    };
    let zeroed = zero_free_memory();
    say(&format!(
        "zeroed {} MiB of free memory for the snapshot",
        zeroed >> 20
    ));
    let old = sys::raw_terminal(0).map_err(|e| console(&e))?;
    say(resume::WAITING);
    let mut line = Vec::new();
    io::stdin()
        .lock()
        .take(resume::MAX_RUN_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| console(&e))?;
    let _ = sys::restore_terminal(0, &old);
    let run = resume::RunLine::parse(&String::from_utf8_lossy(&line))?;
    sys::set_wall_clock(run.unix_ns)
        .map_err(|e| format!("cannot set the clock: {}", sys::describe(&e)))?;
    sys::add_entropy_and_reseed(&run.seed)
        .map_err(|e| format!("cannot reseed the random generator: {}", sys::describe(&e)))?;
    boot.hostname = Some(run.hostname);
    boot.run = run.run;
    watch::resumed();
    Ok(())
}

/// Touches most of the guest's free memory once, so that the kernel zeroes it, and gives it
/// back ([`resume::free_memory_to_zero`] says why and how much); returns the bytes touched.
fn zero_free_memory() -> usize {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let n = resume::free_memory_to_zero(&meminfo) as usize;
    let mut block: Vec<u8> = Vec::new();
    if n == 0 || block.try_reserve_exact(n).is_err() {
        return 0;
    }
    let p = block.as_mut_ptr();
    for offset in (0..n).step_by(4096) {
        // SAFETY: offset < n ≤ the block's capacity; the bytes are written, never read.
        unsafe { p.add(offset).write_volatile(0) };
    }
    n
}

/// Mounts proc, sysfs, devtmpfs (+ devpts, /dev/shm), and tmpfs on /tmp and /run.
fn mount_api_filesystems() -> Result<(), String> {
    use sys::{MS_NODEV, MS_NOEXEC, MS_NOSUID};
    let mounts: [(&str, &str, &str, _, &str); 7] = [
        (
            "proc",
            "/proc",
            "proc",
            MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "",
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "",
        ),
        ("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MS_NOSUID | MS_NOEXEC,
            "mode=0620,ptmxmode=0666",
        ),
        (
            "shm",
            "/dev/shm",
            "tmpfs",
            MS_NOSUID | MS_NODEV,
            "mode=1777",
        ),
        ("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"),
        ("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"),
    ];
    for (source, target, fstype, flags, data) in mounts {
        fs::create_dir_all(target)
            .map_err(|e| format!("cannot create {target}: {}", sys::describe(&e)))?;
        match sys::mount_fs(source, target, fstype, flags, data) {
            Ok(()) => {}
            // Already mounted (e.g. a kernel with CONFIG_DEVTMPFS_MOUNT): fine.
            Err(e) if e.raw_os_error() == Some(16) => {}
            Err(e) => {
                return Err(format!(
                    "cannot mount {fstype} on {target}: {}",
                    sys::describe(&e)
                ))
            }
        }
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, link);
    }
    Ok(())
}

/// Loads each module with finit_module, in the given order, with its `module.param=` values.
fn load_modules(paths: &[String], boot: &BootParams) -> Result<(), String> {
    for path in paths {
        let name = module_name(path);
        let file = fs::File::open(path)
            .map_err(|e| format!("cannot open module {path}: {}", sys::describe(&e)))?;
        match sys::finit_module(&file, &boot.params_for(&name)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(17) => {} // EEXIST: loaded or built in
            // ENODEV: a driver for hardware this VMM does not have (xen_netfront under QEMU).
            Err(e) if e.raw_os_error() == Some(19) => {
                say(&format!(
                    "module {name} skipped: no such device on this machine"
                ));
            }
            Err(e) => return Err(format!("cannot load module {path}: {}", sys::describe(&e))),
        }
    }
    Ok(())
}

/// `.../virtio-net.ko` → `virtio_net`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize_module_name(stem)
}

/// Brings up `lo`, and `eth0` with its address, route and resolver when `net` is given.
fn bring_up_network(net: Option<&NetConfig>) -> Result<(), String> {
    let ctl = sys::NetCtl::open().map_err(|e| {
        format!(
            "cannot open a network control socket: {}",
            sys::describe(&e)
        )
    })?;
    let lo = std::net::Ipv4Addr::LOCALHOST;
    ctl.set_address("lo", lo, std::net::Ipv4Addr::new(255, 0, 0, 0))
        .and_then(|()| ctl.bring_up("lo"))
        .map_err(|e| format!("cannot bring up lo: {}", sys::describe(&e)))?;

    if let Some(net) = net {
        let deadline = Instant::now() + ETH0_WAIT;
        while !ctl.exists("eth0") {
            if Instant::now() >= deadline {
                return Err(format!(
                    "eth0 did not appear within {} s (no virtio-net device, or virtio_net not loaded)",
                    ETH0_WAIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        ctl.set_address("eth0", net.address, net.netmask())
            .and_then(|()| ctl.bring_up("eth0"))
            .map_err(|e| {
                format!(
                    "cannot configure eth0 as {}/{}: {}",
                    net.address,
                    net.prefix,
                    sys::describe(&e)
                )
            })?;
        if let Some(gw) = net.gateway {
            ctl.add_default_route(gw).map_err(|e| {
                format!(
                    "cannot add the default route via {gw}: {}",
                    sys::describe(&e)
                )
            })?;
        }
        if !net.dns.is_empty() {
            let text: String = net
                .dns
                .iter()
                .map(|d| format!("nameserver {d}\n"))
                .collect();
            replace_file("/etc/resolv.conf", &text)?;
        }
    }
    Ok(())
}

/// /etc/hosts: localhost, and the hostname on eth0's address (or 127.0.1.1 without a network).
fn write_hosts(net: Option<&NetConfig>, hostname: Option<&str>) -> Result<(), String> {
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    match (net, hostname) {
        (Some(net), Some(h)) => hosts.push_str(&format!("{}\t{h}\n", net.address)),
        (None, Some(h)) => hosts.push_str(&format!("127.0.1.1\t{h}\n")),
        (_, None) => {}
    }
    replace_file("/etc/hosts", &hosts)
}

/// Writes a file in /etc, replacing a symlink (e.g. to a resolver that does not run here).
fn replace_file(path: &str, text: &str) -> Result<(), String> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        let _ = fs::remove_file(path);
    }
    if let Some(dir) = Path::new(path).parent() {
        let _ = fs::create_dir_all(dir);
    }
    fs::write(path, text).map_err(|e| format!("cannot write {path}: {}", sys::describe(&e)))
}

/// Opens every input device so a power-button press (QEMU `system_powerdown`) can stop the app.
/// Present only when the `button` and `evdev` modules (or built-ins) are there; optional.
fn open_power_buttons() -> Vec<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(dir) = fs::read_dir("/dev/input") else {
        return Vec::new();
    };
    let mut names: Vec<_> = dir.flatten().map(|e| e.path()).collect();
    names.sort();
    names
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("event"))
        })
        .filter(|p| {
            let sys = format!(
                "/sys/class/input/{}/device/name",
                p.file_name().unwrap_or_default().to_string_lossy()
            );
            fs::read_to_string(sys).is_ok_and(|n| n.trim() == "Power Button")
        })
        .filter_map(|p| {
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(0o4000 /* O_NONBLOCK */)
                .open(p)
                .ok()
        })
        .collect()
}

/// Whether any pending input event on `dev` is a KEY_POWER press.
fn power_pressed(dev: &mut fs::File) -> bool {
    const EV_KEY: u16 = 1;
    const KEY_POWER: u16 = 116;
    let mut buf = [0u8; 24 * 16];
    let mut pressed = false;
    while let Ok(n) = dev.read(&mut buf) {
        if n == 0 {
            break;
        }
        for ev in buf[..n].chunks_exact(24) {
            let ty = u16::from_ne_bytes([ev[16], ev[17]]);
            let code = u16::from_ne_bytes([ev[18], ev[19]]);
            let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
            pressed |= ty == EV_KEY && code == KEY_POWER && value == 1;
        }
    }
    pressed
}

/// Waits for the app to end, reaping every other child and forwarding signals to the app.
fn supervise(
    app: sys::pid_t,
    sigfd: &std::os::fd::OwnedFd,
    mut buttons: Vec<fs::File>,
) -> Result<Exit, String> {
    let mut listen = watch::ListenWatch::new();
    loop {
        listen.tick();
        let mut fds: Vec<sys::pollfd> = std::iter::once(sigfd.as_raw_fd())
            .chain(buttons.iter().map(|b| b.as_raw_fd()))
            .map(|fd| sys::pollfd {
                fd,
                events: sys::POLLIN,
                revents: 0,
            })
            .collect();
        sys::poll_fds(&mut fds, listen.timeout_ms())
            .map_err(|e| format!("poll failed: {}", sys::describe(&e)))?;
        for (i, pfd) in fds.iter().enumerate().skip(1) {
            if pfd.revents != 0 && power_pressed(&mut buttons[i - 1]) {
                say("power button pressed: sending SIGTERM to the app");
                let _ = sys::send_signal(app, sys::SIGTERM);
            }
        }
        if fds[0].revents == 0 {
            continue;
        }
        let sig = sys::read_signal(sigfd)
            .map_err(|e| format!("cannot read a signal: {}", sys::describe(&e)))?;
        if sig == sys::SIGCHLD {
            while let Some((pid, exit)) = sys::reap_one() {
                if pid == app {
                    return Ok(exit);
                }
            }
        } else {
            let _ = sys::send_signal(app, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_come_from_file_names() {
        assert_eq!(
            module_name("/lib/modules/6.1.0/kernel/drivers/net/virtio_net.ko"),
            "virtio_net"
        );
        assert_eq!(module_name("/lib/modules/x/virtio-rng.ko"), "virtio_rng");
        assert_eq!(module_name("failover.ko"), "failover");
    }
}
