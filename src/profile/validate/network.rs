//! The VM network: CIDR, gateway, bridge, VLAN, MTU, and every node address being inside it and
//! used once.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::formats::{is_dns_subdomain, is_interface_name};
use super::{Checker, path};
use crate::profile::model::Profile;

impl Checker {
    pub(super) fn network(&mut self, profile: &Profile) {
        let network = &profile.network;
        let cidr = network.cidr;
        let usable = match cidr {
            IpNetwork::V4(v4) => v4.prefix() <= 30,
            IpNetwork::V6(v6) => v6.prefix() <= 126,
        };
        if !usable {
            self.error(
                path(&["network", "cidr"]),
                format!("network {cidr} is too small for a gateway and nodes"),
                "use a prefix of /30 or shorter, e.g. 10.0.0.0/24",
            );
        }
        if cidr.ip() != cidr.network() {
            self.warning(
                path(&["network", "cidr"]),
                format!(
                    "network.cidr {cidr} has host bits set; the network is {}/{}",
                    cidr.network(),
                    cidr.prefix()
                ),
                "write the network address, e.g. 10.0.0.0/24",
            );
        }
        let gateway = network.gateway;
        if !cidr.contains(gateway) {
            self.error(
                path(&["network", "gateway"]),
                format!("gateway {gateway} is outside network.cidr {cidr}"),
                "the gateway must be reachable on the VM network; use an address inside network.cidr",
            );
        } else if gateway == cidr.network() || is_broadcast(cidr, gateway) {
            self.error(
                path(&["network", "gateway"]),
                format!("gateway {gateway} is the network or broadcast address of {cidr}"),
                "use the router's address, usually .1",
            );
        }
        if let Some(domain) = &network.search_domain
            && !is_dns_subdomain(domain)
        {
            self.error(
                path(&["network", "search_domain"]),
                format!("search domain `{domain}` is not a DNS name"),
                "write a lowercase DNS name such as lab.example.com",
            );
        }
        if !is_interface_name(&network.bridge) {
            self.error(
                path(&["network", "bridge"]),
                format!("bridge `{}` is not a Linux interface name", network.bridge),
                "use the Proxmox bridge name, e.g. vmbr0 (at most 15 characters)",
            );
        }
        if let Some(vlan) = network.vlan
            && !(1..=4094).contains(&vlan)
        {
            self.error(
                path(&["network", "vlan"]),
                format!("VLAN tag {vlan} is outside 1..4094"),
                "use a VLAN id between 1 and 4094, or remove `vlan` for an untagged network",
            );
        }
        if let Some(mtu) = network.mtu
            && !(576..=9216).contains(&mtu)
        {
            self.error(
                path(&["network", "mtu"]),
                format!("MTU {mtu} is outside 576..9216"),
                "use 1500 for ordinary Ethernet or up to 9000 for jumbo frames",
            );
        }
    }

    pub(super) fn addresses(&mut self, profile: &Profile) {
        let cidr = profile.network.cidr;
        let mut owner: BTreeMap<IpAddr, (String, u32)> = BTreeMap::new();
        for (group_index, group) in profile.node_groups.iter().enumerate() {
            let group_path = path(&["node_groups"]).index(group_index);
            let Ok(addresses) = group.address_iter() else {
                continue;
            };
            let explicit = group.address_range.is_none();
            for (position, address) in addresses.enumerate() {
                let member = u32::try_from(position)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1);
                let address_path = if explicit {
                    group_path.key("addresses").index(position)
                } else {
                    group_path.key("address_range")
                };
                if explicit && !cidr.contains(address) {
                    self.error(
                        address_path,
                        format!("address {address} is outside network.cidr {cidr}"),
                        "node addresses must be inside network.cidr",
                    );
                    continue;
                }
                if let Some(what) = reserved_role(profile, address) {
                    self.error(
                        address_path,
                        format!("address {address} is the {what}"),
                        "pick addresses no other host or role uses",
                    );
                    continue;
                }
                if let Some((other_group, other_member)) = owner.get(&address) {
                    self.error(
                        address_path,
                        format!("address {address} is also given to {other_group} #{other_member}"),
                        "every VM needs its own address",
                    );
                    continue;
                }
                owner.insert(address, (group.name.clone(), member));
            }
        }
    }
}

/// What an address is already used for (gateway, VIP, NFS server, network or broadcast address).
pub(super) fn reserved_role(profile: &Profile, address: IpAddr) -> Option<&'static str> {
    let cidr = profile.network.cidr;
    if address == profile.network.gateway {
        Some("gateway")
    } else if profile.cluster.api_vip == Some(address) {
        Some("API VIP")
    } else if profile
        .storage
        .nfs
        .as_ref()
        .is_some_and(|nfs| nfs.server == address)
    {
        Some("NFS server")
    } else if cidr.is_ipv4() && address == cidr.network() {
        Some("network address")
    } else if is_broadcast(cidr, address) {
        Some("broadcast address")
    } else {
        None
    }
}

pub(super) fn is_broadcast(cidr: IpNetwork, address: IpAddr) -> bool {
    match cidr {
        IpNetwork::V4(v4) => IpAddr::V4(v4.broadcast()) == address,
        IpNetwork::V6(_) => false,
    }
}

pub(super) fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}
