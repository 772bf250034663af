//! Proxmox property strings (`0000:41:00,pcie=1`, `cpus=0-7;16-23,hostnodes=0,policy=bind`):
//! a generic parser/serializer and typed builders for the ones provision sends.
//!
//! Grammar (as `PVE::JSONSchema::parse_property_string`): comma-separated parts, each
//! `key=value` or — at most once — a bare value for the format's default key. Values cannot
//! contain `,`; lists inside a value use `;` (`cpus=0-7;16-23`, `flags=+pdpe1gb;+aes`).
//! The simulator validates these independently against the official schema, on purpose.
//!
//! This file holds the generic [`PropertyString`], the [`PropertyFormat`] trait and [`IdList`];
//! each typed format lives in its own file (`hostpci`, `numa`, `disk`, `net`, `cpu`).

use std::fmt;
use std::str::FromStr;

use super::cpulist::{CpuList, ListSyntax, format_items, parse_items};

mod cpu;
mod disk;
mod hostpci;
mod net;
mod numa;
#[cfg(test)]
mod tests;

pub use cpu::{Agent, Cpu, CpuFlag};
pub use disk::{Disk, EfiDisk};
pub use hostpci::{HostPci, HostPciSource};
pub use net::{IpConfig, Ipv4Setting, Ipv6Setting, NIC_MODELS, Net};
pub use numa::{Numa, NumaPolicy};

/// A property string that does not parse or has a bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropStrError {
    #[error("empty part in property string {text:?}")]
    EmptyPart { text: String },
    #[error("value {value:?} has no key and this format has no default key")]
    NoDefaultKey { value: String },
    #[error("more than one value without a key ({first:?}, {second:?})")]
    TwoDefaults { first: String, second: String },
    #[error("key {key:?} appears twice")]
    DuplicateKey { key: String },
    #[error("key {key:?} has an empty value")]
    EmptyValue { key: String },
    #[error("missing required key {key:?}")]
    Missing { key: String },
    #[error("bad value {value:?} for {key:?}: {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: String,
    },
}

/// An ordered `key=value` list; the default key (if any) is printed bare and first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropertyString {
    pub entries: Vec<(String, String)>,
}

impl PropertyString {
    /// Parses `text`; a bare part is the value of `default_key`.
    pub fn parse(text: &str, default_key: Option<&str>) -> Result<Self, PropStrError> {
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut bare: Option<String> = None;
        if text.trim().is_empty() {
            return Ok(PropertyString { entries });
        }
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(PropStrError::EmptyPart {
                    text: text.to_owned(),
                });
            }
            let (key, value) = match part.split_once('=') {
                Some((key, value)) => (key.trim().to_owned(), value.trim().to_owned()),
                None => {
                    let Some(default_key) = default_key else {
                        return Err(PropStrError::NoDefaultKey {
                            value: part.to_owned(),
                        });
                    };
                    if let Some(first) = &bare {
                        return Err(PropStrError::TwoDefaults {
                            first: first.clone(),
                            second: part.to_owned(),
                        });
                    }
                    bare = Some(part.to_owned());
                    (default_key.to_owned(), part.to_owned())
                }
            };
            if value.is_empty() {
                return Err(PropStrError::EmptyValue { key });
            }
            if entries.iter().any(|(existing, _)| *existing == key) {
                return Err(PropStrError::DuplicateKey { key });
            }
            entries.push((key, value));
        }
        Ok(PropertyString { entries })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(existing, _)| existing == key)
            .map(|(_, value)| value.as_str())
    }

    /// Removes and returns `key`'s value.
    pub fn take(&mut self, key: &str) -> Option<String> {
        let position = self
            .entries
            .iter()
            .position(|(existing, _)| existing == key)?;
        Some(self.entries.remove(position).1)
    }

    pub fn push(&mut self, key: &str, value: impl Into<String>) {
        self.entries.push((key.to_owned(), value.into()));
    }

    pub fn push_opt<T: fmt::Display>(&mut self, key: &str, value: Option<T>) {
        if let Some(value) = value {
            self.push(key, value.to_string());
        }
    }

    pub fn push_bool(&mut self, key: &str, value: Option<bool>) {
        if let Some(value) = value {
            self.push(key, if value { "1" } else { "0" });
        }
    }

    /// Prints the string; `default_key`'s value comes first and bare.
    pub fn render(&self, default_key: Option<&str>) -> String {
        let mut parts = Vec::with_capacity(self.entries.len());
        if let Some(default_key) = default_key
            && let Some(value) = self.get(default_key)
        {
            parts.push(value.to_owned());
        }
        for (key, value) in &self.entries {
            if Some(key.as_str()) != default_key {
                parts.push(format!("{key}={value}"));
            }
        }
        parts.join(",")
    }

    fn required(&mut self, key: &str) -> Result<String, PropStrError> {
        self.take(key).ok_or_else(|| PropStrError::Missing {
            key: key.to_owned(),
        })
    }

    fn take_bool(&mut self, key: &str) -> Result<Option<bool>, PropStrError> {
        self.take(key)
            .map(|value| parse_bool(key, &value))
            .transpose()
    }

    fn take_parsed<T: FromStr>(
        &mut self,
        key: &str,
        expected: &str,
    ) -> Result<Option<T>, PropStrError> {
        self.take(key)
            .map(|value| {
                value.parse().map_err(|_| PropStrError::BadValue {
                    key: key.to_owned(),
                    value: value.clone(),
                    expected: expected.to_owned(),
                })
            })
            .transpose()
    }
}

/// Proxmox booleans: `1|0`, also `yes|no|on|off|true|false`.
fn parse_bool(key: &str, value: &str) -> Result<bool, PropStrError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Ok(true),
        "0" | "no" | "off" | "false" => Ok(false),
        _ => Err(PropStrError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            expected: "a boolean (1 or 0)".to_owned(),
        }),
    }
}

/// A typed property string format.
pub trait PropertyFormat: Sized {
    /// The key whose value may be given bare (`hostpci0: 0000:41:00`).
    const DEFAULT_KEY: Option<&'static str>;

    fn from_property_string(properties: PropertyString) -> Result<Self, PropStrError>;
    fn to_property_string(&self) -> PropertyString;

    fn parse(text: &str) -> Result<Self, PropStrError> {
        Self::from_property_string(PropertyString::parse(text, Self::DEFAULT_KEY)?)
    }

    /// The string sent to Proxmox.
    fn render(&self) -> String {
        self.to_property_string().render(Self::DEFAULT_KEY)
    }
}

/// `0-7;16-23`: a `;`-separated list of ids and ranges (numa `cpus`, `hostnodes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdList(pub Vec<(u32, Option<u32>)>);

impl fmt::Display for IdList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_items(&self.0, ListSyntax::Property))
    }
}

impl FromStr for IdList {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, ()> {
        parse_items(text, ListSyntax::Property, u32::MAX)
            .map(IdList)
            .map_err(|_| ())
    }
}

impl IdList {
    /// The CPUs (or node ids) the list names.
    pub fn to_cpu_list(&self) -> CpuList {
        self.0
            .iter()
            .flat_map(|&(first, last)| first..=last.unwrap_or(first))
            .collect()
    }
}

/// Canonical ranges (`0-7;16-23`).
impl From<&CpuList> for IdList {
    fn from(cpus: &CpuList) -> Self {
        IdList(cpus.ranges())
    }
}
