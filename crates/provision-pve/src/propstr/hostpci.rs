//! `hostpciN`: a PCI device passed through, by resource mapping or by host address.

use super::{PropStrError, PropertyFormat, PropertyString};

/// What a `hostpciN` passes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPciSource {
    /// Raw device ids (`0000:41:00`, several joined by `;`): only `root@pam` may set these.
    Host(Vec<String>),
    /// A cluster resource mapping (`mapping=a100-0`): needs `Mapping.Use`.
    Mapping(String),
}

/// `hostpciN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPci {
    pub host_or_mapping: HostPciSource,
    pub pcie: Option<bool>,
    pub rombar: Option<bool>,
    pub x_vga: Option<bool>,
    /// Keys provision does not model, kept in order.
    pub extra: Vec<(String, String)>,
}

impl HostPci {
    /// A whole device by mapping, as PCIe (q35).
    pub fn mapping(id: impl Into<String>) -> Self {
        HostPci {
            host_or_mapping: HostPciSource::Mapping(id.into()),
            pcie: Some(true),
            rombar: None,
            x_vga: None,
            extra: Vec::new(),
        }
    }

    /// A whole device by address (root@pam only), as PCIe (q35).
    pub fn host(address: impl Into<String>) -> Self {
        HostPci {
            host_or_mapping: HostPciSource::Host(vec![address.into()]),
            ..HostPci::mapping("")
        }
    }
}

impl PropertyFormat for HostPci {
    const DEFAULT_KEY: Option<&'static str> = Some("host");

    fn from_property_string(mut p: PropertyString) -> Result<Self, PropStrError> {
        let host = p.take("host");
        let mapping = p.take("mapping");
        let host_or_mapping = match (host, mapping) {
            (Some(host), None) => HostPciSource::Host(host.split(';').map(str::to_owned).collect()),
            (None, Some(mapping)) => HostPciSource::Mapping(mapping),
            (Some(host), Some(_)) => {
                return Err(PropStrError::BadValue {
                    key: "host".to_owned(),
                    value: host,
                    expected: "either host or mapping, not both".to_owned(),
                });
            }
            (None, None) => {
                return Err(PropStrError::Missing {
                    key: "host or mapping".to_owned(),
                });
            }
        };
        Ok(HostPci {
            host_or_mapping,
            pcie: p.take_bool("pcie")?,
            rombar: p.take_bool("rombar")?,
            x_vga: p.take_bool("x-vga")?,
            extra: p.entries,
        })
    }

    fn to_property_string(&self) -> PropertyString {
        let mut p = PropertyString::default();
        match &self.host_or_mapping {
            HostPciSource::Host(ids) => p.push("host", ids.join(";")),
            HostPciSource::Mapping(id) => p.push("mapping", id.clone()),
        }
        p.push_bool("pcie", self.pcie);
        p.push_bool("rombar", self.rombar);
        p.push_bool("x-vga", self.x_vga);
        p.entries.extend(self.extra.iter().cloned());
        p
    }
}
