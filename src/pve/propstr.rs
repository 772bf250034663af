//! Proxmox property strings (`0000:41:00,pcie=1`, `cpus=0-7;16-23,hostnodes=0,policy=bind`):
//! a generic parser/serializer and typed builders for the ones provision sends.
//!
//! Grammar (as `PVE::JSONSchema::parse_property_string`): comma-separated parts, each
//! `key=value` or — at most once — a bare value for the format's default key. Values cannot
//! contain `,`; lists inside a value use `;` (`cpus=0-7;16-23`, `flags=+pdpe1gb;+aes`).
//! The simulator validates these independently against the official schema, on purpose.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::cpulist::{CpuList, ListSyntax, format_items, parse_items};

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

/// A disk (`scsiN`, `virtioN`): `local-lvm:0,import-from=local:import/x.qcow2,iothread=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `storage:size-in-GiB` to allocate, or an existing volume id.
    pub file: String,
    pub import_from: Option<String>,
    pub format: Option<String>,
    pub size: Option<String>,
    pub cache: Option<String>,
    /// `on` | `ignore`.
    pub discard: Option<String>,
    pub iothread: Option<bool>,
    pub ssd: Option<bool>,
    pub extra: Vec<(String, String)>,
}

impl Disk {
    pub fn new(file: impl Into<String>) -> Self {
        Disk {
            file: file.into(),
            import_from: None,
            format: None,
            size: None,
            cache: None,
            discard: None,
            iothread: None,
            ssd: None,
            extra: Vec::new(),
        }
    }
}

impl PropertyFormat for Disk {
    const DEFAULT_KEY: Option<&'static str> = Some("file");

    fn from_property_string(mut p: PropertyString) -> Result<Self, PropStrError> {
        let file = match p.take("volume") {
            Some(volume) => volume,
            None => p.required("file")?,
        };
        Ok(Disk {
            file,
            import_from: p.take("import-from"),
            format: p.take("format"),
            size: p.take("size"),
            cache: p.take("cache"),
            discard: p.take("discard"),
            iothread: p.take_bool("iothread")?,
            ssd: p.take_bool("ssd")?,
            extra: p.entries,
        })
    }

    fn to_property_string(&self) -> PropertyString {
        let mut p = PropertyString::default();
        p.push("file", self.file.clone());
        p.push_opt("import-from", self.import_from.as_ref());
        p.push_opt("format", self.format.as_ref());
        p.push_opt("size", self.size.as_ref());
        p.push_opt("cache", self.cache.as_ref());
        p.push_opt("discard", self.discard.as_ref());
        p.push_bool("iothread", self.iothread);
        p.push_bool("ssd", self.ssd);
        p.entries.extend(self.extra.iter().cloned());
        p
    }
}

/// `efidisk0: local-lvm:1,efitype=4m,pre-enrolled-keys=0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfiDisk {
    pub file: String,
    /// `2m` | `4m`.
    pub efitype: Option<String>,
    pub pre_enrolled_keys: Option<bool>,
    pub format: Option<String>,
    pub extra: Vec<(String, String)>,
}

impl PropertyFormat for EfiDisk {
    const DEFAULT_KEY: Option<&'static str> = Some("file");

    fn from_property_string(mut p: PropertyString) -> Result<Self, PropStrError> {
        let file = match p.take("volume") {
            Some(volume) => volume,
            None => p.required("file")?,
        };
        let efitype = p.take("efitype");
        if let Some(kind) = &efitype
            && kind != "2m"
            && kind != "4m"
        {
            return Err(PropStrError::BadValue {
                key: "efitype".to_owned(),
                value: kind.clone(),
                expected: "2m or 4m".to_owned(),
            });
        }
        Ok(EfiDisk {
            file,
            efitype,
            pre_enrolled_keys: p.take_bool("pre-enrolled-keys")?,
            format: p.take("format"),
            extra: p.entries,
        })
    }

    fn to_property_string(&self) -> PropertyString {
        let mut p = PropertyString::default();
        p.push("file", self.file.clone());
        p.push_opt("efitype", self.efitype.as_ref());
        p.push_bool("pre-enrolled-keys", self.pre_enrolled_keys);
        p.push_opt("format", self.format.as_ref());
        p.entries.extend(self.extra.iter().cloned());
        p
    }
}

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_default_key_and_semicolon_lists() {
        let pci = HostPci::parse("0000:41:00,pcie=1").unwrap();
        assert_eq!(
            pci.host_or_mapping,
            HostPciSource::Host(vec!["0000:41:00".to_owned()])
        );
        assert_eq!(pci.pcie, Some(true));
        assert_eq!(pci.render(), "0000:41:00,pcie=1");
        assert_eq!(HostPci::mapping("a100-0").render(), "mapping=a100-0,pcie=1");
        let two = HostPci::parse("host=0000:41:00;0000:42:00,x-vga=1").unwrap();
        assert_eq!(two.render(), "0000:41:00;0000:42:00,x-vga=1");

        let numa = Numa::parse("cpus=0-7;16-23,hostnodes=0,memory=65536,policy=bind").unwrap();
        assert_eq!(numa.cpus, IdList(vec![(0, Some(7)), (16, Some(23))]));
        assert_eq!(numa.policy, Some(NumaPolicy::Bind));
        assert_eq!(
            numa.render(),
            "cpus=0-7;16-23,hostnodes=0,memory=65536,policy=bind"
        );

        let cpu = Cpu::parse("host,flags=+pdpe1gb;+aes").unwrap();
        assert_eq!(cpu.flags.len(), 2);
        assert_eq!(cpu.render(), "host,flags=+pdpe1gb;+aes");
    }

    #[test]
    fn parses_what_proxmox_prints() {
        let net = Net::parse("virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1").unwrap();
        assert_eq!(net.model, "virtio");
        assert_eq!(net.macaddr.as_deref(), Some("BC:24:11:AA:BB:CC"));
        assert_eq!(
            net.render(),
            "virtio,macaddr=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1"
        );
        let disk = Disk::parse("local-lvm:vm-120-disk-1,iothread=1,size=500G").unwrap();
        assert_eq!(disk.size.as_deref(), Some("500G"));
        let efi = EfiDisk::parse("local-lvm:vm-120-disk-0,efitype=4m,size=4M").unwrap();
        assert_eq!(efi.extra, vec![("size".to_owned(), "4M".to_owned())]);
        assert!(EfiDisk::parse("local-lvm:1,efitype=8m").is_err());
        let agent = Agent::parse("1,fstrim_cloned_disks=1").unwrap();
        assert!(agent.enabled);
        let ip = IpConfig::parse("ip=10.0.0.21/24,gw=10.0.0.1").unwrap();
        assert_eq!(ip.render(), "ip=10.0.0.21/24,gw=10.0.0.1");
    }

    #[test]
    fn rejects_malformed_strings() {
        assert!(matches!(
            Numa::parse("0-7"),
            Err(PropStrError::NoDefaultKey { .. })
        ));
        assert!(matches!(
            HostPci::parse("0000:41:00,0000:42:00"),
            Err(PropStrError::TwoDefaults { .. })
        ));
        assert!(matches!(
            Disk::parse("local:1,,ssd=1"),
            Err(PropStrError::EmptyPart { .. })
        ));
        assert!(matches!(
            Disk::parse("local:1,ssd=1,ssd=0"),
            Err(PropStrError::DuplicateKey { .. })
        ));
        assert!(matches!(
            Disk::parse("local:1,ssd=maybe"),
            Err(PropStrError::BadValue { .. })
        ));
        assert!(Numa::parse("cpus=7-0").is_err());
        assert!(Net::parse("model=tulip").is_err());
        assert!(IpConfig::parse("ip=10.0.0.300/24").is_err());
        assert!(HostPci::parse("pcie=1").is_err());
    }

    fn token() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_.-]{0,12}"
    }

    fn value() -> impl Strategy<Value = String> {
        "[A-Za-z0-9:/._+-][A-Za-z0-9:/._+;-]{0,20}"
    }

    fn extra() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::btree_map(token().prop_map(|key| format!("zz{key}")), value(), 0..3)
            .prop_map(|map| map.into_iter().collect())
    }

    fn id_list() -> impl Strategy<Value = IdList> {
        proptest::collection::vec(
            (0u32..512, proptest::option::of(0u32..512))
                .prop_map(|(start, len)| (start, len.map(|len| start + len))),
            1..4,
        )
        .prop_map(IdList)
    }

    prop_compose! {
        fn host_pci()(
            source in prop_oneof![
                proptest::collection::vec("[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}(\\.[0-7])?", 1..3)
                    .prop_map(HostPciSource::Host),
                token().prop_map(HostPciSource::Mapping),
            ],
            pcie in proptest::option::of(any::<bool>()),
            rombar in proptest::option::of(any::<bool>()),
            x_vga in proptest::option::of(any::<bool>()),
            extra in extra(),
        ) -> HostPci {
            HostPci { host_or_mapping: source, pcie, rombar, x_vga, extra }
        }
    }

    prop_compose! {
        fn numa()(
            cpus in id_list(),
            hostnodes in proptest::option::of(id_list()),
            memory in proptest::option::of(any::<u64>()),
            policy in proptest::option::of(prop_oneof![
                Just(NumaPolicy::Preferred), Just(NumaPolicy::Bind), Just(NumaPolicy::Interleave)
            ]),
            extra in extra(),
        ) -> Numa {
            Numa { cpus, hostnodes, memory, policy, extra }
        }
    }

    prop_compose! {
        fn disk()(
            file in value(),
            import_from in proptest::option::of(value()),
            format in proptest::option::of(token()),
            size in proptest::option::of("[0-9]{1,4}[KMGT]"),
            cache in proptest::option::of(token()),
            discard in proptest::option::of(prop_oneof![Just("on".to_owned()), Just("ignore".to_owned())]),
            iothread in proptest::option::of(any::<bool>()),
            ssd in proptest::option::of(any::<bool>()),
            extra in extra(),
        ) -> Disk {
            Disk { file, import_from, format, size, cache, discard, iothread, ssd, extra }
        }
    }

    prop_compose! {
        fn efi_disk()(
            file in value(),
            efitype in proptest::option::of(prop_oneof![Just("2m".to_owned()), Just("4m".to_owned())]),
            pre_enrolled_keys in proptest::option::of(any::<bool>()),
            format in proptest::option::of(token()),
            extra in extra(),
        ) -> EfiDisk {
            EfiDisk { file, efitype, pre_enrolled_keys, format, extra }
        }
    }

    prop_compose! {
        fn net()(
            model in proptest::sample::select(NIC_MODELS).prop_map(str::to_owned),
            macaddr in proptest::option::of("([0-9A-F]{2}:){5}[0-9A-F]{2}"),
            bridge in proptest::option::of("vmbr[0-9]{1,2}"),
            tag in proptest::option::of(1u16..4095),
            firewall in proptest::option::of(any::<bool>()),
            mtu in proptest::option::of(576u16..9001),
            queues in proptest::option::of(0u8..65),
            extra in extra(),
        ) -> Net {
            Net { model, macaddr, bridge, tag, firewall, mtu, queues, extra }
        }
    }

    prop_compose! {
        fn ip_config()(
            ip in proptest::option::of(prop_oneof![
                Just(Ipv4Setting::Dhcp),
                (any::<[u8; 4]>(), 0u8..=32).prop_map(|(octets, prefix)| {
                    Ipv4Setting::Static(Ipv4Network::new(Ipv4Addr::from(octets), prefix).unwrap())
                }),
            ]),
            gw in proptest::option::of(any::<[u8; 4]>().prop_map(Ipv4Addr::from)),
            ip6 in proptest::option::of(prop_oneof![
                Just(Ipv6Setting::Dhcp),
                Just(Ipv6Setting::Auto),
                (any::<[u16; 8]>(), 0u8..=128).prop_map(|(segments, prefix)| {
                    Ipv6Setting::Static(Ipv6Network::new(Ipv6Addr::from(segments), prefix).unwrap())
                }),
            ]),
            gw6 in proptest::option::of(any::<[u16; 8]>().prop_map(Ipv6Addr::from)),
        ) -> IpConfig {
            IpConfig { ip, gw, ip6, gw6 }
        }
    }

    prop_compose! {
        fn cpu()(
            cputype in token(),
            flags in proptest::collection::vec(
                (any::<bool>(), "[a-z0-9_]{1,10}").prop_map(|(enabled, name)| CpuFlag { enabled, name }),
                0..4,
            ),
            hidden in proptest::option::of(any::<bool>()),
            extra in extra(),
        ) -> Cpu {
            Cpu { cputype, flags, hidden, extra }
        }
    }

    prop_compose! {
        fn agent()(
            enabled in any::<bool>(),
            fstrim_cloned_disks in proptest::option::of(any::<bool>()),
            kind in proptest::option::of(prop_oneof![Just("virtio".to_owned()), Just("isa".to_owned())]),
            extra in extra(),
        ) -> Agent {
            Agent { enabled, fstrim_cloned_disks, kind, extra }
        }
    }

    proptest! {
        #[test]
        fn host_pci_round_trips(x in host_pci()) {
            prop_assert_eq!(HostPci::parse(&x.render()).unwrap(), x);
        }

        #[test]
        fn numa_round_trips(x in numa()) {
            prop_assert_eq!(Numa::parse(&x.render()).unwrap(), x);
        }

        #[test]
        fn disk_round_trips(x in disk()) {
            prop_assert_eq!(Disk::parse(&x.render()).unwrap(), x);
        }

        #[test]
        fn efi_disk_round_trips(x in efi_disk()) {
            prop_assert_eq!(EfiDisk::parse(&x.render()).unwrap(), x);
        }

        #[test]
        fn net_round_trips(x in net()) {
            prop_assert_eq!(Net::parse(&x.render()).unwrap(), x);
        }

        #[test]
        fn ip_config_round_trips(x in ip_config()) {
            prop_assert_eq!(IpConfig::parse(&x.render()).unwrap(), x);
        }

        #[test]
        fn cpu_round_trips(x in cpu()) {
            prop_assert_eq!(Cpu::parse(&x.render()).unwrap(), x);
        }

        #[test]
        fn agent_round_trips(x in agent()) {
            prop_assert_eq!(Agent::parse(&x.render()).unwrap(), x);
        }

        #[test]
        fn generic_round_trips(
            default in proptest::option::of(value()),
            entries in proptest::collection::btree_map(token(), value(), 0..5),
        ) {
            let mut p = PropertyString::default();
            if let Some(default) = &default { p.push("zzdefault", default.clone()); }
            for (key, value) in entries { p.push(&key, value); }
            prop_assume!(!p.entries.is_empty());
            let text = p.render(Some("zzdefault"));
            prop_assert_eq!(PropertyString::parse(&text, Some("zzdefault")).unwrap(), p);
        }
    }
}
