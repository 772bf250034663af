//! The VMs a profile asks for (names, addresses, MACs) and the match pass: which existing VM,
//! if any, each of them already is.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::inventory::{ExistingVm, Inventory, cluster_tag};
use crate::profile::model::{NodeGroup, Profile, Role};
use crate::state::State;

use super::PlanError;
use super::addresses::TakenAddresses;

/// A VM the profile asks for (names and addresses decided, placement not yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WantedVm {
    pub name: String,
    pub group: String,
    pub role: Role,
    pub index: u32,
    pub address: IpAddr,
    pub prefix_len: u8,
    /// `net0`'s MAC, as [`plan`] decides it for the same inventory and state.
    pub mac: String,
}

/// The VMs `profile` describes, in plan order, as if none existed yet (every MAC derived).
pub fn wanted_vms(profile: &Profile) -> Result<Vec<WantedVm>, PlanError> {
    let wanted = expand(profile)?;
    wanted_from(profile, wanted, &BTreeMap::new())
}

/// The VMs `profile` describes, in plan order, with the MACs [`plan`] gives them for this inventory and
/// state (existing VMs keep their live MAC): for preparing seeds before planning.
pub fn wanted_vms_observed(
    profile: &Profile,
    inventory: &Inventory,
    state: &State,
) -> Result<Vec<WantedVm>, PlanError> {
    let wanted = expand_observed(profile, inventory, state)?;
    let existing_for = existing_vms(profile, &wanted, inventory, state);
    wanted_from(profile, wanted, &existing_for)
}

pub(super) fn wanted_from(
    profile: &Profile,
    wanted: Vec<Wanted<'_>>,
    existing_for: &BTreeMap<String, &ExistingVm>,
) -> Result<Vec<WantedVm>, PlanError> {
    let mut macs = assign_macs(&profile.cluster.name, &wanted, existing_for);
    Ok(wanted
        .into_iter()
        .map(|want| WantedVm {
            mac: macs.remove(&want.name).unwrap_or_default(),
            name: want.name,
            group: want.group.name.clone(),
            role: want.group.role,
            index: want.index,
            address: want.address,
            prefix_len: profile.network.cidr.prefix(),
        })
        .collect())
}

/// The existing VM (if any) each wanted VM is: the state's VMID when it still carries the name and the
/// cluster tag, else a VM of the cluster with that name.
pub(super) fn existing_vms<'i>(
    profile: &Profile,
    wanted: &[Wanted<'_>],
    inventory: &'i Inventory,
    state: &State,
) -> BTreeMap<String, &'i ExistingVm> {
    let cluster = &profile.cluster.name;
    let tag = cluster_tag(cluster);
    let mut existing_for = BTreeMap::new();
    for want in wanted {
        let from_state = state.vms.get(&want.name).and_then(|record| {
            inventory
                .vm(record.vmid)
                .filter(|vm| vm.name == want.name && vm.has_tag(&tag))
        });
        let found = from_state.or_else(|| {
            inventory
                .cluster_vms(cluster)
                .find(|vm| vm.name == want.name && !vm.template)
        });
        if let Some(vm) = found {
            existing_for.insert(want.name.clone(), vm);
        }
    }
    existing_for
}

/// First octet of the MACs provision derives: locally administered (bit 1) and unicast (bit 0 clear), so
/// they can never be a vendor's address, nor Proxmox's own random ones (`BC:24:11`, Proxmox's OUI).
pub const MAC_FIRST_OCTET: u8 = 0x02;

/// The MAC derived for `vm` of `cluster` (attempt 0; a later attempt only after a collision):
/// `02:` + 5 bytes of SHA-256 over cluster and VM name, upper-case as Proxmox writes MACs.
pub fn derived_mac(cluster: &str, vm: &str, attempt: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"provision-mac\0");
    hasher.update(cluster.as_bytes());
    hasher.update([0]);
    hasher.update(vm.as_bytes());
    if attempt > 0 {
        hasher.update([0]);
        hasher.update(attempt.to_be_bytes());
    }
    let digest = hasher.finalize();
    let mut octets = vec![MAC_FIRST_OCTET];
    octets.extend_from_slice(&digest[..5]);
    octets
        .iter()
        .map(|octet| format!("{octet:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC in a live `net0` (`virtio=BC:24:11:…,bridge=…` or `macaddr=…`), upper-case.
pub fn live_mac(net0: &str) -> Option<String> {
    super::propstrings::net_mac(net0)
}

/// Every wanted VM's `net0` MAC. A VM that exists keeps the MAC its live config has (changing it would
/// rename the guest's interface under its network config, and is no reason to replace a VM); every
/// other VM gets [`derived_mac`], deterministic across runs, re-derived on the rare collision with a MAC
/// already taken in the cluster.
pub(super) fn assign_macs(
    cluster: &str,
    wanted: &[Wanted<'_>],
    existing_for: &BTreeMap<String, &ExistingVm>,
) -> BTreeMap<String, String> {
    let mut macs = BTreeMap::new();
    for want in wanted {
        if let Some(mac) = existing_for
            .get(&want.name)
            .and_then(|vm| vm.config.get("net0"))
            .and_then(|net0| live_mac(net0))
        {
            macs.insert(want.name.clone(), mac);
        }
    }
    for want in wanted {
        if macs.contains_key(&want.name) {
            continue;
        }
        let mac = (0..)
            .map(|attempt| derived_mac(cluster, &want.name, attempt))
            .find(|mac| !macs.values().any(|taken| taken == mac))
            .unwrap_or_default();
        macs.insert(want.name.clone(), mac);
    }
    macs
}

/// One VM the profile asks for, before placement.
pub(super) struct Wanted<'a> {
    pub(super) group: &'a NodeGroup,
    pub(super) index: u32,
    pub(super) name: String,
    pub(super) address: IpAddr,
}

pub(super) fn expand(profile: &Profile) -> Result<Vec<Wanted<'_>>, PlanError> {
    expand_among(profile, &TakenAddresses::default())
}

/// [`expand`] with the addresses the Proxmox cluster already uses (see [`super::addresses`]).
pub(super) fn expand_observed<'p>(
    profile: &'p Profile,
    inventory: &Inventory,
    state: &State,
) -> Result<Vec<Wanted<'p>>, PlanError> {
    let taken = TakenAddresses::observe(&profile.cluster.name, inventory, state);
    expand_among(profile, &taken)
}

fn expand_among<'p>(
    profile: &'p Profile,
    taken: &TakenAddresses,
) -> Result<Vec<Wanted<'p>>, PlanError> {
    let mut wanted = Vec::new();
    for group in &profile.node_groups {
        let names: Vec<String> = (1..=group.count)
            .map(|index| {
                group
                    .name_pattern
                    .replace("{cluster}", &profile.cluster.name)
                    .replace("{group}", &group.name)
                    .replace("{index}", &index.to_string())
            })
            .collect();
        let addresses = group_addresses(group, &names, taken)?;
        if addresses.len() < group.count as usize {
            return Err(PlanError::NotEnoughAddresses {
                group: group.name.clone(),
                needed: group.count,
                given: addresses.len(),
            });
        }
        for ((name, address), index) in names.into_iter().zip(addresses).zip(1..) {
            wanted.push(Wanted {
                group,
                index,
                name,
                address,
            });
        }
    }
    Ok(wanted)
}

pub(super) fn group_addresses(
    group: &NodeGroup,
    names: &[String],
    taken: &TakenAddresses,
) -> Result<Vec<IpAddr>, PlanError> {
    if !group.addresses.is_empty() {
        // Explicit addresses are the user's choice: a new VM never takes one another VM has.
        for (name, address) in names.iter().zip(&group.addresses) {
            if taken.ours.get(name) == Some(address) {
                continue;
            }
            if let Some(user) = taken.others.get(address) {
                return Err(PlanError::AddressTaken {
                    vm: name.clone(),
                    group: group.name.clone(),
                    address: *address,
                    user: user.clone(),
                });
            }
        }
        return Ok(group.addresses.clone());
    }
    let Some(range) = &group.address_range else {
        return Ok(Vec::new());
    };
    let bad = || PlanError::BadAddressRange {
        group: group.name.clone(),
        range: range.clone(),
    };
    let (first, last) = range.split_once('-').ok_or_else(bad)?;
    let first: std::net::Ipv4Addr = first.trim().parse().map_err(|_| bad())?;
    let last: std::net::Ipv4Addr = last.trim().parse().map_err(|_| bad())?;
    let (first, last) = (u32::from(first), u32::from(last));
    if last < first {
        return Err(bad());
    }
    Ok(super::addresses::pick_from_range(names, first, last, taken))
}
