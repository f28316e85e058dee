//! bakeoff's own minimal guest kernel (issue 14): built once per machine into the tests' cache
//! by scripts/test.sh (`bakeoff kernel build`), its .config holds every line of the fragment,
//! it is the default microVM kernel, Debian's stays selectable; readiness of a TCP app on a VM
//! comes from PID 1's listening line (issue 13 item 6).

mod common;

use std::time::Duration;

use common::*;

const BOOT: Duration = Duration::from_secs(120);

/// Held by each test of this file while a QEMU of its own runs. QEMU gives back only the pages
/// no other process maps; a page another test's QEMU shared at that moment stays, and is this
/// QEMU's alone once the other exits, so the test that measures them runs its VM by itself.
static ONE_VM_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_vm_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_VM_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn the_built_config_has_every_line_of_the_fragment() {
    let Some(k) = minimal_or_skip("the_built_config_has_every_line_of_the_fragment") else {
        return;
    };
    let config = std::fs::read_to_string(k.dir.join("config")).unwrap();
    let missing = bakeoff_guest::missing_fragment_lines(bakeoff_guest::MINIMAL_FRAGMENT, &config);
    assert!(missing.is_empty(), "not in the built .config: {missing:?}");
    assert!(config.contains("# CONFIG_MODULES is not set"));
    // `kernel show` and `kernel build` (cached: instant) name it.
    let env = Env::new();
    let shown = env.ok(&["kernel", "show"]);
    assert!(
        shown.contains(&format!("kernel: minimal {}", k.kernel.version)),
        "{shown}"
    );
    assert!(shown.contains("config: sha256:"), "{shown}");
    let built = env.ok(&["kernel", "build"]);
    assert_eq!(built, shown);
    // Its bzImage (what an image counts as its kernel, and q35 boots) holds the same kernel as
    // the vmlinux that microvm and Xen load, XZ-compressed to under half its size.
    let bz = std::fs::read(&k.kernel.bzimage).unwrap();
    let vmlinux = std::fs::read(&k.kernel.vmlinux).unwrap();
    assert!(
        shown.contains(&format!(
            "bzImage: {} ({} bytes)",
            k.kernel.bzimage.display(),
            bz.len()
        )),
        "{shown}"
    );
    let inner = bakeoff_guest::extract_vmlinux(&bz).unwrap();
    assert!(
        bakeoff_guest::without_zero_gaps(&inner).unwrap() == vmlinux,
        "the bzImage's payload is not the vmlinux"
    );
    assert!(
        bz.len() * 2 < vmlinux.len(),
        "bzImage {} vs vmlinux {}",
        bz.len(),
        vmlinux.len()
    );
}

/// The minimal kernel's patch (crates/guest/kernel/boot-timers.patch) takes the APIC timer's
/// rate from the command line: booted with it, the kernel says the timer is already calibrated
/// at that rate instead of calibrating it (~0.1 s under TCG).
#[test]
fn the_minimal_kernel_takes_its_apic_timer_rate_from_the_command_line() {
    let test = "the_minimal_kernel_takes_its_apic_timer_rate_from_the_command_line";
    if !qemu_or_skip(test) {
        return;
    }
    let Some(k) = minimal_or_skip(test) else {
        return;
    };
    let period = (bakeoff_launch::qemu::APIC_BUS_HZ / u64::from(bakeoff_guest::MINIMAL_HZ)) as u32;
    let cmdline = bakeoff_launch::kernel_cmdline(&bakeoff_launch::KernelCmdline {
        microvm: true,
        tsc_khz: bakeoff_driver::vmm::host_tsc_khz(),
        lapic_timer_period: Some(period),
        // The kernel's APIC messages, on the console; no initramfs, so it panics and QEMU ends.
        extra: vec!["apic=verbose".into(), "loglevel=7".into()],
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    // The microVM's own QEMU command line (bakeoff_launch), without network or initramfs.
    let argv = bakeoff_launch::qemu::qemu_argv(&bakeoff_launch::qemu::QemuConfig {
        machine: bakeoff_launch::qemu::Machine::Microvm,
        accel: bakeoff_launch::qemu::Accel::Tcg,
        memory_mib: 64,
        cpus: 1,
        kernel: k.kernel.vmlinux.clone(),
        initrd: None,
        cmdline,
        forwards: Vec::new(),
        network: false,
        open_network: false,
        serial_log: console.clone(),
        qmp_socket: None,
        pidfile: None,
        console_socket: None,
        incoming: None,
    });
    let _alone = one_vm_at_a_time();
    let mut qemu = std::process::Command::new("qemu-system-x86_64")
        .args(&argv)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let begun = std::time::Instant::now();
    while qemu.try_wait().unwrap().is_none() && begun.elapsed() < BOOT {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(
        text.contains(&format!("lapic timer already calibrated {period}")),
        "{text}"
    );
    assert!(!text.contains("calibrating APIC timer"), "{text}");
    assert!(!text.contains("Unknown kernel command line"), "{text}");
    // microvm has no PCI bus, and that is no error (no-pci-is-no-error.patch).
    assert!(
        text.contains("PCI: no config space access function found: no PCI bus"),
        "{text}"
    );
    assert!(!text.contains("PCI: Fatal"), "{text}");
}

#[test]
fn the_example_boots_the_minimal_kernel_and_debians_on_request() {
    let test = "the_example_boots_the_minimal_kernel_and_debians_on_request";
    if !qemu_or_skip(test) {
        return;
    }
    let Some(k) = minimal_or_skip(test) else {
        return;
    };
    let env = Env::new();
    let _alone = one_vm_at_a_time();
    let shown = env.ok(&["kernel", "show", "examples/hello"]);
    assert!(
        shown.contains(&format!("kernel: minimal {}", k.kernel.version)),
        "{shown}"
    );
    let floor: u64 = shown
        .lines()
        .find_map(|l| l.strip_prefix("smallest --memory: "))
        .and_then(|l| l.trim_end_matches(" MiB").parse().ok())
        .expect("a memory floor");

    // On the minimal kernel, at its smallest memory: serves from inside, phases on the console.
    let port = free_port();
    let name = format!("e2e-kernel-min-{port}");
    let mem = format!("{floor}M");
    env.ok(&[
        "run",
        "examples/hello",
        "--on",
        "qemu",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "-e",
        "GREETING=from-the-minimal-kernel",
        "--name",
        &name,
        "-d",
        "--memory",
        &mem,
    ]);
    let body = wait_http(port, BOOT);
    assert!(body.contains("greeting=from-the-minimal-kernel"), "{body}");
    // The VMM gives the minimal kernel its APIC timer's rate and the order from which it
    // reports free memory (Debian's kernel below: neither), and offers free page reporting.
    let pids = qemu_pids(&name);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let cmd =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap())
            .replace('\0', " ");
    assert!(cmd.contains(" lapic_timer_period=10000000"), "{cmd}");
    assert!(
        cmd.contains(" page_reporting.page_reporting_order=3"),
        "{cmd}"
    );
    assert!(cmd.contains(",free-page-reporting=on"), "{cmd}");
    // Its malloc holds large blocks apart (VMM_ENV), and once the guest ran it gave back the
    // dynamic linker's tables of its binary (4 MiB of QEMU 7.2's relocations and symbols),
    // those that no other process (another test's QEMU) maps too.
    let environ = std::fs::read(format!("/proc/{}/environ", pids[0])).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"MALLOC_MMAP_THRESHOLD_=131072"),
        "{}",
        String::from_utf8_lossy(&environ)
    );
    let (tables_kb, _) = exe_private_kb(pids[0], "r--p", true);
    assert!(
        tables_kb < 1024,
        "QEMU's linker tables still hold {tables_kb} KiB"
    );
    // Once the app answered (`run -d` waits for that), it gave back its code too, and faults
    // back in only what the guest's work runs: about 2.3 of 5.4 MiB of QEMU 7.2's own code
    // here, all of it before (docs/kernel.md).
    let (code_kb, code_size_kb) = exe_private_kb(pids[0], "r-xp", false);
    assert!(
        code_kb * 4 < code_size_kb * 3,
        "QEMU still holds {code_kb} of its {code_size_kb} KiB of code"
    );
    // Paging out drops what no other process maps from the host's page cache too (the kernel
    // QEMU booted, above all); the driver reads it back there, mapped by no process, so that the
    // next QEMU does not read it from the disk while it starts.
    let kernel = std::path::PathBuf::from(
        cmd.split(' ')
            .skip_while(|a| *a != "-kernel")
            .nth(1)
            .expect("-kernel"),
    );
    let len = std::fs::metadata(&kernel).unwrap().len();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let cached = loop {
        let cached = page_cache_bytes(&kernel, len);
        if cached * 10 >= len * 9 || std::time::Instant::now() > deadline {
            break cached;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        cached * 10 >= len * 9,
        "only {cached} of the {len} bytes of {} are in the page cache",
        kernel.display()
    );
    let logs = env.ok(&["logs", &name]);
    for line in [
        "bakeoff-init: phase pid1 ",
        "bakeoff-init: phase network ",
        "bakeoff-init: phase app ",
    ] {
        assert!(logs.contains(line), "no `{line}` in {logs}");
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("bakeoff-init: phase listening ")
                && l.trim_end().ends_with("tcp 8080")),
        "{logs}"
    );
    // What a user reads first is the app's start, not a kernel error about a bus microvm lacks.
    assert!(!logs.contains("Fatal"), "{logs}");
    env.ok(&["rm", "-f", &name]);

    // Debian's kernel on request.
    let shown = env.ok(&["kernel", "show", "examples/hello", "--kernel", "debian"]);
    assert!(!shown.contains("kernel: minimal"), "{shown}");
    let port = free_port();
    let name = format!("e2e-kernel-deb-{port}");
    env.ok(&[
        "run",
        "examples/hello",
        "--on",
        "qemu",
        "--kernel",
        "debian",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "--name",
        &name,
        "-d",
    ]);
    let body = wait_http(port, BOOT);
    assert!(body.contains(&format!("host={name}")), "{body}");
    let pids = qemu_pids(&name);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let cmd =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap())
            .to_string();
    assert!(!cmd.contains("lapic_timer_period"), "{cmd}");
    assert!(!cmd.contains("page_reporting_order"), "{cmd}");
    env.ok(&["rm", "-f", &name]);

    // Below the floor: one sentence with the figure.
    let err = env.fails(&[
        "run",
        "examples/hello",
        "--on",
        "qemu",
        "--memory",
        &format!("{}M", floor - 8),
        "--name",
        &format!("e2e-kernel-small-{port}"),
        "-d",
    ]);
    assert!(
        err.contains(&format!("needs at least {floor} MiB")),
        "{err}"
    );
}

/// A TCP app (health kind tcp) on QEMU is ready when PID 1 sees it listen; with the wrong
/// guest port it is never "ready", and the warning names the port it does listen on.
#[test]
fn a_tcp_app_is_ready_when_it_listens_in_the_vm() {
    let test = "a_tcp_app_is_ready_when_it_listens_in_the_vm";
    if !qemu_or_skip(test) {
        return;
    }
    let env = Env::new();
    let app = tcp_hello(&env);
    let _alone = one_vm_at_a_time();
    let port = free_port();
    let name = format!("e2e-kernel-tcp-{port}");
    let out = env.run(&[
        "run",
        &app,
        "--on",
        "qemu",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "--name",
        &name,
        "-d",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("not ready"), "{err}");
    // Ready means it answers at once.
    let (status, _) = http_get(port, "/").expect("the app answers right after `run -d`");
    assert_eq!(status, 200);
    env.ok(&["rm", "-f", &name]);

    // The wrong guest port: the forwarder accepts, but the app never listens there.
    let port = free_port();
    let name = format!("e2e-kernel-tcp-wrong-{port}");
    let out = env.run(&[
        "run",
        &app,
        "--on",
        "qemu",
        "--port",
        "9999",
        "-p",
        &format!("127.0.0.1:{port}:9999"),
        "--name",
        &name,
        "-d",
        "--wait",
        "40",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not ready"), "{err}");
    assert!(
        err.contains("does not listen on TCP port 9999 inside the VM; it listens on 8080"),
        "{err}"
    );
    env.ok(&["rm", "-f", &name]);
}

/// How many of the first `len` bytes of `path` are in the host's page cache (mincore(2) on a
/// mapping of them, which reports the page cache whether or not the pages are mapped).
fn page_cache_bytes(path: &std::path::Path, len: u64) -> u64 {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    let page = 4096u64;
    let pages = len.div_ceil(page) as usize;
    let mut vec = vec![0u8; pages];
    // SAFETY: a private read-only mapping of an open file, never read through; mincore writes one
    // byte per page into `vec`, which has that many; the mapping is removed before returning.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED);
        assert_eq!(libc::mincore(addr, len as usize, vec.as_mut_ptr()), 0);
        libc::munmap(addr, len as usize);
    }
    vec.iter().filter(|b| *b & 1 == 1).count() as u64 * page
}

/// The resident KiB that only this process maps of its own executable's mappings with `perms`
/// (and, with `at_zero`, only the one at file offset 0), and those mappings' size in KiB.
fn exe_private_kb(pid: u32, perms: &str, at_zero: bool) -> (u64, u64) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut inside = false;
    let (mut private, mut size) = (0, 0);
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 5 && fields[0].contains('-') && !line.ends_with(':') {
            inside = fields.len() == 6
                && fields[1] == perms
                && (!at_zero || fields[2] == "00000000")
                && std::path::Path::new(fields[5]) == exe;
        } else if inside && fields.first() == Some(&"Private_Clean:") {
            private += fields[1].parse::<u64>().unwrap();
        } else if inside && fields.first() == Some(&"Size:") {
            size += fields[1].parse::<u64>().unwrap();
        }
    }
    assert!(smaps.contains(&*exe.to_string_lossy()), "{smaps}");
    (private, size)
}
