//! The Proxmox property strings the planner sends and reads (`hostpciN`, `numa0`, `net0`,
//! disks, `cpu`, `ipconfig0`), built and parsed with the typed formats of
//! [`crate::pve::propstr`]. Where provision has always sent keys in another order than the
//! typed format prints them, the order is kept here: plans, their snapshots and the state's
//! params hashes stay the same.

use std::net::IpAddr;

use crate::pve::propstr::{
    Cpu, CpuFlag, Disk, EfiDisk, HostPci, HostPciSource, IdList, IpConfig, Ipv4Setting,
    Ipv6Setting, Net, Numa, NumaPolicy, PropertyFormat, PropertyString,
};

/// `hostpciN` for a whole device by address (root@pam only): `0000:41:00,pcie=1`.
pub(super) fn hostpci_device(device: &str) -> String {
    HostPci::host(device).render()
}

/// `hostpciN` through a PCI resource mapping: `mapping=a100-0,pcie=1`.
pub(super) fn hostpci_mapping(id: &str) -> String {
    HostPci::mapping(id).render()
}

/// `hostpciN` for a target as [`hostpci_target`] names it (`0000:41:00` or `mapping=id`).
pub(super) fn hostpci_for_target(target: &str) -> String {
    match target.strip_prefix("mapping=") {
        Some(id) => hostpci_mapping(id),
        None => hostpci_device(target),
    }
}

/// What a live `hostpciN` value passes through: the whole device (`0000:41:00`) or
/// `mapping=<id>`, options dropped; `None` when it is not a valid `hostpci` string.
pub(super) fn hostpci_target(value: &str) -> Option<String> {
    match HostPci::parse(value).ok()?.host_or_mapping {
        HostPciSource::Mapping(id) => Some(format!("mapping={id}")),
        HostPciSource::Host(ids) => Some(crate::inventory::whole_device(&ids.join(";"))),
    }
}

/// `numa0` binding all vCPUs and the memory to one host NUMA node:
/// `cpus=0-15,hostnodes=1,memory=131072,policy=bind`.
pub(super) fn numa_binding(vcpus: u64, host_node: u32, memory_mib: u64) -> String {
    let last = u32::try_from(vcpus.saturating_sub(1)).unwrap_or(u32::MAX);
    Numa {
        cpus: IdList(vec![(0, Some(last))]),
        hostnodes: Some(IdList(vec![(host_node, None)])),
        memory: Some(memory_mib),
        policy: Some(NumaPolicy::Bind),
        extra: Vec::new(),
    }
    .render()
}

/// The one host NUMA node a live `numa0` binds to (`hostnodes=1`); `None` for several or none.
pub(super) fn numa_host_node(numa0: &str) -> Option<u32> {
    match Numa::parse(numa0).ok()?.hostnodes?.0.as_slice() {
        [(node, None)] => Some(*node),
        _ => None,
    }
}

/// `net0`: a virtio NIC with its MAC as the model key's value (`virtio=02:…,bridge=vmbr0`,
/// as qemu-server prints it), then VLAN tag and MTU when set.
pub(super) fn net_virtio(mac: &str, bridge: &str, vlan: Option<u16>, mtu: Option<u16>) -> String {
    let net = Net {
        model: "virtio".to_owned(),
        macaddr: Some(mac.to_owned()),
        bridge: Some(bridge.to_owned()),
        tag: vlan,
        firewall: None,
        mtu,
        queues: None,
        extra: Vec::new(),
    };
    let mut typed = net.to_property_string();
    let model = typed.take("model").unwrap_or_default();
    let mut shorthand = PropertyString::default();
    match typed.take("macaddr") {
        Some(mac) => shorthand.push(&model, mac),
        None => shorthand.push("model", model),
    }
    shorthand.entries.extend(typed.entries);
    shorthand.render(Some("model"))
}

/// The MAC of a live `net0` (`virtio=BC:24:11:…,bridge=…` or `model=…,macaddr=…`), upper-case;
/// `None` without a well-formed one.
pub(super) fn net_mac(net0: &str) -> Option<String> {
    let mac = Net::parse(net0).ok()?.macaddr?;
    let well_formed = mac.len() == 17
        && mac
            .split(':')
            .all(|octet| octet.len() == 2 && octet.bytes().all(|b| b.is_ascii_hexdigit()));
    well_formed.then(|| mac.to_ascii_uppercase())
}

/// A SCSI disk on `file` (`local-lvm:0` with `import_from`, or `local-lvm:100`), with
/// iothread, discard and SSD emulation, in the order provision has always sent them.
pub(super) fn scsi_disk(file: String, import_from: Option<&str>) -> String {
    let disk = Disk {
        import_from: import_from.map(str::to_owned),
        discard: Some("on".to_owned()),
        iothread: Some(true),
        ssd: Some(true),
        ..Disk::new(file)
    };
    let mut typed = disk.to_property_string();
    // `iothread=1,discard=on,ssd=1`: discard after iothread.
    if let Some(discard) = typed.take("discard") {
        let at = typed
            .entries
            .iter()
            .position(|(key, _)| key == "iothread")
            .map_or(typed.entries.len(), |position| position + 1);
        typed.entries.insert(at, ("discard".to_owned(), discard));
    }
    typed.render(Some("file"))
}

/// `efidisk0`: a fresh 4m OVMF vars disk without pre-enrolled keys.
pub(super) fn efi_disk(storage: &str) -> String {
    EfiDisk {
        file: format!("{storage}:1"),
        efitype: Some("4m".to_owned()),
        pre_enrolled_keys: Some(false),
        format: None,
        extra: Vec::new(),
    }
    .render()
}

/// `cpu`: the type and the profile's flags (`+pdpe1gb`; a bare name means `+`).
pub(super) fn cpu(cputype: &str, flags: &[String]) -> String {
    Cpu {
        cputype: cputype.to_owned(),
        flags: flags
            .iter()
            .map(|flag| match flag.strip_prefix('-') {
                Some(name) => CpuFlag {
                    enabled: false,
                    name: name.to_owned(),
                },
                None => CpuFlag {
                    enabled: true,
                    name: flag.strip_prefix('+').unwrap_or(flag).to_owned(),
                },
            })
            .collect(),
        hidden: None,
        extra: Vec::new(),
    }
    .render()
}

/// `ipconfig0`: the static address with its prefix, and the gateway.
pub(super) fn ip_config(address: IpAddr, prefix_len: u8, gateway: IpAddr) -> Option<String> {
    let mut config = IpConfig {
        ip: None,
        gw: None,
        ip6: None,
        gw6: None,
    };
    match address {
        IpAddr::V4(address) => {
            config.ip = Some(Ipv4Setting::Static(
                ipnetwork::Ipv4Network::new(address, prefix_len).ok()?,
            ));
        }
        IpAddr::V6(address) => {
            config.ip6 = Some(Ipv6Setting::Static(
                ipnetwork::Ipv6Network::new(address, prefix_len).ok()?,
            ));
        }
    }
    match gateway {
        IpAddr::V4(gateway) => config.gw = Some(gateway),
        IpAddr::V6(gateway) => config.gw6 = Some(gateway),
    }
    Some(config.render())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn builds_what_provision_has_always_sent() {
        assert_eq!(hostpci_device("0000:41:00"), "0000:41:00,pcie=1");
        assert_eq!(
            hostpci_for_target("mapping=a100-0"),
            "mapping=a100-0,pcie=1"
        );
        assert_eq!(
            numa_binding(16, 1, 131072),
            "cpus=0-15,hostnodes=1,memory=131072,policy=bind"
        );
        assert_eq!(
            net_virtio("02:AA:BB:CC:DD:EE", "vmbr0", Some(20), Some(9000)),
            "virtio=02:AA:BB:CC:DD:EE,bridge=vmbr0,tag=20,mtu=9000"
        );
        assert_eq!(
            scsi_disk("local-lvm:0".into(), Some("local:import/x.qcow2")),
            "local-lvm:0,import-from=local:import/x.qcow2,iothread=1,discard=on,ssd=1"
        );
        assert_eq!(
            scsi_disk("local-lvm:100".into(), None),
            "local-lvm:100,iothread=1,discard=on,ssd=1"
        );
        assert_eq!(
            efi_disk("local-lvm"),
            "local-lvm:1,efitype=4m,pre-enrolled-keys=0"
        );
        assert_eq!(
            cpu("host", &["+pdpe1gb".into(), "aes".into()]),
            "host,flags=+pdpe1gb;+aes"
        );
        assert_eq!(
            ip_config(
                "10.0.0.21".parse().unwrap(),
                24,
                "10.0.0.1".parse().unwrap()
            )
            .unwrap(),
            "ip=10.0.0.21/24,gw=10.0.0.1"
        );
    }

    #[test]
    fn parses_what_proxmox_prints() {
        assert_eq!(
            hostpci_target("0000:41:00.0,pcie=1,x-vga=1").as_deref(),
            Some("0000:41:00")
        );
        assert_eq!(
            hostpci_target("mapping=a100-0,pcie=1").as_deref(),
            Some("mapping=a100-0")
        );
        assert_eq!(
            numa_host_node("cpus=0-15,hostnodes=1,memory=1024,policy=bind"),
            Some(1)
        );
        assert_eq!(numa_host_node("cpus=0-15,hostnodes=0-1"), None);
        assert_eq!(
            net_mac("virtio=bc:24:11:aa:bb:cc,bridge=vmbr0").as_deref(),
            Some("BC:24:11:AA:BB:CC")
        );
        assert_eq!(
            net_mac("model=e1000,macaddr=02:00:00:00:00:01").as_deref(),
            Some("02:00:00:00:00:01")
        );
        assert_eq!(net_mac("virtio,bridge=vmbr0"), None);
    }
}
