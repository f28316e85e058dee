//! bakeoff's shared vocabulary: what the user says about an app (`bakeoff.toml`),
//! how they want it run (`RunOptions`), and the platforms and targets we know.
//!
//! Everything here is plain data plus validation; no I/O besides reading one file.

mod app;
mod platform;
mod run;

pub use app::{
    is_debian_package_name, AppSpec, BuildSpec, FileSpec, HealthKind, HealthSpec, ResourceSpec,
    RumprunSpec,
};
pub use platform::{Origin, Platform, Row, Target};
pub use run::{
    parse_cpus, parse_env, parse_memory, parse_publish, PortMapping, Protocol, RunOptions,
};

/// Errors in user-supplied specifications. Each message is one sentence a user can act on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("{path}: {message}")]
    Toml { path: String, message: String },
    #[error("invalid port mapping `{value}`: {reason}")]
    Publish { value: String, reason: String },
    #[error("invalid environment variable `{value}`: expected KEY=VALUE with a non-empty KEY")]
    Env { value: String },
    #[error("invalid memory size `{value}`: {reason}")]
    Memory { value: String, reason: String },
    #[error("invalid CPU count `{value}`: expected a positive number such as 1 or 0.5")]
    Cpus { value: String },
    #[error("invalid name `{value}`: {reason}")]
    Name { value: String, reason: String },
    #[error("unknown {what} `{value}`; expected one of: {expected}")]
    Unknown {
        what: &'static str,
        value: String,
        expected: String,
    },
}

/// Checks an instance or app name: what Docker accepts for container names,
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 63 characters.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let err = |reason: &str| SpecError::Name {
        value: name.to_string(),
        reason: reason.to_string(),
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(err("a name cannot be empty")),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(err("a name must start with a letter or digit"))
        }
        _ => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(err("only letters, digits, '_', '.' and '-' are allowed"));
    }
    if name.len() > 63 {
        return Err(err("a name is at most 63 characters long"));
    }
    Ok(())
}
