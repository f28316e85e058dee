use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// Where an image runs. Adding a platform is one variant here and one driver module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Docker,
    Qemu,
    Rumprun,
    Xen,
    Firecracker,
}

impl Platform {
    pub const ALL: [Platform; 5] = [
        Platform::Docker,
        Platform::Qemu,
        Platform::Rumprun,
        Platform::Xen,
        Platform::Firecracker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Docker => "docker",
            Platform::Qemu => "qemu",
            Platform::Rumprun => "rumprun",
            Platform::Xen => "xen",
            Platform::Firecracker => "firecracker",
        }
    }

    /// The image kinds this platform boots, its default first.
    pub fn targets(self) -> &'static [Target] {
        match self {
            Platform::Docker => &[Target::Oci],
            Platform::Qemu | Platform::Firecracker => &[Target::MicroVm],
            Platform::Xen => &[Target::MicroVm, Target::Rumprun],
            Platform::Rumprun => &[Target::Rumprun],
        }
    }

    /// The image kind this platform boots by default.
    pub fn target(self) -> Target {
        self.targets()[0]
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| SpecError::Unknown {
                what: "platform",
                value: s.to_string(),
                expected: Platform::ALL.map(|p| p.as_str()).join(", "),
            })
    }
}

/// One row of a bench: a platform and, where it boots more than one image kind, which one
/// (`xen:rumprun`, `xen:microvm`). Written `PLATFORM` or `PLATFORM:TARGET`; serialized the same
/// way, so a report of default rows reads as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Row {
    pub platform: Platform,
    /// `None`: the platform's default image kind.
    pub target: Option<Target>,
}

impl Row {
    pub fn new(platform: Platform, target: Option<Target>) -> Row {
        Row { platform, target }
    }
    /// The image kind this row boots.
    pub fn target(self) -> Target {
        self.target.unwrap_or(self.platform.target())
    }
}

impl From<Platform> for Row {
    fn from(platform: Platform) -> Row {
        Row {
            platform,
            target: None,
        }
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target {
            Some(t) => f.pad(&format!("{}:{}", self.platform, t)),
            None => f.pad(self.platform.as_str()),
        }
    }
}

impl FromStr for Row {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (platform, target) = match s.split_once(':') {
            Some((p, t)) => (p.parse::<Platform>()?, Some(t.parse::<Target>()?)),
            None => (s.parse::<Platform>()?, None),
        };
        if let Some(t) = target.filter(|t| !platform.targets().contains(t)) {
            return Err(SpecError::Unknown {
                what: "image kind for this platform",
                value: format!("{platform}:{t}"),
                expected: platform
                    .targets()
                    .iter()
                    .map(|t| format!("{platform}:{t}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(Row { platform, target })
    }
}

impl Serialize for Row {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Row, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where an app's executable comes from: it decides what a platform can rebuild (Rumprun needs
/// sources) and what an image holds besides the program (a package brings its own files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Built here from source.
    Source,
    /// A prebuilt executable, used as it is.
    Binary,
    /// A Debian package: the program, its package's files and its dependencies' libraries.
    Package,
    /// A Python or Node.js app: its files run by an interpreter from Debian's packages.
    Interpreted,
}

/// What `build` produces from one Artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Oci,
    #[serde(rename = "microvm")]
    MicroVm,
    Rumprun,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Oci, Target::MicroVm, Target::Rumprun];
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Oci => "oci",
            Target::MicroVm => "microvm",
            Target::Rumprun => "rumprun",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Target {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| SpecError::Unknown {
                what: "target",
                value: s.to_string(),
                expected: Target::ALL.map(|t| t.as_str()).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_name_a_platform_and_maybe_its_image_kind() {
        let r: Row = "xen:rumprun".parse().unwrap();
        assert_eq!(r, Row::new(Platform::Xen, Some(Target::Rumprun)));
        assert_eq!(r.to_string(), "xen:rumprun");
        assert_eq!("qemu".parse::<Row>().unwrap(), Row::from(Platform::Qemu));
        assert_eq!(Row::from(Platform::Xen).target(), Target::MicroVm);
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"xen:rumprun\"");
        assert_eq!(
            serde_json::from_str::<Row>("\"docker\"").unwrap(),
            Row::from(Platform::Docker)
        );
        let e = "docker:rumprun".parse::<Row>().unwrap_err().to_string();
        assert!(
            e.contains("docker:rumprun") && e.contains("docker:oci"),
            "{e}"
        );
        assert!("xen:nope".parse::<Row>().is_err());
    }

    #[test]
    fn each_platform_boots_its_image_kinds() {
        assert_eq!(Platform::Docker.targets(), [Target::Oci]);
        assert_eq!(Platform::Xen.targets(), [Target::MicroVm, Target::Rumprun]);
        assert_eq!(Platform::Xen.target(), Target::MicroVm);
        assert!(Platform::ALL
            .iter()
            .all(|p| p.targets().contains(&p.target())));
    }

    #[test]
    fn platforms_round_trip_and_unknown_is_named() {
        for p in Platform::ALL {
            assert_eq!(p.as_str().parse::<Platform>().unwrap(), p);
        }
        let err = "vmware".parse::<Platform>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown platform `vmware`; expected one of: docker, qemu, rumprun, xen, firecracker"
        );
    }
}
