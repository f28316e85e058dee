//! The command line, as clap structs. The verbs' behaviour lives in `verbs`.

use std::path::PathBuf;

use bakeoff_spec::{parse_cpus, parse_env, parse_memory, parse_publish, Platform, PortMapping};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "bakeoff",
    version,
    about = "Build one app for containers, microVMs and unikernels; run, benchmark and compare it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the build plan detected for APP.
    Detect {
        #[arg(default_value = ".")]
        app: String,
        #[arg(long)]
        json: bool,
        /// The port(s) the app listens on inside the guest (wins over bakeoff.toml and detection).
        #[arg(long = "port", value_delimiter = ',')]
        port: Vec<u16>,
    },
    /// Say which platforms can run APP, and why not (it takes `run`'s options, so a `run`
    /// command line can be checked as it is).
    Check {
        #[arg(default_value = ".")]
        app: String,
        #[arg(long)]
        json: bool,
        /// The port(s) the app listens on inside the guest (wins over bakeoff.toml and detection).
        #[arg(long = "port", value_delimiter = ',')]
        port: Vec<u16>,
        /// Publish a port: [IP:]HOST:GUEST; a host port already in use fails the check.
        #[arg(short = 'p', long = "publish", value_parser = |s: &str| parse_publish(s).map_err(|e| e.to_string()))]
        publish: Vec<PortMapping>,
        #[command(flatten)]
        opts: AppOptions,
    },
    /// Build APP once and pack it for the chosen targets.
    Build(BuildArgs),
    /// Run APP on a platform.
    Run(RunArgs),
    /// Benchmark APP on every platform under the same load, report and recommend.
    Bench(BenchCli),
    /// Print the launch configuration another tool needs: xl.cfg (Xen), Firecracker's VM JSON, Kubernetes manifests (Deployment, Service, RuntimeClass).
    Export(ExportArgs),
    /// Push APP's images to an OCI registry: the container image to REF, the microVM artifact
    /// to REF-microvm, the Rumprun unikernel (where a toolchain makes one) to REF-rumprun.
    /// Logins come from the Docker config file.
    Push {
        app: String,
        /// HOST:PORT/REPO[:TAG]
        reference: String,
        #[arg(long)]
        json: bool,
    },
    /// Serve APP behind a stable address, on one platform at a time, switchable live.
    Serve(ServeArgs),
    /// Move a service to another platform without dropping requests (`--to auto` hands an
    /// `--on auto` service back to placement).
    Switch {
        name: String,
        #[arg(long = "to", value_parser = parse_platform_or_auto)]
        to: Placement,
    },
    /// List services and instances.
    Ps {
        #[arg(long)]
        json: bool,
    },
    /// Print an instance's output.
    Logs {
        name: String,
        /// Keep printing as output arrives.
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop an instance (SIGTERM, then kill after --time seconds).
    Stop {
        name: String,
        #[arg(short, long, default_value_t = 10)]
        time: u64,
    },
    /// Remove an instance and everything the engine holds for it.
    Rm {
        name: String,
        /// Stop it first if it is running.
        #[arg(short, long)]
        force: bool,
    },
    /// Remove what interrupted runs left that no record accounts for: labelled containers and
    /// VMM processes without an instance record, interrupted reservations, services whose
    /// front is gone, scratch of killed builds.
    Prune {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// bakeoff's own minimal guest kernel: build it once per machine, or show which kernel is used.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// bakeoff's own Rumprun toolchain (xen and hw platforms): build it once per machine, or show it.
    #[command(subcommand)]
    Toolchain(ToolchainCommand),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    Oci,
    Microvm,
    Rumprun,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccelArg {
    Kvm,
    Tcg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MachineArg {
    Microvm,
    Q35,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[arg(default_value = ".")]
    pub app: String,
    #[arg(long, value_enum, default_value = "oci")]
    pub target: TargetArg,
    /// Guest kernel for VM targets: `minimal` (bakeoff's, the default once `bakeoff kernel build`
    /// ran), `debian` (Debian's cloud kernel) or a bzImage/vmlinux path.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(default_value = ".")]
    pub app: String,
    /// The port(s) the app listens on inside the guest (wins over bakeoff.toml and detection).
    #[arg(long = "port", value_delimiter = ',')]
    pub port: Vec<u16>,
    /// Platform to run on.
    #[arg(long = "on", value_parser = parse_platform)]
    pub platform: Platform,
    /// Publish a port: [IP:]HOST:GUEST (IP defaults to 127.0.0.1).
    #[arg(short = 'p', long = "publish", value_parser = |s: &str| parse_publish(s).map_err(|e| e.to_string()))]
    pub publish: Vec<PortMapping>,
    /// Name the instance (default: the app's name and a number, `<app>-N`).
    #[arg(long)]
    pub name: Option<String>,
    /// Run in the background and print the instance name.
    #[arg(short, long)]
    pub detach: bool,
    /// The image to boot, where a platform takes more than one (xen: microvm or rumprun).
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,
    /// QEMU accelerator; default: KVM when a probe boot shows it works, else TCG.
    #[arg(long, value_enum)]
    pub accel: Option<AccelArg>,
    /// QEMU machine; default: microvm (q35 when the kernel has no PVH entry).
    #[arg(long, value_enum)]
    pub machine: Option<MachineArg>,
    /// Let a microVM reach the host's loopback services (10.0.2.2) and the outside; by default
    /// its network only takes the -p forwards (see docs/security.md).
    #[arg(long)]
    pub host_loopback: bool,
    /// Start a microVM on QEMU from a snapshot of its booted guest instead of booting it (the
    /// snapshot is made by the first such run of an image at a memory size; see docs/warm.md).
    #[arg(long)]
    pub warm: bool,
    /// Seconds to wait for the app to become ready with -d (default: the app's health timeout, else 120).
    #[arg(long)]
    pub wait: Option<u64>,
    #[command(flatten)]
    pub opts: AppOptions,
}

/// What every launch of the app takes: env, resources, kernel, args (`run`, `serve`, `export`).
#[derive(Args, Debug)]
pub struct AppOptions {
    /// Set an environment variable for the app: KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_parser = |s: &str| parse_env(s).map_err(|e| e.to_string()))]
    pub env: Vec<(String, String)>,
    /// Memory limit, e.g. 128M.
    #[arg(short = 'm', long, value_parser = |s: &str| parse_memory(s).map_err(|e| e.to_string()))]
    pub memory: Option<u64>,
    /// CPU limit, e.g. 1.5 (a VM gets that many vCPUs, rounded up).
    #[arg(long, value_parser = |s: &str| parse_cpus(s).map_err(|e| e.to_string()))]
    pub cpus: Option<f64>,
    /// Guest kernel for VM platforms: `minimal`, `debian` or a bzImage/vmlinux path.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Arguments for the app, replacing its defaults.
    #[arg(last = true)]
    pub args: Vec<String>,
}

impl AppOptions {
    /// Run options with these values and the given ports, name and mode.
    pub fn run_options(
        &self,
        publish: Vec<PortMapping>,
        name: Option<String>,
        detach: bool,
    ) -> bakeoff_spec::RunOptions {
        bakeoff_spec::RunOptions {
            publish,
            env: self.env.clone(),
            name,
            detach,
            memory: self.memory,
            cpus: self.cpus,
            args: self.args.clone(),
        }
    }
}

fn parse_row(s: &str) -> Result<bakeoff_spec::Row, String> {
    s.parse::<bakeoff_spec::Row>().map_err(|e| e.to_string())
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    s.parse::<Platform>().map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
pub struct BenchCli {
    #[arg(default_value = ".")]
    pub app: String,
    /// The port(s) the app listens on inside the guest (wins over bakeoff.toml and detection).
    #[arg(long = "port", value_delimiter = ',')]
    pub port: Vec<u16>,
    /// Platforms, comma-separated (default: every platform; unavailable ones are reported with
    /// the reason). `PLATFORM:TARGET` picks the image where a platform boots several, so both
    /// Xen images can be rows of one bench: `--on docker,xen:rumprun,xen:microvm`.
    #[arg(long = "on", value_delimiter = ',', value_parser = parse_row)]
    pub platforms: Option<Vec<bakeoff_spec::Row>>,
    /// Measured runs per platform (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 16)]
    pub connections: u32,
    #[arg(long, value_enum, default_value = "on")]
    pub keepalive: OnOff,
    /// fastest-start, throughput, latency, memory, size or balanced.
    #[arg(long, default_value = "balanced")]
    pub policy: String,
    /// Where report.json, report.md and report.html go.
    #[arg(long, default_value = "bakeoff-report")]
    pub out: PathBuf,
    /// Publish a port: [IP:]HOST:GUEST; the first is the one measured (default: a free
    /// 127.0.0.1 port to the app's port).
    #[arg(short = 'p', long = "publish", value_parser = |s: &str| parse_publish(s).map_err(|e| e.to_string()))]
    pub publish: Vec<PortMapping>,
    /// `-e`, `--memory`, `--cpus`, `--kernel` and `-- ARGS`, as `run` takes them.
    #[command(flatten)]
    pub opts: AppOptions,
    #[arg(long, value_enum)]
    pub accel: Option<AccelArg>,
    /// Start the microVM on QEMU from a snapshot of its booted guest (as `run --warm`); the
    /// snapshot is made before the first timed run.
    #[arg(long)]
    pub warm: bool,
    /// Seconds to wait for each start to answer.
    #[arg(long, default_value_t = 120)]
    pub ready_timeout: u64,
    /// Load profiles: open-loop load at each of these request rates (e.g. 100,1000,5000),
    /// latency measured from each request's intended send time.
    #[arg(long, value_delimiter = ',', value_parser = parse_rate)]
    pub sweep: Option<Vec<f64>>,
    /// The latency objective of the sweep's sustainable rate (p50|p90|p99|max=DURATION).
    #[arg(long, default_value = "p99=100ms", value_parser = parse_slo)]
    pub slo: bakeoff_bench::Slo,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a request rate (a positive number of requests per second)"
        )),
    }
}

fn parse_slo(s: &str) -> Result<bakeoff_bench::Slo, String> {
    s.parse::<bakeoff_bench::Slo>().map_err(|e| e.to_string())
}

/// A platform, or `auto` (placement decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Auto,
    On(Platform),
}

impl Placement {
    pub fn platform(self) -> Option<Platform> {
        match self {
            Placement::Auto => None,
            Placement::On(p) => Some(p),
        }
    }
}

fn parse_platform_or_auto(s: &str) -> Result<Placement, String> {
    if s == "auto" {
        return Ok(Placement::Auto);
    }
    parse_platform(s).map(Placement::On)
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(default_value = ".")]
    pub app: String,
    /// The stable address: [IP:]PORT (IP defaults to 127.0.0.1).
    #[arg(long, value_parser = parse_listen)]
    pub port: std::net::SocketAddr,
    /// A platform, or `auto`: the platform follows the load, as --policy decides from a bench
    /// sweep of this app (--profile, or the latest one).
    #[arg(long = "on", value_parser = parse_platform_or_auto, default_value = "docker")]
    pub platform: Placement,
    /// With --on auto: isolation, memory, throughput or latency.
    #[arg(long, default_value = "isolation")]
    pub policy: String,
    /// With --on auto: the latency objective (p50|p90|p99|max=DURATION).
    #[arg(long, default_value = "p99=100ms", value_parser = parse_slo)]
    pub slo: bakeoff_bench::Slo,
    /// With --on auto: a bench report with a sweep (default: the latest sweep of this build).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// With --on auto: seconds per observation window.
    #[arg(long, default_value_t = 5.0)]
    pub window: f64,
    /// With --on auto: consecutive windows that must agree before a move.
    #[arg(long, default_value_t = 3)]
    pub hold_windows: usize,
    /// With --on auto: the least seconds on a platform before moving again.
    #[arg(long, default_value_t = 60)]
    pub min_stay: u64,
    /// With --on auto: the most moves per hour.
    #[arg(long, default_value_t = 6)]
    pub max_moves: usize,
    /// Serve the front's figures in the Prometheus text format on [IP:]PORT (/metrics).
    #[arg(long, value_parser = parse_listen)]
    pub metrics: Option<std::net::SocketAddr>,
    #[arg(long)]
    pub name: Option<String>,
    /// Run the front in the background (its log: `bakeoff logs NAME`).
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long, value_enum)]
    pub accel: Option<AccelArg>,
    /// Seconds a switch waits for the old backend's open requests or connections.
    #[arg(long, default_value_t = 30)]
    pub drain: u64,
    /// Seconds a new backend may take to pass its health check.
    #[arg(long, default_value_t = 120)]
    pub ready_timeout: u64,
    /// HTTP apps: seconds a backend may take to send its response head (then the client gets 504).
    #[arg(long, default_value_t = 60.0)]
    pub response_timeout: f64,
    /// HTTP apps: seconds a request body may stay silent (then the client gets 408).
    #[arg(long, default_value_t = 60.0)]
    pub body_timeout: f64,
    #[command(flatten)]
    pub opts: AppOptions,
}

/// `[IP:]PORT`, IP defaulting to 127.0.0.1 (never all interfaces unless asked).
fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<std::net::SocketAddr>()
        .map_err(|_| format!("`{s}` is not [IP:]PORT, for example 8080 or 127.0.0.1:8080"))
}

impl ServeArgs {
    pub fn flags(&self) -> bakeoff_spec::RunOptions {
        self.opts.run_options(Vec::new(), None, true)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Xl,
    Firecracker,
    K8s,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(default_value = ".")]
    pub app: String,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// For xl: the image to boot (microvm = PVH Linux guest, the default; rumprun = PV unikernel).
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,
    /// For k8s: the platform the cluster should run it on (a RuntimeClass for VMs and unikernels).
    #[arg(long = "on", value_parser = parse_platform)]
    pub platform: Option<Platform>,
    #[arg(short = 'p', long = "publish", value_parser = |s: &str| parse_publish(s).map_err(|e| e.to_string()))]
    pub publish: Vec<PortMapping>,
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub opts: AppOptions,
    /// For k8s: the platform, memory and reasons of a `bakeoff bench` report.json.
    #[arg(long = "from-report", value_name = "FILE", conflicts_with = "platform")]
    pub from_report: Option<std::path::PathBuf>,
    /// For k8s: the image reference the cluster pulls (default: the last `bakeoff push`).
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
}

// Conversions from the clap values to the library's: the only place they meet.

impl TargetArg {
    /// The single target this value names (`all` names none).
    pub fn target(self) -> Option<bakeoff_spec::Target> {
        use bakeoff_spec::Target;
        match self {
            TargetArg::Oci => Some(Target::Oci),
            TargetArg::Microvm => Some(Target::MicroVm),
            TargetArg::Rumprun => Some(Target::Rumprun),
            TargetArg::All => None,
        }
    }
}

/// The driver options `--accel` and `--machine` choose.
pub fn driver_options(
    accel: Option<AccelArg>,
    machine: Option<MachineArg>,
) -> bakeoff_driver::DriverOptions {
    use bakeoff_driver::qemu::{Accel, Machine};
    let mut o = bakeoff_driver::DriverOptions::default();
    o.qemu.accel = accel.map(|x| match x {
        AccelArg::Kvm => Accel::Kvm,
        AccelArg::Tcg => Accel::Tcg,
    });
    o.qemu.machine = machine.map(|x| match x {
        MachineArg::Microvm => Machine::Microvm,
        MachineArg::Q35 => Machine::Q35,
    });
    o
}

impl RunArgs {
    pub fn flags(&self) -> bakeoff_spec::RunOptions {
        self.opts
            .run_options(self.publish.clone(), self.name.clone(), self.detach)
    }
}

impl ExportArgs {
    pub fn flags(&self) -> bakeoff_spec::RunOptions {
        self.opts
            .run_options(self.publish.clone(), self.name.clone(), true)
    }
}

impl ExportFormat {
    pub fn format(self) -> bakeoff_runtime::ExportFormat {
        match self {
            ExportFormat::Xl => bakeoff_runtime::ExportFormat::Xl,
            ExportFormat::Firecracker => bakeoff_runtime::ExportFormat::Firecracker,
            ExportFormat::K8s => bakeoff_runtime::ExportFormat::K8s,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ToolchainCommand {
    /// Build Rumprun's xen and hw platforms into the cache (about 25 minutes on 2 cores, once
    /// per machine and source).
    Build {
        /// Rumprun's source: a tree (rumprun with buildrump.sh and src-netbsd checked out in
        /// place) or a tarball of one; default: $BAKEOFF_RUMPRUN_SOURCE, else a clone of upstream.
        #[arg(long)]
        source: Option<PathBuf>,
        /// make jobs (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Print the toolchains bakeoff built and the one a Rumprun build would use now.
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KernelCommand {
    /// Build the minimal microVM kernel from Debian's linux-source-6.1 (minutes, once per machine).
    Build,
    /// Print the kernel a microVM uses (for APP when given): version, config hash, size, path.
    Show {
        app: Option<String>,
        /// Guest kernel: `minimal`, `debian` or a path (default: minimal when built).
        #[arg(long)]
        kernel: Option<PathBuf>,
    },
}
