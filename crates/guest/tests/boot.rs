//! Boots real guests under QEMU (TCG; KVM hangs Linux guests on this host) and checks what a user
//! would: the app answers HTTP through user networking with a value passed by `bakeoff.run`,
//! its exit status reaches the console and QEMU ends by itself, init failures are reported, and a
//! power-button press stops the app gracefully.
//!
//! Skips with a printed reason when qemu-system-x86_64, gcc or the Debian kernel package is not
//! available. Boots run one at a time (2-core machine). Run with `--nocapture` to see timings.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bakeoff_driver::vmm::host_tsc_khz;
use bakeoff_guest::{
    ensure_kernel, init_binary, write_initramfs, GuestConfig, Kernel, RunOverrides, NET_MODULES,
    POWER_MODULES,
};
use bakeoff_launch::GuestNet;

/// The 5-argument form these boots use, over the one renderer in `bakeoff_launch`.
fn kernel_cmdline(
    net: Option<&GuestNet>,
    hostname: &str,
    overrides: &RunOverrides,
    microvm: bool,
    tsc_khz: Option<u32>,
) -> String {
    bakeoff_launch::kernel_cmdline(&bakeoff_launch::KernelCmdline {
        net: net.cloned(),
        hostname: hostname.to_string(),
        overrides: overrides.clone(),
        microvm,
        tsc_khz,
        ..Default::default()
    })
}

const DEADLINE: Duration = Duration::from_secs(60);

/// One QEMU at a time: TCG boots on 2 cores are slow enough without competing with each other.
fn boot_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The kernel, cached under the target dir across runs; `None` (with the reason printed) when
/// this machine cannot run the test.
fn kernel() -> Option<Kernel> {
    // Under BAKEOFF_REQUIRE_ENGINES=1 (CI) a machine that cannot run the test fails it.
    let skip = |why: &str| {
        if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
            panic!("{why}, and BAKEOFF_REQUIRE_ENGINES=1");
        }
        eprintln!("skipping: {why}");
    };
    for tool in ["qemu-system-x86_64", "gcc"] {
        if !have(tool) {
            skip(&format!("{tool} is not installed"));
            return None;
        }
    }
    static KERNEL: Mutex<Option<Result<Kernel, String>>> = Mutex::new(None);
    let mut k = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bakeoff-guest-cache");
    let result = k.get_or_insert_with(|| {
        let t = Instant::now();
        let r = ensure_kernel(&cache).map_err(|e| e.to_string());
        eprintln!("ensure_kernel: {:?}", t.elapsed());
        r
    });
    match result {
        Ok(k) => Some(k.clone()),
        Err(e) => {
            skip(&format!("cannot get the guest kernel: {e}"));
            None
        }
    }
}

/// Compiles a C file statically into `rootfs/app/NAME`.
fn static_c(rootfs: &Path, name: &str, source: &Path) {
    std::fs::create_dir_all(rootfs.join("app")).unwrap();
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(rootfs.join("app").join(name))
        .arg(source)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "gcc -static failed for {}",
        source.display()
    );
}

fn hello_c() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello/hello.c");
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// A QEMU process whose serial console is collected; killed (by its PID) when dropped.
struct Vm {
    child: Child,
    console: Arc<Mutex<String>>,
    started: Instant,
}

impl Vm {
    fn start(args: &[String]) -> Vm {
        eprintln!(
            "qemu-system-x86_64 {}",
            args.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let started = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 starts");
        let console = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let console = console.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    console.lock().unwrap().push_str(&format!("{line}\n"));
                }
            });
        }
        Vm {
            child,
            console,
            started,
        }
    }

    fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// Waits for QEMU to exit by itself.
    fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        while self.started.elapsed() < DEADLINE {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the reader threads finish
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn wait_for_console(&self, needle: &str) -> bool {
        while self.started.elapsed() < DEADLINE {
            if self.console().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_=.,:/+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 GET; `Some((status line, body))` once the guest answers. Short timeouts: QEMU's
/// user networking accepts at once and retries the guest-side SYN only after ~1 s, so a fresh
/// connection every few tens of ms measures boot-to-200 without that quantum.
fn http_get(port: u16) -> Option<(String, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: guest\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

enum Machine {
    Microvm,
    Q35,
}

/// The QEMU argv for a guest: TCG, 128 MiB (Debian's PVH vmlinux needs more than 80), serial on
/// stdio, user networking with the guest's port 8080 forwarded from 127.0.0.1:`port`.
fn qemu_args(
    machine: Machine,
    kernel: &Kernel,
    initrd: &Path,
    append: &str,
    port: u16,
    extra: &[&str],
) -> Vec<String> {
    let (m, nic) = match machine {
        Machine::Microvm => ("microvm", "virtio-net-device,netdev=n0"),
        // romfile= skips the iPXE option ROM we do not boot from.
        Machine::Q35 => ("q35", "virtio-net-pci,netdev=n0,romfile="),
    };
    let mut args: Vec<String> = [
        "-M",
        m,
        "-accel",
        "tcg",
        "-m",
        "128",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(kernel.vmlinux.display().to_string());
    args.extend([
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        append.into(),
    ]);
    args.extend([
        "-netdev".into(),
        format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:8080"),
        "-device".into(),
        nic.into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Builds the initramfs for `rootfs` running `command`, with the network and power modules.
fn initramfs(kernel: &Kernel, rootfs: &Path, command: &str, out: &Path) -> PathBuf {
    let names: Vec<&str> = NET_MODULES.iter().chain(POWER_MODULES).copied().collect();
    let modules = kernel.modules_in_load_order(&names).unwrap();
    eprintln!(
        "modules: {}",
        modules
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let config = GuestConfig {
        command: vec![command.into()],
        env: vec![("GREETING".into(), "built-in".into())],
        hostname: "bakeoff-guest".into(),
        workdir: "/app".into(),
        ..GuestConfig::default()
    };
    let path = out.join("initrd.gz");
    let t = Instant::now();
    let info = write_initramfs(rootfs, &config, &modules, &init_binary().unwrap(), &path).unwrap();
    eprintln!(
        "initramfs: {} bytes, {} entries, sha256 {} ({:?})",
        info.size,
        info.entries,
        info.sha256,
        t.elapsed()
    );
    path
}

fn serve_and_check(machine: Machine) {
    let Some(kernel) = kernel() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    static_c(&rootfs, "hello", &hello_c());
    let initrd = initramfs(&kernel, &rootfs, "/app/hello", dir.path());
    let microvm = matches!(machine, Machine::Microvm);
    let greeting = "passed-through-bakeoff.run";
    let overrides = RunOverrides {
        env: vec![("GREETING".into(), greeting.into())],
        args: Some(vec!["x y".into()]),
    };
    let append = kernel_cmdline(
        Some(&GuestNet::qemu_user()),
        "web-1",
        &overrides,
        microvm,
        host_tsc_khz(),
    );
    let port = free_port();
    let _lock = boot_lock();
    let vm = Vm::start(&qemu_args(machine, &kernel, &initrd, &append, port, &[]));
    let mut answer = None;
    while vm.started.elapsed() < DEADLINE {
        if let Some(a) = http_get(port) {
            answer = Some(a);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = vm.started.elapsed();
    let console = vm.console();
    let (status, body) =
        answer.unwrap_or_else(|| panic!("no HTTP answer within {DEADLINE:?}; console:\n{console}"));
    eprintln!(
        "HTTP 200 {:.2} s after QEMU started; console:\n{console}",
        elapsed.as_secs_f64()
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.contains(&format!("greeting={greeting}")), "{body}");
    assert!(body.contains("host=web-1"), "{body}");
    assert!(body.contains("args=x y"), "{body}");
    assert!(console.contains("bakeoff-init: network up in"), "{console}");
    assert!(
        console.contains("bakeoff-init: starting /app/hello\n"),
        "{console}"
    );
}

#[test]
fn microvm_serves_http_with_run_time_env() {
    serve_and_check(Machine::Microvm);
}

#[test]
fn q35_serves_http_with_run_time_env() {
    serve_and_check(Machine::Q35);
}

/// Boots `command` (in a rootfs holding a static program that exits with 3) and returns the
/// console once QEMU has exited by itself.
/// Prints what the guest gave it (cwd, hostname, env, /etc files), then exits with 3.
const EXIT3_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static void show(const char *path) {
    char buf[512]; FILE *f = fopen(path, "r");
    if (!f) { printf("exit3: no %s\n", path); return; }
    size_t n = fread(buf, 1, sizeof buf - 1, f); buf[n] = 0; fclose(f);
    for (char *line = buf; *line; ) {
        char *nl = strchr(line, '\n'); if (nl) *nl = 0;
        printf("exit3: %s: %s\n", path, line);
        if (!nl) break; line = nl + 1;
    }
}
int main(void) {
    char cwd[256] = "", host[64] = "";
    getcwd(cwd, sizeof cwd); gethostname(host, sizeof host);
    printf("exit3: cwd=%s host=%s PATH=%s GREETING=%s\n", cwd, host, getenv("PATH"), getenv("GREETING"));
    show("/etc/resolv.conf");
    show("/etc/hosts");
    puts("exit3: bye");
    return 3;
}
"#;

fn boot_until_exit(command: &str, extra_cmdline: &str, net: bool) -> Option<String> {
    let kernel = kernel()?;
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    let src = dir.path().join("exit3.c");
    std::fs::write(&src, EXIT3_C).unwrap();
    static_c(&rootfs, "exit3", &src);
    let initrd = initramfs(&kernel, &rootfs, command, dir.path());
    let net = net.then(GuestNet::qemu_user);
    let overrides = RunOverrides {
        env: vec![("GREETING".into(), "run".into())],
        args: None,
    };
    let base = kernel_cmdline(net.as_ref(), "", &overrides, true, host_tsc_khz());
    let append = format!("{base} {extra_cmdline}");
    let _lock = boot_lock();
    let mut vm = Vm::start(&qemu_args(
        Machine::Microvm,
        &kernel,
        &initrd,
        append.trim(),
        free_port(),
        &[],
    ));
    let status = vm.wait_exit();
    let console = vm.console();
    let status = status
        .unwrap_or_else(|| panic!("QEMU did not exit within {DEADLINE:?}; console:\n{console}"));
    eprintln!(
        "QEMU exited ({status}) {:.2} s after it started; console:\n{console}",
        vm.started.elapsed().as_secs_f64()
    );
    assert!(status.success(), "{status}");
    Some(console)
}

fn init_lines(console: &str) -> Vec<&str> {
    console
        .lines()
        .filter(|l| l.starts_with("bakeoff-init: app "))
        .collect()
}

#[test]
fn app_exit_status_is_printed_and_the_vm_powers_off() {
    let Some(console) = boot_until_exit("/app/exit3", "", true) else {
        return;
    };
    let path = bakeoff_init::DEFAULT_PATH;
    for line in [
        format!("exit3: cwd=/app host=bakeoff-guest PATH={path} GREETING=run"),
        "exit3: /etc/resolv.conf: nameserver 10.0.2.3".to_string(),
        "exit3: /etc/hosts: 127.0.0.1\tlocalhost".to_string(),
        "exit3: /etc/hosts: 10.0.2.15\tbakeoff-guest".to_string(),
        "exit3: bye".to_string(),
    ] {
        assert!(
            console.contains(&format!("{line}\n")),
            "missing {line:?} in:\n{console}"
        );
    }
    assert_eq!(
        init_lines(&console),
        ["bakeoff-init: app exited with status 3"],
        "{console}"
    );
}

#[test]
fn init_failures_are_one_line_and_status_127() {
    // A relative command is looked up in PATH inside the guest, where it does not exist.
    let Some(console) = boot_until_exit("no-such-program", "", false) else {
        return;
    };
    assert!(
        console.contains("bakeoff-init: cannot start no-such-program: No such file or directory\n"),
        "{console}"
    );
    assert_eq!(
        init_lines(&console),
        ["bakeoff-init: app exited with status 127"],
        "{console}"
    );

    let Some(console) = boot_until_exit("/app/exit3", "bakeoff.ip=10.0.2.15", false) else {
        return;
    };
    assert!(
        console.contains("bakeoff-init: invalid kernel command line: bakeoff.ip=`10.0.2.15`"),
        "{console}"
    );
    assert_eq!(
        init_lines(&console),
        ["bakeoff-init: app exited with status 127"],
        "{console}"
    );
}

#[test]
fn power_button_stops_the_app_with_sigterm() {
    let Some(kernel) = kernel() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    static_c(&rootfs, "hello", &hello_c());
    let initrd = initramfs(&kernel, &rootfs, "/app/hello", dir.path());
    let append = kernel_cmdline(
        Some(&GuestNet::qemu_user()),
        "",
        &RunOverrides::default(),
        true,
        host_tsc_khz(),
    );
    let monitor = dir.path().join("monitor.sock");
    let mon_arg = format!("unix:{},server=on,wait=off", monitor.display());
    let _lock = boot_lock();
    let mut vm = Vm::start(&qemu_args(
        Machine::Microvm,
        &kernel,
        &initrd,
        &append,
        free_port(),
        &["-monitor", &mon_arg],
    ));
    assert!(
        vm.wait_for_console("hello: listening"),
        "the app did not start; console:\n{}",
        vm.console()
    );
    let mut mon = std::os::unix::net::UnixStream::connect(&monitor).unwrap();
    mon.write_all(b"system_powerdown\n").unwrap();
    let status = vm.wait_exit();
    let console = vm.console();
    assert!(
        status.is_some_and(|s| s.success()),
        "QEMU did not power off by itself: {status:?}; console:\n{console}"
    );
    assert!(
        console.contains("bakeoff-init: power button pressed: sending SIGTERM to the app"),
        "{console}"
    );
    assert!(console.contains("hello: shutting down"), "{console}");
    assert_eq!(
        init_lines(&console),
        ["bakeoff-init: app exited with status 0"],
        "{console}"
    );
}
