//! Firecracker: boots the microVM image (vmlinux + initramfs) through its API socket — PUT
//! /logger, /machine-config, /boot-source, /network-interfaces/eth0, then /actions
//! InstanceStart — with the configuration rendered by `bakeoff_pack::launch::firecracker`.
//! The guest serial console is Firecracker's standard output, kept in `console.log`.
//!
//! Networking keeps the `-p` contract of the other platforms: the driver creates a tap on its
//! own /30 and the DNAT rules each `-p` needs (a pure plan, see `network_plan`), and removes
//! them when the VM ends. `stop` sends Ctrl-Alt-Del (our init turns it into SIGTERM for the app),
//! then kills Firecracker after the grace period.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bakeoff_launch::firecracker::{
    api_requests, check_response, http_request, network_plan, render_firecracker_run,
    run_overrides, stop_request, tap_net, ApiRequest, MAX_SLOTS,
};
use bakeoff_launch::runfile::run_initrd;
use bakeoff_launch::NetPlan;
use bakeoff_spec::Platform;
use bakeoff_state::{FirecrackerHandle, Handle, Instance, Status};

use crate::vmm::{self, apply_plan, claim_slot, release_slot, undo_plan, which};
use crate::{Driver, DriverError, LogSink, StartRequest};

pub const FIRECRACKER: &str = "firecracker";

/// One API call on the socket.
fn call(socket: &Path, req: &ApiRequest) -> Result<(), DriverError> {
    let what = format!("{} {}", req.method, req.path);
    let io = |source: std::io::Error| DriverError::Api {
        call: what.clone(),
        socket: socket.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    s.write_all(http_request(req).as_bytes()).map_err(io)?;
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(io)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(io)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).map_err(io)?;
    check_response(&status, &String::from_utf8_lossy(&body)).map_err(|fault| {
        DriverError::ApiRefused {
            call: what.clone(),
            fault,
        }
    })
}

/// What the probe saw on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirecrackerFacts {
    pub binary: bool,
    /// `/dev/kvm`: `Ok` when it opens and answers KVM_GET_API_VERSION.
    pub kvm: Result<(), String>,
    pub ip: bool,
    pub iptables: bool,
    pub root: bool,
}

/// Why Firecracker cannot be used here, as one sentence; `Ok` when it can.
pub fn firecracker_verdict(f: &FirecrackerFacts) -> Result<(), String> {
    if !f.binary {
        return Err("Firecracker is not available: `firecracker` is not on PATH (get a release from https://github.com/firecracker-microvm/firecracker/releases)".into());
    }
    if let Err(e) = &f.kvm {
        return Err(format!(
            "Firecracker is not available: it needs KVM and {e}"
        ));
    }
    if !f.ip || !f.iptables {
        let missing = if !f.ip { "ip (iproute2)" } else { "iptables" };
        return Err(format!("Firecracker is not available: publishing ports needs `{missing}`, which is not installed"));
    }
    if !f.root {
        return Err(
            "Firecracker is not available: creating its tap device and DNAT rules needs root"
                .into(),
        );
    }
    Ok(())
}

fn kvm_usable() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm cannot be opened ({e})"))?;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only reads the open descriptor.
    let v = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if v != 12 {
        return Err(format!("/dev/kvm answers API version {v}, not 12"));
    }
    Ok(())
}

fn facts() -> FirecrackerFacts {
    FirecrackerFacts {
        binary: which(FIRECRACKER).is_some(),
        kvm: kvm_usable(),
        ip: which("ip").is_some(),
        iptables: which("iptables").is_some(),
        root: unsafe { libc::geteuid() } == 0,
    }
}

/// The slot marking a handle recorded before the slot was claimed (see [`intent_handle`]).
const NO_SLOT: u16 = u16::MAX;

/// Written in the instance dir as soon as the slot is claimed and before any host network is
/// set up: what an interrupted start must undo.
const NETWORK_FILE: &str = "network.json";
/// Firecracker's PID, written right after it is spawned.
const PID_FILE: &str = "firecracker.pid";

#[derive(serde::Serialize, serde::Deserialize)]
struct Claimed {
    slot: u16,
    tap: String,
    net: NetPlan,
}

/// The handle recorded before anything happens (intent before effect): where the API socket,
/// console and instance files will be. The PID, slot and network are not known yet; whatever
/// the start got to is found again from the instance dir by [`completed`].
pub fn intent_handle(instance_dir: &Path) -> FirecrackerHandle {
    FirecrackerHandle {
        pid: 0,
        socket: instance_dir.join("firecracker.sock"),
        console: instance_dir.join("console.log"),
        slot: NO_SLOT,
        tap: String::new(),
        net: NetPlan {
            setup: Vec::new(),
            teardown: Vec::new(),
        },
        config: instance_dir.join("vm_config.json"),
        memory_mib: 0,
        instance_dir: instance_dir.to_path_buf(),
    }
}

/// `h` with what an interrupted start left filled in: the slot and network from
/// `network.json`, the PID from `firecracker.pid` or the process whose command line names the
/// socket. A complete handle is returned as it is.
pub fn completed(h: &FirecrackerHandle) -> FirecrackerHandle {
    let mut h = h.clone();
    if h.slot == NO_SLOT {
        if let Some(c) = std::fs::read(h.instance_dir.join(NETWORK_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Claimed>(&b).ok())
        {
            h.slot = c.slot;
            h.tap = c.tap;
            h.net = c.net;
        }
    }
    if h.pid == 0 {
        h.pid = vmm::find_vmm(&h.instance_dir.join(PID_FILE), &h.socket).unwrap_or(0);
    }
    h
}

fn handle(inst: &Instance) -> Result<FirecrackerHandle, DriverError> {
    inst.handle
        .firecracker()
        .map(completed)
        .ok_or_else(|| DriverError::wrong_handle(inst, Platform::Firecracker))
}

/// The PID is still our Firecracker: its command line names our API socket.
fn is_ours(h: &FirecrackerHandle) -> bool {
    vmm::is_ours(h.pid, &h.socket)
}

fn kill(h: &FirecrackerHandle) {
    vmm::kill_vmm(h.pid, &h.socket)
}

/// Undoes the network and gives the slot back once (safe to repeat).
fn clean_up(h: &FirecrackerHandle, name: &str) {
    if h.pid != 0 {
        kill(h);
    }
    let done = h.instance_dir.join("net-removed");
    if !done.exists() {
        undo_plan(&h.net);
        let _ = std::fs::write(&done, b"");
    }
    if h.slot != NO_SLOT {
        release_slot(&h.instance_dir, Platform::Firecracker, name, h.slot);
    }
}

fn exit_code(h: &FirecrackerHandle) -> Option<i32> {
    vmm::exit_status_from_console(&vmm::read_console(&h.console))
}

pub struct FirecrackerDriver;

#[async_trait]
impl Driver for FirecrackerDriver {
    fn platform(&self) -> Platform {
        Platform::Firecracker
    }

    async fn available(&self) -> Result<(), DriverError> {
        firecracker_verdict(&facts()).map_err(DriverError::Unavailable)
    }

    fn intent(&self, req: &StartRequest<'_>) -> Option<Handle> {
        Some(Handle::Firecracker(intent_handle(req.instance_dir)))
    }

    async fn start(&self, req: StartRequest<'_>) -> Result<Handle, DriverError> {
        let image = req.image;
        crate::check_image(Platform::Firecracker, image)?;
        self.available().await?;
        let dir = req.instance_dir;
        let slot = claim_slot(dir, Platform::Firecracker, req.name, MAX_SLOTS)?;
        let net = tap_net(slot);
        let fail = |e: DriverError| {
            release_slot(dir, Platform::Firecracker, req.name, slot);
            e
        };
        let log_path = dir.join("firecracker.log");
        // `-e` values and `-- ARGS` never go on the kernel command line: they travel in a
        // per-run initramfs, 0600 in the instance dir (as with QEMU).
        let overrides = run_overrides(req.name, req.opts);
        let per_run = if overrides.is_empty() {
            None
        } else {
            let base =
                fs_err::read(image.require("initrd", "initrd")?).map_err(|e| fail(e.into()))?;
            let path = dir.join("initrd-run.img");
            bakeoff_state::write_private(&path, &run_initrd(&base, &overrides))
                .map_err(|e| fail(e.into()))?;
            Some(path)
        };
        let config = render_firecracker_run(
            image,
            req.opts,
            req.name,
            &net,
            &log_path,
            per_run.as_deref(),
        )
        .map_err(|e| fail(e.into()))?;
        let config_path = dir.join("vm_config.json");
        bakeoff_state::write_private(
            &config_path,
            &serde_json::to_vec_pretty(&config).expect("json"),
        )?;
        fs_err::write(&log_path, b"")?;
        let plan = network_plan(&net, &req.opts.publish, req.name);
        // What to undo, on disk before the host is changed: an interrupted start is cleaned up
        // from the intent record with it.
        let claimed = Claimed {
            slot,
            tap: net.tap.clone(),
            net: plan.clone(),
        };
        bakeoff_state::write_private(
            &dir.join(NETWORK_FILE),
            &serde_json::to_vec(&claimed).expect("json"),
        )
        .map_err(|e| fail(e.into()))?;
        apply_plan(&plan).map_err(|e| fail(e.into()))?;
        let socket = dir.join("firecracker.sock");
        let console = dir.join("console.log");
        let out = fs_err::File::create(&console)?;
        use std::os::unix::process::CommandExt;
        let child = Command::new(FIRECRACKER)
            .arg("--api-sock")
            .arg(&socket)
            .arg("--id")
            .arg(req.name)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?.into_parts().0)
            .stderr(out.into_parts().0)
            .process_group(0)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(source) => {
                undo_plan(&plan);
                return Err(fail(DriverError::Spawn {
                    program: FIRECRACKER.into(),
                    source,
                }));
            }
        };
        let _ =
            bakeoff_state::write_private(&dir.join(PID_FILE), child.id().to_string().as_bytes());
        let memory_mib = config["machine-config"]["mem_size_mib"]
            .as_u64()
            .unwrap_or(0);
        let h = FirecrackerHandle {
            pid: child.id(),
            socket: socket.clone(),
            console,
            slot,
            tap: net.tap.clone(),
            net: plan.clone(),
            config: config_path,
            memory_mib,
            instance_dir: dir.to_path_buf(),
        };
        let start = Instant::now();
        while !socket.exists() && start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for r in api_requests(&config) {
            if let Err(e) = call(&socket, &r) {
                let why = vmm::tail(&h.console, 3);
                clean_up(&h, req.name);
                let _ = child.wait();
                return Err(if why.is_empty() {
                    e
                } else {
                    DriverError::WithConsole {
                        source: Box::new(e),
                        console: why,
                    }
                });
            }
        }
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(Handle::Firecracker(h))
    }

    async fn status(&self, inst: &Instance) -> Result<Status, DriverError> {
        let h = handle(inst)?;
        if is_ours(&h) {
            return Ok(match exit_code(&h) {
                Some(code) => Status::Exited { code: Some(code) },
                None => Status::Running,
            });
        }
        clean_up(&h, &inst.name);
        Ok(Status::Exited {
            code: exit_code(&h),
        })
    }

    async fn logs(
        &self,
        inst: &Instance,
        follow: bool,
        out: LogSink<'_>,
    ) -> Result<(), DriverError> {
        let h = handle(inst)?;
        vmm::follow_console(&h.console, follow, out, || is_ours(&h)).await
    }

    async fn stop(&self, inst: &Instance, grace: Duration) -> Result<(), DriverError> {
        let h = handle(inst)?;
        if is_ours(&h) {
            let _ = call(&h.socket, &stop_request());
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && is_ours(&h) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        clean_up(&h, &inst.name);
        Ok(())
    }

    async fn remove(&self, inst: &Instance) -> Result<(), DriverError> {
        clean_up(&handle(inst)?, &inst.name);
        Ok(())
    }

    async fn memory_bytes(&self, inst: &Instance) -> Result<Option<u64>, DriverError> {
        let h = handle(inst)?;
        if !is_ours(&h) {
            return Ok(None);
        }
        Ok(vmm::vmm_rss(h.pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> FirecrackerFacts {
        FirecrackerFacts {
            binary: true,
            kvm: Ok(()),
            ip: true,
            iptables: true,
            root: true,
        }
    }

    #[test]
    fn probe_says_why_firecracker_is_unavailable() {
        assert_eq!(firecracker_verdict(&facts()), Ok(()));
        for (f, words) in [
            (
                FirecrackerFacts {
                    binary: false,
                    ..facts()
                },
                "`firecracker` is not on PATH",
            ),
            (
                FirecrackerFacts {
                    kvm: Err(
                        "/dev/kvm cannot be opened (No such file or directory (os error 2))".into(),
                    ),
                    ..facts()
                },
                "it needs KVM and /dev/kvm cannot be opened",
            ),
            (
                FirecrackerFacts {
                    iptables: false,
                    ..facts()
                },
                "publishing ports needs `iptables`",
            ),
            (
                FirecrackerFacts {
                    root: false,
                    ..facts()
                },
                "needs root",
            ),
        ] {
            let e = firecracker_verdict(&f).unwrap_err();
            assert!(
                e.starts_with("Firecracker is not available: ") && e.contains(words),
                "{e}"
            );
        }
    }

    /// The probe's facts agree with this host, and its verdict names the first missing one
    /// (this CI host has KVM but no `firecracker` binary: it must say so).
    #[test]
    fn the_probe_on_this_host_gives_the_right_reason() {
        let f = super::facts();
        let on_path = |p: &str| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .any(|d| d.join(p).is_file())
        };
        assert_eq!(f.binary, on_path(FIRECRACKER), "firecracker on PATH");
        assert_eq!(
            f.kvm.is_ok(),
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok(),
            "/dev/kvm opens: {:?}",
            f.kvm
        );
        assert_eq!(f.root, unsafe { libc::geteuid() } == 0);
        let verdict = firecracker_verdict(&f);
        match (&f.binary, &f.kvm) {
            (false, _) => assert!(verdict
                .unwrap_err()
                .contains("`firecracker` is not on PATH")),
            (true, Err(_)) => assert!(verdict.unwrap_err().contains("it needs KVM")),
            (true, Ok(())) => assert_eq!(verdict.is_ok(), f.ip && f.iptables && f.root),
        }
    }

    /// What a start interrupted after each step leaves is found from the intent record and
    /// undone: nothing yet (nothing happens), then the claimed slot and network (released and
    /// torn down), then a running VMM (found by its pid file and killed). No firecracker binary
    /// is needed: the "VMM" is a process whose command line names the socket, as Firecracker's
    /// does.
    #[test]
    fn an_interrupted_start_is_undone_from_its_intent_record() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("instances/fc1");
        std::fs::create_dir_all(&dir).unwrap();
        let intent = intent_handle(&dir);
        // A new process's command line reads empty for a moment after spawn returns (the kernel
        // sets it late in exec): wait until it names the socket, as a later `rm` sees it.
        let visible = |pid: u32| {
            let seen = Instant::now();
            while !vmm::is_ours(pid, &intent.socket) && seen.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        // Killed before anything: the record is complete enough and clean-up runs nothing.
        let h = completed(&intent);
        assert_eq!((h.pid, h.slot), (0, NO_SLOT));
        clean_up(&h, "fc1");
        std::fs::remove_file(dir.join("net-removed")).unwrap();

        // Killed after the slot and network were claimed (and maybe applied).
        let slot = claim_slot(&dir, Platform::Firecracker, "fc1", MAX_SLOTS).unwrap();
        let undone = t.path().join("undone");
        let claimed = Claimed {
            slot,
            tap: "bkfc0".into(),
            net: NetPlan {
                setup: vec![],
                teardown: vec![vec!["touch".into(), undone.display().to_string()]],
            },
        };
        std::fs::write(
            dir.join(NETWORK_FILE),
            serde_json::to_vec(&claimed).unwrap(),
        )
        .unwrap();
        // Killed after spawning: a process naming the socket, its pid in the pid file.
        let mut vmm = Command::new("sh")
            .arg("-c")
            .arg("while :; do sleep 0.05; done")
            .arg(intent.socket.display().to_string())
            .spawn()
            .unwrap();
        std::fs::write(dir.join(PID_FILE), vmm.id().to_string()).unwrap();
        visible(vmm.id());
        let h = completed(&intent);
        assert_eq!((h.pid, h.slot, h.tap.as_str()), (vmm.id(), slot, "bkfc0"));
        assert!(is_ours(&h));
        clean_up(&h, "fc1");
        let ended = Instant::now();
        while vmm.try_wait().unwrap().is_none() && ended.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(vmm.try_wait().unwrap().is_some(), "the VMM was not ended");
        assert!(undone.exists(), "the network was not torn down");
        let slot_file = t.path().join("slots/firecracker").join(slot.to_string());
        assert!(!slot_file.exists(), "the slot was not released");
        // Without its pid file, the process is found by its command line.
        let mut vmm = Command::new("sh")
            .arg("-c")
            .arg("while :; do sleep 0.05; done")
            .arg(intent.socket.display().to_string())
            .spawn()
            .unwrap();
        std::fs::remove_file(dir.join(PID_FILE)).unwrap();
        visible(vmm.id());
        assert_eq!(completed(&intent).pid, vmm.id());
        vmm.kill().unwrap();
        vmm.wait().unwrap();
    }

    /// A fake Firecracker: a Unix socket that records requests and answers like the real API.
    #[test]
    fn calls_reach_the_socket_and_faults_come_back() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (i, stream) in listener.incoming().take(2).enumerate() {
                let mut s = stream.unwrap();
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let answer = if i == 0 {
                    "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n".to_string()
                } else {
                    let body = r#"{"fault_message":"Invalid request method"}"#;
                    format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                s.write_all(answer.as_bytes()).unwrap();
            }
            seen
        });
        call(&sock, &stop_request()).unwrap();
        let e = call(&sock, &stop_request()).unwrap_err().to_string();
        assert_eq!(
            e,
            "Firecracker refused PUT /actions: Invalid request method"
        );
        let seen = server.join().unwrap();
        assert!(
            seen[0].starts_with("PUT /actions HTTP/1.1\r\n")
                && seen[0].ends_with(r#"{"action_type":"SendCtrlAltDel"}"#),
            "{}",
            seen[0]
        );
    }
}
