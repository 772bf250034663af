//! `cpu` (model and flags) and `agent`.

use super::{PropStrError, PropertyFormat, PropertyString};

/// One CPU flag, `+pdpe1gb` / `-hypervisor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFlag {
    pub enabled: bool,
    pub name: String,
}

/// `cpu: host,flags=+pdpe1gb;+aes,hidden=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    pub cputype: String,
    pub flags: Vec<CpuFlag>,
    pub hidden: Option<bool>,
    pub extra: Vec<(String, String)>,
}

impl Cpu {
    pub fn host() -> Self {
        Cpu {
            cputype: "host".to_owned(),
            flags: Vec::new(),
            hidden: None,
            extra: Vec::new(),
        }
    }
}

impl PropertyFormat for Cpu {
    const DEFAULT_KEY: Option<&'static str> = Some("cputype");

    fn from_property_string(mut p: PropertyString) -> Result<Self, PropStrError> {
        let cputype = p.required("cputype")?;
        let flags = match p.take("flags") {
            Some(flags) => flags
                .split(';')
                .map(|flag| {
                    let (enabled, name) = match flag.as_bytes().first() {
                        Some(b'+') => (true, &flag[1..]),
                        Some(b'-') => (false, &flag[1..]),
                        _ => (true, ""),
                    };
                    if name.is_empty() {
                        return Err(PropStrError::BadValue {
                            key: "flags".to_owned(),
                            value: flags.clone(),
                            expected: "+FLAG or -FLAG joined by ';'".to_owned(),
                        });
                    }
                    Ok(CpuFlag {
                        enabled,
                        name: name.to_owned(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        Ok(Cpu {
            cputype,
            flags,
            hidden: p.take_bool("hidden")?,
            extra: p.entries,
        })
    }

    fn to_property_string(&self) -> PropertyString {
        let mut p = PropertyString::default();
        p.push("cputype", self.cputype.clone());
        if !self.flags.is_empty() {
            let flags: Vec<String> = self
                .flags
                .iter()
                .map(|flag| format!("{}{}", if flag.enabled { '+' } else { '-' }, flag.name))
                .collect();
            p.push("flags", flags.join(";"));
        }
        p.push_bool("hidden", self.hidden);
        p.entries.extend(self.extra.iter().cloned());
        p
    }
}

/// `agent: enabled=1,fstrim_cloned_disks=1,type=virtio` (printed `1,fstrim_cloned_disks=1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub enabled: bool,
    pub fstrim_cloned_disks: Option<bool>,
    /// `virtio` | `isa`.
    pub kind: Option<String>,
    pub extra: Vec<(String, String)>,
}

impl PropertyFormat for Agent {
    const DEFAULT_KEY: Option<&'static str> = Some("enabled");

    fn from_property_string(mut p: PropertyString) -> Result<Self, PropStrError> {
        Ok(Agent {
            enabled: p.take_bool("enabled")?.unwrap_or(false),
            fstrim_cloned_disks: p.take_bool("fstrim_cloned_disks")?,
            kind: p.take("type"),
            extra: p.entries,
        })
    }

    fn to_property_string(&self) -> PropertyString {
        let mut p = PropertyString::default();
        p.push("enabled", if self.enabled { "1" } else { "0" });
        p.push_bool("fstrim_cloned_disks", self.fstrim_cloned_disks);
        p.push_opt("type", self.kind.as_ref());
        p.entries.extend(self.extra.iter().cloned());
        p
    }
}
