//! Placement of a new (or replaced) VM: the Proxmox node by the profile's policy, free GPUs
//! (local to one NUMA node when pinned), and host cores and hugepages on a NUMA node.

use std::collections::BTreeSet;

use crate::inventory::{Inventory, mapping_paths};
use crate::profile::model::{Placement, Profile};

use super::gpu::{self, Rejection};
use super::ledger::{Ledger, NumaCapacity, Pinning, mib_to_bytes, vcpu_count};
use super::wanted::Wanted;
use super::{PlanError, format_cpulist};

/// Choose node, GPUs and pinning for a new (or replaced) VM.
pub(super) fn place(
    want: &Wanted<'_>,
    profile: &Profile,
    inventory: &Inventory,
    ledger: &mut Ledger,
) -> Result<(String, Vec<String>, Option<Pinning>), PlanError> {
    let group = want.group;
    let eligible: Vec<&String> = profile
        .proxmox
        .nodes
        .iter()
        .filter(|node| group.proxmox_nodes.is_empty() || group.proxmox_nodes.contains(node))
        .collect();
    let mut order: Vec<(usize, &String)> = eligible.iter().copied().enumerate().collect();
    match profile.proxmox.placement {
        Placement::Spread => order.sort_by_key(|(position, node)| {
            (
                ledger
                    .per_group_node
                    .get(&(group.name.clone(), (*node).clone()))
                    .copied()
                    .unwrap_or(0),
                ledger.per_node.get(*node).copied().unwrap_or(0),
                *position,
            )
        }),
        Placement::Pack => {}
    }
    let wants_gpus = group.gpus.as_ref().map_or(0, |g| g.count);
    let filter_text = group
        .gpus
        .as_ref()
        .and_then(|g| {
            g.filter
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| g.mapping.as_ref().map(|m| format!("mapping {m}")))
        })
        .unwrap_or_else(|| "10de:*".to_owned());
    let mut reasons = Vec::new();
    let mut first_gpu_error: Option<Box<PlanError>> = None;
    let mut first_capacity_error: Option<PlanError> = None;
    for (_, node) in order {
        if let Some(reason) = cpu_or_memory_short(want, node, inventory, ledger) {
            reasons.push(format!("{node}: {reason}"));
            continue;
        }
        let memory = mib_to_bytes(group.memory_mib);
        let devices = if wants_gpus > 0 {
            match pick_gpus(want, node, inventory, ledger) {
                Ok(devices) => devices,
                Err((reason, error)) => {
                    reasons.push(format!("{node}: {reason}"));
                    if first_gpu_error.is_none() {
                        first_gpu_error = error;
                    }
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        let pinning = match pin_on_node(want, node, &devices, inventory, ledger) {
            Ok(pinning) => pinning,
            Err(error @ PlanError::MissingTopology { .. }) => return Err(error),
            Err(error) => {
                reasons.push(format!("{node}: {error}"));
                if first_capacity_error.is_none() {
                    first_capacity_error = Some(error);
                }
                continue;
            }
        };
        if group.hugepages.is_none() {
            let promised = ledger.new_memory.entry(node.clone()).or_default();
            *promised = promised.saturating_add(memory);
        }
        return Ok((node.clone(), devices, pinning));
    }
    // A node had the GPUs but not the cores/hugepages: that is the actionable error.
    if let Some(error) = first_capacity_error {
        return Err(error);
    }
    if wants_gpus > 0 {
        // Prefer the most actionable error: IOMMU off / shared group explain why GPUs are missing.
        if let Some(error) = first_gpu_error {
            return Err(*error);
        }
        return Err(PlanError::NotEnoughGpus {
            vm: want.name.clone(),
            group: group.name.clone(),
            needed: wants_gpus,
            filter: filter_text,
            details: reasons.join("; "),
        });
    }
    Err(PlanError::NoNodeFits {
        vm: want.name.clone(),
        group: group.name.clone(),
        details: reasons.join("; "),
    })
}

/// Why `node` cannot take `want` for its vCPUs or memory (offline, too few logical CPUs, not
/// enough memory), if it cannot. Hugepage-backed memory is accounted in the NUMA ledger
/// instead; what leaving VMs release counts, creates there wait for them.
fn cpu_or_memory_short(
    want: &Wanted<'_>,
    node: &str,
    inventory: &Inventory,
    ledger: &Ledger,
) -> Option<String> {
    let group = want.group;
    let Some(node_inventory) = inventory.node(node).filter(|n| n.online) else {
        return Some("offline".to_owned());
    };
    let vcpus = vcpu_count(group);
    if node_inventory.cpus > 0 && vcpus > node_inventory.cpus {
        return Some(format!(
            "{} logical CPUs, {vcpus} vCPUs wanted",
            node_inventory.cpus
        ));
    }
    let memory = mib_to_bytes(group.memory_mib);
    let promised = ledger.new_memory.get(node).copied().unwrap_or(0);
    let released = ledger.released_memory.get(node).copied().unwrap_or(0);
    if group.hugepages.is_none()
        && promised.saturating_add(memory) > node_inventory.memory_free.saturating_add(released)
    {
        return Some(format!(
            "{} MiB memory free, {} MiB already planned",
            node_inventory.memory_free / 1024 / 1024,
            promised / 1024 / 1024
        ));
    }
    None
}

/// Free GPUs for `want` on `node`, or why not (and an error worth showing when nothing fits).
pub(super) fn pick_gpus(
    want: &Wanted<'_>,
    node: &str,
    inventory: &Inventory,
    ledger: &Ledger,
) -> Result<Vec<String>, (String, Option<Box<PlanError>>)> {
    let Some(gpus) = &want.group.gpus else {
        return Ok(Vec::new());
    };
    let Some(node_inventory) = inventory.node(node) else {
        return Err(("not observed".to_owned(), None));
    };
    let (mut passable, rejected) = gpu::candidates(node_inventory, gpus.filter.as_ref());
    if let Some(mapping_id) = &gpus.mapping {
        let Some(mapping) = inventory.mappings.iter().find(|m| &m.id == mapping_id) else {
            return Err((
                format!("mapping {mapping_id} missing"),
                Some(Box::new(PlanError::UnknownMapping {
                    group: want.group.name.clone(),
                    mapping: mapping_id.clone(),
                })),
            ));
        };
        let paths: BTreeSet<String> = mapping_paths(mapping)
            .into_iter()
            .filter(|(n, _)| n == node)
            .map(|(_, path)| path)
            .collect();
        passable.retain(|candidate| paths.contains(&candidate.device));
    }
    let mut free: Vec<&gpu::GpuCandidate> = passable
        .iter()
        .filter(|c| {
            !ledger
                .used_devices
                .contains_key(&(node.to_owned(), c.device.clone()))
        })
        .collect();
    // The VM's own former devices first, then devices nobody held, then devices other leaving
    // VMs release (stable: device order within each).
    free.sort_by_key(|c| {
        match ledger
            .released_devices
            .get(&(node.to_owned(), c.device.clone()))
        {
            Some(owner) if *owner == want.name => 0,
            None => 1,
            Some(_) => 2,
        }
    });
    let needed = gpus.count as usize;
    // With NUMA pinning, prefer GPUs that share one NUMA node.
    let mut chosen: Vec<String> = Vec::new();
    if want.group.numa_pinning
        && let Some(numa) = ledger.numa.get(node)
    {
        for capacity in numa {
            let local: Vec<String> = free
                .iter()
                .filter(|c| capacity.has_device(&c.device))
                .map(|c| c.device.clone())
                .collect();
            if local.len() >= needed {
                chosen = local.into_iter().take(needed).collect();
                break;
            }
        }
    }
    if chosen.is_empty() && free.len() >= needed {
        chosen = free.iter().take(needed).map(|c| c.device.clone()).collect();
    }
    if chosen.len() == needed {
        return Ok(chosen);
    }
    let error = rejected.first().map(|(device, rejection)| match rejection {
        Rejection::IommuOff => PlanError::IommuOff {
            node: node.to_owned(),
            device: device.clone(),
        },
        Rejection::SharedGroup { group, others } => PlanError::SharedIommuGroup {
            node: node.to_owned(),
            device: device.clone(),
            group: *group,
            others: others.join(", "),
        },
    });
    let mut reason = format!("{} free of {} passable GPUs", free.len(), passable.len());
    if !rejected.is_empty() {
        reason.push_str(&format!(" ({} not passable)", rejected.len()));
    }
    // Only explain with IOMMU/group errors when those devices would have made the difference.
    let error = error
        .filter(|_| free.len().saturating_add(rejected.len()) >= needed)
        .map(Box::new);
    Err((reason, error))
}

/// Host cores and NUMA node for a VM on `node` (only with `numa_pinning`), charging hugepages.
pub(super) fn pin_on_node(
    want: &Wanted<'_>,
    node: &str,
    devices: &[String],
    inventory: &Inventory,
    ledger: &mut Ledger,
) -> Result<Option<Pinning>, PlanError> {
    let group = want.group;
    if !group.numa_pinning && group.hugepages.is_none() {
        return Ok(None);
    }
    let Some(numa) = ledger.numa.get_mut(node) else {
        if group.numa_pinning {
            return Err(PlanError::MissingTopology {
                group: group.name.clone(),
                node: node.to_owned(),
            });
        }
        // Hugepages without topology cannot be checked; Proxmox refuses at start if short.
        let _ = inventory;
        return Ok(None);
    };
    let vcpus = usize::try_from(vcpu_count(group)).unwrap_or(usize::MAX);
    let pages = group
        .hugepages
        .map(|size| (u64::from(size), group.memory_mib.div_ceil(u64::from(size))));
    let fits = |capacity: &NumaCapacity| -> bool {
        let cpus_ok = !group.numa_pinning || capacity.free_cpus.len() >= vcpus;
        let pages_ok = match pages {
            Some((size, needed)) => capacity
                .free_pages(size as u32)
                .is_none_or(|free| free >= needed),
            None => true,
        };
        cpus_ok && pages_ok
    };
    // The NUMA node local to the GPUs first, then the first with capacity.
    let local = numa
        .iter()
        .position(|c| !devices.is_empty() && devices.iter().all(|d| c.has_device(d)) && fits(c));
    let chosen = local.or_else(|| numa.iter().position(fits));
    let Some(index) = chosen else {
        let best = numa
            .iter()
            .max_by_key(|c| c.free_cpus.len())
            .map(|c| (c.id, c.free_cpus.len()));
        if let Some((size, needed)) = pages {
            let short = numa
                .iter()
                .find(|c| c.free_pages(size as u32).is_some_and(|free| free < needed));
            if let Some(capacity) = short {
                return Err(PlanError::HugepagesDoNotFit {
                    vm: want.name.clone(),
                    node: node.to_owned(),
                    numa: capacity.id,
                    needed,
                    size_mib: size as u32,
                    free: capacity.free_pages(size as u32).unwrap_or(0),
                });
            }
        }
        return Err(PlanError::CoresDoNotFit {
            vm: want.name.clone(),
            node: node.to_owned(),
            needed: vcpus,
            free: best.map_or(0, |(_, free)| free),
        });
    };
    let capacity = &mut numa[index];
    if let Some((size, needed)) = pages {
        capacity.take_pages(size as u32, needed);
    }
    if !group.numa_pinning {
        return Ok(None);
    }
    let cpus: BTreeSet<u32> = capacity.free_cpus.iter().take(vcpus).copied().collect();
    capacity.free_cpus.retain(|cpu| !cpus.contains(cpu));
    Ok(Some(Pinning {
        affinity: format_cpulist(&cpus),
        numa_node: capacity.id,
    }))
}
