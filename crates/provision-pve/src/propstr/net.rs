//! Networking: `netN` NICs and cloud-init's `ipconfigN`.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::{PropStrError, PropertyFormat, PropertyString};

/// NIC models Proxmox accepts (also usable as `model=MAC` shorthand).
pub const NIC_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

/// `netN: virtio,bridge=vmbr0,macaddr=BC:24:11:00:00:01,tag=20`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub model: String,
    pub macaddr: Option<String>,
    pub bridge: Option<String>,
    pub tag: Option<u16>,
    pub firewall: Option<bool>,
    pub mtu: Option<u16>,
    pub queues: Option<u8>,
    pub extra: Vec<(String, String)>,
}

impl PropertyFormat for Net {
    const DEFAULT_KEY: Option<&'static str> = Some("model");

    fn from_property_string(mut p: PropertyString) -> Result<Self, PropStrError> {
        // Proxmox prints `virtio=BC:24:…`: the model name as key, the MAC as value.
        let shorthand = p
            .entries
            .iter()
            .position(|(key, _)| NIC_MODELS.contains(&key.as_str()));
        let (model, shorthand_mac) = match shorthand {
            Some(position) => {
                let (model, mac) = p.entries.remove(position);
                (model, Some(mac))
            }
            None => (p.required("model")?, None),
        };
        if !NIC_MODELS.contains(&model.as_str()) {
            return Err(PropStrError::BadValue {
                key: "model".to_owned(),
                value: model,
                expected: format!("one of {}", NIC_MODELS.join(", ")),
            });
        }
        let macaddr = match (shorthand_mac, p.take("macaddr")) {
            (Some(mac), None) | (None, Some(mac)) => Some(mac),
            (None, None) => None,
            (Some(_), Some(mac)) => {
                return Err(PropStrError::DuplicateKey {
                    key: format!("macaddr ({mac})"),
                });
            }
        };
        Ok(Net {
            model,
            macaddr,
            bridge: p.take("bridge"),
            tag: p.take_parsed("tag", "a VLAN id 1-4094")?,
            firewall: p.take_bool("firewall")?,
            mtu: p.take_parsed("mtu", "an MTU")?,
            queues: p.take_parsed("queues", "0-64")?,
            extra: p.entries,
        })
    }

    fn to_property_string(&self) -> PropertyString {
        let mut p = PropertyString::default();
        p.push("model", self.model.clone());
        p.push_opt("macaddr", self.macaddr.as_ref());
        p.push_opt("bridge", self.bridge.as_ref());
        p.push_opt("tag", self.tag);
        p.push_bool("firewall", self.firewall);
        p.push_opt("mtu", self.mtu);
        p.push_opt("queues", self.queues);
        p.entries.extend(self.extra.iter().cloned());
        p
    }
}

/// IPv4 of `ipconfigN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Setting {
    Dhcp,
    Static(Ipv4Network),
}

/// IPv6 of `ipconfigN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Setting {
    Dhcp,
    Auto,
    Static(Ipv6Network),
}

/// `ipconfigN: ip=10.0.0.21/24,gw=10.0.0.1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub ip: Option<Ipv4Setting>,
    pub gw: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Setting>,
    pub gw6: Option<Ipv6Addr>,
}

impl PropertyFormat for IpConfig {
    const DEFAULT_KEY: Option<&'static str> = None;

    fn from_property_string(mut p: PropertyString) -> Result<Self, PropStrError> {
        let ip = p
            .take("ip")
            .map(|value| match value.as_str() {
                "dhcp" => Ok(Ipv4Setting::Dhcp),
                cidr => cidr
                    .parse()
                    .map(Ipv4Setting::Static)
                    .map_err(|_| PropStrError::BadValue {
                        key: "ip".to_owned(),
                        value: value.clone(),
                        expected: "dhcp or an IPv4 address with /prefix".to_owned(),
                    }),
            })
            .transpose()?;
        let ip6 = p
            .take("ip6")
            .map(|value| match value.as_str() {
                "dhcp" => Ok(Ipv6Setting::Dhcp),
                "auto" => Ok(Ipv6Setting::Auto),
                cidr => cidr
                    .parse()
                    .map(Ipv6Setting::Static)
                    .map_err(|_| PropStrError::BadValue {
                        key: "ip6".to_owned(),
                        value: value.clone(),
                        expected: "dhcp, auto or an IPv6 address with /prefix".to_owned(),
                    }),
            })
            .transpose()?;
        let config = IpConfig {
            ip,
            gw: p.take_parsed("gw", "an IPv4 address")?,
            ip6,
            gw6: p.take_parsed("gw6", "an IPv6 address")?,
        };
        if let Some((key, value)) = p.entries.into_iter().next() {
            return Err(PropStrError::BadValue {
                key,
                value,
                expected: "only ip, gw, ip6, gw6".to_owned(),
            });
        }
        Ok(config)
    }

    fn to_property_string(&self) -> PropertyString {
        let mut p = PropertyString::default();
        p.push_opt(
            "ip",
            self.ip.map(|ip| match ip {
                Ipv4Setting::Dhcp => "dhcp".to_owned(),
                Ipv4Setting::Static(network) => network.to_string(),
            }),
        );
        p.push_opt("gw", self.gw);
        p.push_opt(
            "ip6",
            self.ip6.map(|ip| match ip {
                Ipv6Setting::Dhcp => "dhcp".to_owned(),
                Ipv6Setting::Auto => "auto".to_owned(),
                Ipv6Setting::Static(network) => network.to_string(),
            }),
        );
        p.push_opt("gw6", self.gw6);
        p
    }
}
