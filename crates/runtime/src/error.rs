use bakeoff_spec::Platform;
use bakeoff_state::Status;

/// Everything that can stop an orchestration step. Causes are kept as sources, so the one
/// printer at the edge prints the whole chain once.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Spec(#[from] bakeoff_spec::SpecError),
    #[error(transparent)]
    Detect(#[from] bakeoff_detect::DetectError),
    #[error(transparent)]
    Build(#[from] bakeoff_build::BuildError),
    #[error("cannot inspect the app's executable")]
    Inspect(#[source] bakeoff_elf::ElfError),
    #[error("packing the {target} image failed")]
    Pack {
        target: bakeoff_spec::Target,
        #[source]
        source: bakeoff_pack::PackError,
    },
    #[error(transparent)]
    Render(bakeoff_launch::LaunchError),
    #[error(transparent)]
    Driver(#[from] bakeoff_driver::DriverError),
    #[error(transparent)]
    Registry(#[from] bakeoff_registry::RegistryError),
    #[error(transparent)]
    State(#[from] bakeoff_state::StateError),
    #[error(transparent)]
    Bench(#[from] bakeoff_bench::BenchError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The compatibility check refuses the platform.
    #[error("{app} cannot run on {platform}: {}", reasons.join("; "))]
    CannotRun {
        app: String,
        platform: Platform,
        reasons: Vec<String>,
    },
    /// The platform cannot be used on this host; the text says why.
    #[error("{0}")]
    Unavailable(String),
    #[error("{platform} boots {wanted} images, not {asked} images")]
    WrongTarget {
        platform: Platform,
        asked: bakeoff_spec::Target,
        wanted: String,
    },
    /// The app ended while it was starting.
    #[error("`{name}` ended during start ({status}){diagnosis}; last output:\n{tail}\n(remove it with `bakeoff rm {name}`)")]
    EndedDuringStart {
        name: String,
        status: Status,
        diagnosis: String,
        tail: String,
    },
    /// The app kept running but never answered its health probe (bench needs it to).
    #[error("the app never became ready: {why}; {diagnosis}last output: {tail}")]
    NeverReady {
        why: String,
        diagnosis: String,
        tail: String,
    },
    #[error("instance `{0}` is running; stop it first with `bakeoff stop {0}` or use `bakeoff rm -f {0}`")]
    StillRunning(String),
    #[error("{what} {name}")]
    Step {
        what: &'static str,
        name: String,
        #[source]
        source: bakeoff_driver::DriverError,
    },
    #[error("{0}")]
    Invalid(String),
    /// The stable address of a service could not be bound.
    #[error(transparent)]
    Front(#[from] bakeoff_front::FrontError),
    /// A service's control socket failed.
    #[error(transparent)]
    Control(#[from] bakeoff_front::control::ControlError),
    /// A switch whose new backend did not start; the old one still serves.
    #[error("the new backend on {to} did not start, so the service stays on {from}")]
    SwitchFailed {
        from: Platform,
        to: Platform,
        #[source]
        source: Box<RuntimeError>,
    },
    #[error("cannot read the profile {}", path.display())]
    ProfileUnreadable {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a bakeoff bench report", path.display())]
    ProfileDamaged {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
}
