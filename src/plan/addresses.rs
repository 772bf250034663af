//! Addresses in use on the Proxmox cluster, so that clusters side by side never share one.
//!
//! A group with `address_range` takes the first addresses of the range that no other cluster
//! uses: another provision cluster's VMs say theirs in a tag (`provision-ip-…`), any VM made by
//! Proxmox's cloud-init says its in `ipconfig0`. A VM of this cluster that exists keeps the
//! address the state (or its tag) records while it is in the range. A group with explicit
//! `addresses` is refused when a new VM's address is another VM's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::inventory::Inventory;
use crate::inventory::tags::VmTags;
use crate::state::State;

/// Addresses other VMs use, and the ones this cluster's VMs already have.
#[derive(Debug, Default)]
pub(super) struct TakenAddresses {
    /// Address → the VM using it (`name (VMID n)`), for VMs not of this cluster.
    pub(super) others: BTreeMap<IpAddr, String>,
    /// This cluster's VM name → its current address.
    pub(super) ours: BTreeMap<String, IpAddr>,
}

impl TakenAddresses {
    /// From the observed VMs' tags and configs and the state's records.
    pub(super) fn observe(cluster: &str, inventory: &Inventory, state: &State) -> Self {
        let mut taken = TakenAddresses::default();
        if state.cluster.is_empty() || state.cluster == cluster {
            for record in state.vms.values() {
                if let Some(address) = record.address.as_deref().and_then(|a| a.parse().ok()) {
                    taken.ours.insert(record.name.clone(), address);
                }
            }
        }
        for vm in &inventory.vms {
            let tags = VmTags::of(vm);
            let configured = vm
                .config
                .get("ipconfig0")
                .and_then(|value| ipconfig_address(value));
            let address = tags.address.or(configured);
            let Some(address) = address else {
                continue;
            };
            if tags.provision_cluster() == Some(cluster) {
                taken.ours.entry(vm.name.clone()).or_insert(address);
            } else {
                taken
                    .others
                    .entry(address)
                    .or_insert_with(|| format!("{} (VMID {})", vm.name, vm.vmid));
            }
        }
        taken
    }
}

/// `ip=10.0.0.21/24,gw=…` → 10.0.0.21.
fn ipconfig_address(value: &str) -> Option<IpAddr> {
    value
        .split(',')
        .find_map(|part| part.strip_prefix("ip="))
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|address| address.parse().ok())
}

/// `count` addresses for `names` (in order) out of the range `first..=last`: a VM's current
/// address when it is in the range, else the next one nobody uses.
pub(super) fn pick_from_range(
    names: &[String],
    first: u32,
    last: u32,
    taken: &TakenAddresses,
) -> Vec<IpAddr> {
    let in_range = |address: &IpAddr| match address {
        IpAddr::V4(v4) => (first..=last).contains(&u32::from(*v4)),
        IpAddr::V6(_) => false,
    };
    let mut assigned: BTreeSet<IpAddr> = BTreeSet::new();
    let mut kept: BTreeMap<&str, IpAddr> = BTreeMap::new();
    for name in names {
        if let Some(address) = taken.ours.get(name).filter(|a| in_range(a))
            && !taken.others.contains_key(address)
            && assigned.insert(*address)
        {
            kept.insert(name.as_str(), *address);
        }
    }
    let mut candidates = (first..=last)
        .map(|ip| IpAddr::V4(ip.into()))
        .filter(|address| !taken.others.contains_key(address))
        .filter(|address| !taken.ours.values().any(|used| used == address));
    let mut addresses = Vec::with_capacity(names.len());
    for name in names {
        if let Some(address) = kept.get(name.as_str()) {
            addresses.push(*address);
            continue;
        }
        match candidates
            .by_ref()
            .find(|address| !assigned.contains(address))
        {
            Some(address) => {
                assigned.insert(address);
                addresses.push(address);
            }
            None => break,
        }
    }
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_range_skips_other_clusters_and_keeps_our_own() {
        let mut taken = TakenAddresses::default();
        taken.others.insert(v4(11), "other-1 (VMID 100)".to_owned());
        taken.ours.insert("b".to_owned(), v4(14));
        let names = ["a", "b", "c"].map(str::to_owned);
        let first = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 11));
        let last = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 20));
        assert_eq!(
            pick_from_range(&names, first, last, &taken),
            vec![v4(12), v4(14), v4(13)]
        );
        assert_eq!(
            ipconfig_address("ip=10.0.0.21/24,gw=10.0.0.1"),
            Some(v4(21))
        );
    }
}
