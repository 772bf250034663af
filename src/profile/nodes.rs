//! Derived views of a [`Profile`] that later phases share: planned node names, roles and addresses.

use std::net::IpAddr;

use serde::Serialize;

use super::model::{NodeGroup, Profile, Role};

/// One VM the profile asks for, in profile order (groups as written, index 1..=count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedNode {
    /// The node group's name.
    pub group: String,
    /// 1-based index inside the group.
    pub index: u32,
    /// VM name and Kubernetes node name (`name_pattern` expanded).
    pub name: String,
    pub role: Role,
    pub address: IpAddr,
}

impl Profile {
    /// Every planned node, servers and agents in profile order. On a validated profile each group
    /// yields exactly `count` nodes; on an invalid one, groups whose addresses cannot be worked
    /// out yield fewer.
    pub fn nodes(&self) -> Vec<PlannedNode> {
        let mut nodes = Vec::new();
        for group in &self.node_groups {
            let addresses = group.planned_addresses().unwrap_or_default();
            for (position, address) in addresses.into_iter().enumerate() {
                let index = u32::try_from(position)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1);
                nodes.push(PlannedNode {
                    group: group.name.clone(),
                    index,
                    name: group.vm_name(&self.cluster.name, index),
                    role: group.role,
                    address,
                });
            }
        }
        nodes
    }

    /// Planned server (control-plane) nodes; the first one initialises the cluster.
    pub fn servers(&self) -> Vec<PlannedNode> {
        self.nodes()
            .into_iter()
            .filter(|node| node.role == Role::Server)
            .collect()
    }

    /// Planned agent (worker) nodes.
    pub fn agents(&self) -> Vec<PlannedNode> {
        self.nodes()
            .into_iter()
            .filter(|node| node.role == Role::Agent)
            .collect()
    }

    /// Node groups with role `server`.
    pub fn server_groups(&self) -> impl Iterator<Item = &NodeGroup> {
        self.node_groups
            .iter()
            .filter(|group| group.role == Role::Server)
    }

    /// Node groups with role `agent`.
    pub fn agent_groups(&self) -> impl Iterator<Item = &NodeGroup> {
        self.node_groups
            .iter()
            .filter(|group| group.role == Role::Agent)
    }

    /// The node group called `name`.
    pub fn group(&self, name: &str) -> Option<&NodeGroup> {
        self.node_groups.iter().find(|group| group.name == name)
    }

    /// Prefix length of `network.cidr` (e.g. 24), used in static address configuration.
    pub fn prefix_len(&self) -> u8 {
        self.network.cidr.prefix()
    }

    /// Total number of VMs.
    pub fn vm_count(&self) -> u64 {
        self.node_groups
            .iter()
            .map(|group| u64::from(group.count))
            .sum()
    }

    /// Total number of server VMs (must be odd).
    pub fn server_count(&self) -> u64 {
        self.server_groups()
            .map(|group| u64::from(group.count))
            .sum()
    }

    /// Total number of GPUs passed through, over all VMs.
    pub fn gpu_count(&self) -> u64 {
        self.node_groups
            .iter()
            .map(|group| u64::from(group.count) * u64::from(group.gpus_per_vm()))
            .sum()
    }
}

impl NodeGroup {
    /// The VM name of member `index` (1-based): `name_pattern` with `{cluster}`, `{group}` and
    /// `{index}` replaced.
    pub fn vm_name(&self, cluster: &str, index: u32) -> String {
        self.name_pattern
            .replace("{cluster}", cluster)
            .replace("{group}", &self.name)
            .replace("{index}", &index.to_string())
    }

    /// GPUs passed through to each VM of this group.
    pub fn gpus_per_vm(&self) -> u32 {
        self.gpus.as_ref().map_or(0, |gpus| gpus.count)
    }

    /// The addresses of the group's VMs in index order: `addresses` as written, or the first
    /// `count` addresses of `address_range`. Refuses groups above the VM bound instead of
    /// materialising billions of addresses.
    pub fn planned_addresses(&self) -> Result<Vec<IpAddr>, String> {
        Ok(self.address_iter()?.collect())
    }

    /// [`NodeGroup::planned_addresses`] without collecting them; at most
    /// [`MAX_VMS`](super::validate::MAX_VMS) addresses.
    pub fn address_iter(&self) -> Result<Box<dyn Iterator<Item = IpAddr> + '_>, String> {
        if u64::from(self.count) > super::validate::MAX_VMS {
            return Err(format!(
                "count {} is above the limit of {} VMs per group",
                self.count,
                super::validate::MAX_VMS
            ));
        }
        match (&self.address_range, self.addresses.is_empty()) {
            (None, false) => Ok(Box::new(self.addresses.iter().copied())),
            (Some(range), true) => {
                let (first, last) = parse_address_range(range)?;
                let wanted = u128::from(self.count);
                let available = address_number(last) - address_number(first) + 1;
                if available < wanted {
                    return Err(format!(
                        "address_range `{range}` holds {available} addresses but count is {}",
                        self.count
                    ));
                }
                Ok(Box::new((0..wanted).map(move |offset| {
                    address_from_number(first, address_number(first) + offset)
                })))
            }
            (Some(_), false) => Err("both `addresses` and `address_range` are set".to_owned()),
            (None, true) => Err("neither `addresses` nor `address_range` is set".to_owned()),
        }
    }
}

/// Parses an inclusive range `10.0.0.21-10.0.0.29` (both ends of the same family, first ≤ last).
pub fn parse_address_range(range: &str) -> Result<(IpAddr, IpAddr), String> {
    let Some((first, last)) = range.split_once('-') else {
        return Err(format!(
            "`{range}` is not a range; write FIRST-LAST, e.g. 10.0.0.21-10.0.0.29"
        ));
    };
    let parse = |text: &str| {
        text.trim()
            .parse::<IpAddr>()
            .map_err(|_| format!("`{}` in address_range is not an IP address", text.trim()))
    };
    let (first, last) = (parse(first)?, parse(last)?);
    if first.is_ipv4() != last.is_ipv4() {
        return Err(format!(
            "address_range `{range}` mixes IPv4 and IPv6 addresses"
        ));
    }
    if address_number(first) > address_number(last) {
        return Err(format!("address_range `{range}` ends before it starts"));
    }
    Ok((first, last))
}

/// An address as a number (IPv4 in the low 32 bits).
pub fn address_number(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn address_from_number(family: IpAddr, number: u128) -> IpAddr {
    match family {
        IpAddr::V4(_) => IpAddr::V4(u32::try_from(number).unwrap_or(u32::MAX).into()),
        IpAddr::V6(_) => IpAddr::V6(number.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_count_with_an_ipv6_range_is_refused_without_allocating() {
        let group: NodeGroup = toml::from_str(
            r#"
name = "g"
role = "agent"
count = 4294967295
cores = 1
memory_mib = 1024
address_range = "fd00::1-fd00::ffff:ffff:ffff"
disks = { os_gb = 20 }
"#,
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let error = group.planned_addresses().err().unwrap_or_default();
        assert!(error.contains("above the limit"), "{error}");
    }

    #[test]
    fn ranges_parse_and_refuse_reversed_ends() {
        assert!(parse_address_range("10.0.0.21-10.0.0.29").is_ok());
        assert!(parse_address_range("10.0.0.29-10.0.0.21").is_err());
        assert!(parse_address_range("10.0.0.21").is_err());
        assert!(parse_address_range("10.0.0.21-fe80::1").is_err());
    }
}
