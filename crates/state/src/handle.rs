//! What each driver records to find its instance again: one struct per driver, one
//! [`Handle`] variant each. On disk a handle is the driver's plain JSON object next to the
//! record's `platform`, which says how to read it (the shape every earlier version wrote).

use std::path::PathBuf;

use bakeoff_launch::qemu::{Accel, Machine};
use bakeoff_launch::NetPlan;
use bakeoff_spec::{Platform, Target};
use serde::{Deserialize, Serialize};

/// A Docker container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerHandle {
    pub container_id: String,
    pub container_name: String,
    /// The image reference the container was created from.
    pub image: String,
}

/// A QEMU microVM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuHandle {
    pub pid: u32,
    pub machine: Machine,
    pub accel: Accel,
    pub memory_mib: u64,
    pub console: PathBuf,
    pub qmp: PathBuf,
    /// QEMU's argv (without the program).
    pub argv: Vec<String>,
    /// Why this accelerator (the KVM probe's verdict).
    pub accel_reason: String,
}

/// A Rumprun unikernel on QEMU. (Earlier versions also wrote `"machine": "q35"`; it is ignored.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RumprunHandle {
    pub pid: u32,
    pub accel: Accel,
    pub memory_mib: u64,
    pub console: PathBuf,
    pub qmp: PathBuf,
    pub argv: Vec<String>,
    pub accel_reason: String,
}

/// A Xen domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XenHandle {
    pub domain: String,
    pub target: Target,
    pub slot: u16,
    pub config: PathBuf,
    pub console: PathBuf,
    /// The `xl console` copying the console into `console`.
    pub console_pid: Option<u32>,
    pub net: NetPlan,
    pub instance_dir: PathBuf,
}

/// A Firecracker VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerHandle {
    pub pid: u32,
    pub socket: PathBuf,
    pub console: PathBuf,
    pub slot: u16,
    pub tap: String,
    pub net: NetPlan,
    pub config: PathBuf,
    pub memory_mib: u64,
    pub instance_dir: PathBuf,
}

/// An instance's driver handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handle {
    Docker(DockerHandle),
    Qemu(QemuHandle),
    Rumprun(RumprunHandle),
    Xen(XenHandle),
    Firecracker(FirecrackerHandle),
}

impl Handle {
    /// The platform whose driver wrote this handle.
    pub fn platform(&self) -> Platform {
        match self {
            Handle::Docker(_) => Platform::Docker,
            Handle::Qemu(_) => Platform::Qemu,
            Handle::Rumprun(_) => Platform::Rumprun,
            Handle::Xen(_) => Platform::Xen,
            Handle::Firecracker(_) => Platform::Firecracker,
        }
    }

    /// The accelerator of a QEMU-run VM (microVM or Rumprun).
    pub fn accel(&self) -> Option<Accel> {
        match self {
            Handle::Qemu(h) => Some(h.accel),
            Handle::Rumprun(h) => Some(h.accel),
            _ => None,
        }
    }

    /// The VMM's argv (without the program), where bakeoff started the VMM with one.
    pub fn vmm_argv(&self) -> Option<&[String]> {
        match self {
            Handle::Qemu(h) => Some(&h.argv),
            Handle::Rumprun(h) => Some(&h.argv),
            _ => None,
        }
    }

    /// Memory given to the VM, in MiB (a container has no fixed size).
    pub fn memory_mib(&self) -> Option<u64> {
        match self {
            Handle::Qemu(h) => Some(h.memory_mib),
            Handle::Rumprun(h) => Some(h.memory_mib),
            Handle::Firecracker(h) => Some(h.memory_mib),
            Handle::Docker(_) | Handle::Xen(_) => None,
        }
    }

    /// The driver's JSON object, as stored in `instance.json`.
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Handle::Docker(h) => serde_json::to_value(h),
            Handle::Qemu(h) => serde_json::to_value(h),
            Handle::Rumprun(h) => serde_json::to_value(h),
            Handle::Xen(h) => serde_json::to_value(h),
            Handle::Firecracker(h) => serde_json::to_value(h),
        };
        v.expect("handles serialize")
    }

    /// Reads the JSON object the driver of `platform` stored.
    pub fn from_json(
        platform: Platform,
        v: serde_json::Value,
    ) -> Result<Handle, serde_json::Error> {
        Ok(match platform {
            Platform::Docker => Handle::Docker(serde_json::from_value(v)?),
            Platform::Qemu => Handle::Qemu(serde_json::from_value(v)?),
            Platform::Rumprun => Handle::Rumprun(serde_json::from_value(v)?),
            Platform::Xen => Handle::Xen(serde_json::from_value(v)?),
            Platform::Firecracker => Handle::Firecracker(serde_json::from_value(v)?),
        })
    }
}

macro_rules! variant_access {
    ($($variant:ident => $ty:ty, $get:ident;)*) => {
        impl Handle {
            $(
                /// This driver's handle, or `None` when another driver wrote it.
                pub fn $get(&self) -> Option<&$ty> {
                    match self {
                        Handle::$variant(h) => Some(h),
                        _ => None,
                    }
                }
            )*
        }
        $(
            impl From<$ty> for Handle {
                fn from(h: $ty) -> Handle {
                    Handle::$variant(h)
                }
            }
        )*
    };
}

variant_access! {
    Docker => DockerHandle, docker;
    Qemu => QemuHandle, qemu;
    Rumprun => RumprunHandle, rumprun;
    Xen => XenHandle, xen;
    Firecracker => FirecrackerHandle, firecracker;
}
