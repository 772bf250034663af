//! What a booted guest tells the QEMU guest agent: its addresses (from `ipconfigN` or the NoCloud
//! seed ISO's `network-config`), its hostname and SSH host keys (from the seed's user-data).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::state::{State, Vm, find_volume};
use crate::{GuestBoot, NoCloudSeed, iso9660, propstring};

pub(crate) fn agent_enabled(config: &BTreeMap<String, String>) -> bool {
    config.get("agent").is_some_and(|value| {
        propstring::parse(value).ok().is_some_and(|entries| {
            matches!(
                propstring::get(&entries, "enabled", Some("enabled")),
                Some("1" | "true" | "yes" | "on")
            )
        })
    })
}

/// The NoCloud seed attached as a CD-ROM (`ideN`/`sataN`/`scsiN: local:iso/x.iso,media=cdrom`).
pub(crate) fn seed(state: &State, vm: &Vm) -> Option<NoCloudSeed> {
    vm.config.iter().find_map(|(key, value)| {
        if !(key.starts_with("ide") || key.starts_with("sata") || key.starts_with("scsi")) {
            return None;
        }
        let entries = propstring::parse(value).ok()?;
        let file = propstring::get(&entries, "file", Some("file"))?;
        if !file.contains(":iso/") {
            return None;
        }
        let image = find_volume(state, &vm.node, file)?.data.as_ref()?;
        let read = |name: &str| {
            iso9660::read_file(image, name)
                .ok()
                .flatten()
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        };
        Some(NoCloudSeed {
            user_data: read("user-data")?,
            meta_data: read("meta-data").unwrap_or_default(),
            network_config: read("network-config"),
        })
    })
}

pub(crate) fn boot_info(state: &State, vm: &Vm) -> GuestBoot {
    let seed = seed(state, vm);
    let addresses = addresses(vm, seed.as_ref())
        .into_values()
        .flatten()
        .collect();
    GuestBoot {
        node: vm.node.clone(),
        vmid: vm.vmid,
        name: vm.name(),
        config: vm.config.clone(),
        seed,
        addresses,
    }
}

/// Addresses per guest NIC index: `ipconfigN` wins, then the seed's network-config (v1 or v2,
/// interfaces in order; once applied it stays after the seed is ejected), then a DHCP lease
/// derived from the VM id.
pub(crate) fn addresses(vm: &Vm, seed: Option<&NoCloudSeed>) -> BTreeMap<usize, Vec<(IpAddr, u8)>> {
    let mut result: BTreeMap<usize, Vec<(IpAddr, u8)>> = BTreeMap::new();
    for (key, value) in &vm.config {
        let Some(index) = key
            .strip_prefix("ipconfig")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let Ok(entries) = propstring::parse(value) else {
            continue;
        };
        for name in ["ip", "ip6"] {
            if let Some(cidr) = propstring::get(&entries, name, None)
                && let Some(address) = parse_cidr(cidr)
            {
                result.entry(index).or_default().push(address);
            }
        }
    }
    if result.is_empty()
        && let Some(network) = seed
            .and_then(|s| s.network_config.as_deref())
            .or(vm.guest_network_config.as_deref())
    {
        for (index, addrs) in network_config_addresses(network).into_iter().enumerate() {
            if !addrs.is_empty() {
                result.insert(index, addrs);
            }
        }
    }
    if result.is_empty() && vm.config.contains_key("net0") {
        let host = 20 + (vm.vmid % 200) as u8;
        result.insert(0, vec![(IpAddr::from([192, 168, 122, host]), 24)]);
    }
    result
}

fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = text.split_once('/')?;
    Some((address.parse().ok()?, prefix.parse().ok()?))
}

/// Static addresses per interface, in file order, of a netplan-style v2 or a v1 network-config.
fn network_config_addresses(text: &str) -> Vec<Vec<(IpAddr, u8)>> {
    let Ok(document) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) else {
        return Vec::new();
    };
    let root = document.get("network").unwrap_or(&document);
    let mut interfaces = Vec::new();
    if let Some(ethernets) = root.get("ethernets").and_then(|e| e.as_mapping()) {
        for (_, interface) in ethernets {
            let addrs = interface
                .get("addresses")
                .and_then(|a| a.as_sequence())
                .map(|list| {
                    list.iter()
                        .filter_map(|a| a.as_str().and_then(parse_cidr))
                        .collect()
                })
                .unwrap_or_default();
            interfaces.push(addrs);
        }
    } else if let Some(config) = root.get("config").and_then(|c| c.as_sequence()) {
        for entry in config {
            if entry.get("type").and_then(|t| t.as_str()) != Some("physical") {
                continue;
            }
            let addrs = entry
                .get("subnets")
                .and_then(|s| s.as_sequence())
                .map(|subnets| {
                    subnets
                        .iter()
                        .filter_map(|s| {
                            let address = s.get("address")?.as_str()?;
                            match parse_cidr(address) {
                                Some(cidr) => Some(cidr),
                                None => {
                                    let prefix = s
                                        .get("netmask")
                                        .and_then(|m| m.as_str())
                                        .and_then(netmask_prefix)?;
                                    Some((address.parse().ok()?, prefix))
                                }
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            interfaces.push(addrs);
        }
    }
    interfaces
}

fn netmask_prefix(mask: &str) -> Option<u8> {
    let address: std::net::Ipv4Addr = mask.parse().ok()?;
    Some(u32::from(address).count_ones() as u8)
}

/// `agent/network-get-interfaces` result.
pub(crate) fn interfaces_json(state: &State, vm: &Vm) -> Value {
    let seed = seed(state, vm);
    let addresses = addresses(vm, seed.as_ref());
    let mut result = vec![json!({
        "name": "lo",
        "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [
            {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
            {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128},
        ],
        "statistics": {"rx-bytes": 0, "tx-bytes": 0, "rx-packets": 0, "tx-packets": 0,
                       "rx-errs": 0, "tx-errs": 0, "rx-dropped": 0, "tx-dropped": 0},
    })];
    let nics: Vec<(usize, String)> = vm
        .config
        .iter()
        .filter_map(|(key, value)| {
            let index = key.strip_prefix("net")?.parse::<usize>().ok()?;
            let entries = propstring::parse(value).ok()?;
            let mac = entries.iter().find_map(|(k, v)| {
                (k.is_some() && v.len() == 17 && v.matches(':').count() == 5).then(|| v.clone())
            })?;
            Some((index, mac))
        })
        .collect();
    for (position, (index, mac)) in nics.iter().enumerate() {
        let ips: Vec<Value> = addresses
            .get(index)
            .map(|list| {
                list.iter()
                    .map(|(ip, prefix)| {
                        json!({
                            "ip-address": ip.to_string(),
                            "ip-address-type": if ip.is_ipv4() { "ipv4" } else { "ipv6" },
                            "prefix": prefix,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        result.push(json!({
            "name": format!("eth{position}"),
            "hardware-address": mac.to_lowercase(),
            "ip-addresses": ips,
            "statistics": {"rx-bytes": 1_048_576, "tx-bytes": 524_288, "rx-packets": 900,
                           "tx-packets": 600, "rx-errs": 0, "tx-errs": 0,
                           "rx-dropped": 0, "tx-dropped": 0},
        }));
    }
    json!({ "result": result })
}

/// What `agent/file-read` finds for the files provision reads, derived from the seed.
pub(crate) fn derived_file(state: &State, vm: &Vm, path: &str) -> Option<Vec<u8>> {
    let seed = seed(state, vm);
    match path {
        "/etc/hostname" => {
            let from_seed = seed.as_ref().and_then(|s| {
                yaml_str(&s.meta_data, "local-hostname")
                    .or_else(|| yaml_str(&s.user_data, "hostname"))
            });
            Some(format!("{}\n", from_seed.unwrap_or_else(|| vm.name())).into_bytes())
        }
        "/etc/machine-id" => {
            Some(format!("{:032x}\n", u128::from(vm.vmid) * 0x9e37_79b9).into_bytes())
        }
        _ => {
            let key_type = path
                .strip_prefix("/etc/ssh/ssh_host_")?
                .strip_suffix("_key.pub")?;
            let user_data = seed?.user_data;
            let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&user_data).ok()?;
            let public = document
                .get("ssh_keys")?
                .get(format!("{key_type}_public").as_str())?
                .as_str()?;
            Some(format!("{}\n", public.trim()).into_bytes())
        }
    }
}

fn yaml_str(text: &str, key: &str) -> Option<String> {
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).ok()?;
    document.get(key)?.as_str().map(str::to_owned)
}

/// qemu-server PVE::QemuServer::Cloudinit `cloudinit_userdata`, as `cloudinit/dump?type=user`
/// shows it.
pub(crate) fn cloudinit_user_dump(vm: &Vm) -> String {
    let mut text = format!(
        "#cloud-config\nhostname: {}\nmanage_etc_hosts: true\n",
        vm.name()
    );
    if let Some(domain) = vm.config.get("searchdomain") {
        text.push_str(&format!("fqdn: {}.{domain}\n", vm.name()));
    }
    if let Some(user) = vm.config.get("ciuser") {
        text.push_str(&format!("user: {user}\n"));
    }
    if vm.config.contains_key("cipassword") {
        text.push_str("password: **********\n");
    }
    if let Some(keys) = vm.config.get("sshkeys") {
        let decoded = percent_encoding::percent_decode_str(keys).decode_utf8_lossy();
        text.push_str("ssh_authorized_keys:\n");
        for key in decoded.lines().filter(|l| !l.trim().is_empty()) {
            text.push_str(&format!("  - {key}\n"));
        }
    }
    text.push_str("chpasswd:\n  expire: False\nusers:\n  - default\n");
    let upgrade = vm.config.get("ciupgrade").is_none_or(|v| v == "1");
    text.push_str(&format!("package_upgrade: {upgrade}\n"));
    text
}

fn netmask(prefix: u8) -> String {
    let bits: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    std::net::Ipv4Addr::from(bits).to_string()
}

/// qemu-server `nocloud_network` (network-config version 1) for `cloudinit/dump?type=network`.
pub(crate) fn cloudinit_network_dump(vm: &Vm) -> String {
    let mut text = "version: 1\nconfig:\n".to_owned();
    for (key, value) in &vm.config {
        let Some(index) = key
            .strip_prefix("net")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let entries = propstring::parse(value).unwrap_or_default();
        let mac = entries
            .iter()
            .find(|(k, v)| k.is_some() && v.len() == 17 && v.matches(':').count() == 5)
            .map(|(_, v)| v.to_lowercase())
            .unwrap_or_default();
        text.push_str(&format!(
            "    - type: physical\n      name: eth{index}\n      mac_address: '{mac}'\n      subnets:\n"
        ));
        let ip = vm
            .config
            .get(&format!("ipconfig{index}"))
            .and_then(|v| propstring::parse(v).ok())
            .unwrap_or_default();
        match propstring::get(&ip, "ip", None) {
            Some(cidr) if cidr != "dhcp" => {
                let (address, prefix) = cidr.split_once('/').unwrap_or((cidr, "24"));
                text.push_str(&format!(
                    "      - type: static\n        address: '{address}'\n        netmask: '{}'\n",
                    netmask(prefix.parse().unwrap_or(24))
                ));
                if let Some(gw) = propstring::get(&ip, "gw", None) {
                    text.push_str(&format!("        gateway: '{gw}'\n"));
                }
            }
            Some(_) | None => text.push_str("      - type: dhcp4\n"),
        }
    }
    if let Some(servers) = vm.config.get("nameserver") {
        text.push_str("    - type: nameserver\n      address:\n");
        for server in servers.split([' ', ',', ';']).filter(|s| !s.is_empty()) {
            text.push_str(&format!("      - '{server}'\n"));
        }
        if let Some(domain) = vm.config.get("searchdomain") {
            text.push_str(&format!("      search:\n      - '{domain}'\n"));
        }
    }
    text
}

/// `cloudinit/dump?type=meta`: the instance id changes with the cloud-init settings.
pub(crate) fn cloudinit_meta_dump(vm: &Vm) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for (key, value) in &vm.config {
        if key.starts_with("ipconfig")
            || key.starts_with("net")
            || matches!(
                key.as_str(),
                "ciuser" | "cipassword" | "sshkeys" | "nameserver" | "searchdomain" | "name"
            )
        {
            hasher.update(format!("{key}={value}\n"));
        }
    }
    let digest = hex::encode(hasher.finalize());
    format!("instance-id: {}\n", &digest[..40])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_v2_and_v1_network_config() {
        let v2 = "version: 2\nethernets:\n  eth0:\n    match: {macaddress: 'bc:24:11:00:00:01'}\n    addresses: [10.0.0.21/24]\n    routes: [{to: default, via: 10.0.0.1}]\n";
        assert_eq!(
            network_config_addresses(v2),
            vec![vec![("10.0.0.21".parse().unwrap(), 24)]]
        );
        let v1 = "version: 1\nconfig:\n  - type: physical\n    name: eth0\n    subnets:\n      - type: static\n        address: 10.0.0.22\n        netmask: 255.255.255.0\n";
        assert_eq!(
            network_config_addresses(v1),
            vec![vec![("10.0.0.22".parse().unwrap(), 24)]]
        );
    }
}
