//! `numaN`: which host CPUs and NUMA nodes back a guest NUMA node, and the memory policy.

use std::fmt;
use std::str::FromStr;

use super::{IdList, PropStrError, PropertyFormat, PropertyString};

/// `numaN` memory policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumaPolicy {
    Preferred,
    Bind,
    Interleave,
}

impl fmt::Display for NumaPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NumaPolicy::Preferred => "preferred",
            NumaPolicy::Bind => "bind",
            NumaPolicy::Interleave => "interleave",
        })
    }
}

impl FromStr for NumaPolicy {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "preferred" => Ok(NumaPolicy::Preferred),
            "bind" => Ok(NumaPolicy::Bind),
            "interleave" => Ok(NumaPolicy::Interleave),
            _ => Err(()),
        }
    }
}

/// `numaN: cpus=0-7;16-23,hostnodes=0,memory=65536,policy=bind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numa {
    pub cpus: IdList,
    pub hostnodes: Option<IdList>,
    /// MiB.
    pub memory: Option<u64>,
    pub policy: Option<NumaPolicy>,
    pub extra: Vec<(String, String)>,
}

impl PropertyFormat for Numa {
    const DEFAULT_KEY: Option<&'static str> = None;

    fn from_property_string(mut p: PropertyString) -> Result<Self, PropStrError> {
        let cpus = p.required("cpus")?;
        let cpus = cpus.parse().map_err(|()| PropStrError::BadValue {
            key: "cpus".to_owned(),
            value: cpus.clone(),
            expected: "ids or ranges joined by ';' (0-7;16-23)".to_owned(),
        })?;
        Ok(Numa {
            cpus,
            hostnodes: p.take_parsed("hostnodes", "ids or ranges joined by ';'")?,
            memory: p.take_parsed("memory", "MiB")?,
            policy: p.take_parsed("policy", "preferred, bind or interleave")?,
            extra: p.entries,
        })
    }

    fn to_property_string(&self) -> PropertyString {
        let mut p = PropertyString::default();
        p.push("cpus", self.cpus.to_string());
        p.push_opt("hostnodes", self.hostnodes.as_ref());
        p.push_opt("memory", self.memory);
        p.push_opt("policy", self.policy);
        p.entries.extend(self.extra.iter().cloned());
        p
    }
}
