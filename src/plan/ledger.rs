//! The ledger: what each Proxmox node still has free (GPUs, host cores and hugepages per NUMA
//! node, memory, VMIDs) while VMs are placed, and the checks on VMs that stay where they are.

use std::collections::{BTreeMap, BTreeSet};

use crate::inventory::{ExistingVm, Inventory, mapping_paths};
use crate::profile::model::{NodeGroup, Profile};
use crate::state::{State, VmPhase};

use super::converge::Leaving;
use super::wanted::Wanted;
use super::{PlanError, PlanInput, parse_cpulist, propstrings};

/// NUMA capacity left on one host NUMA node.
#[derive(Debug, Clone)]
pub(super) struct NumaCapacity {
    pub(super) id: u32,
    /// Every CPU the topology lists for this NUMA node.
    pub(super) all_cpus: BTreeSet<u32>,
    pub(super) free_cpus: BTreeSet<u32>,
    pub(super) hugepages_1g: Option<u64>,
    pub(super) hugepages_2m: Option<u64>,
    pub(super) pci: Vec<String>,
}

impl NumaCapacity {
    pub(super) fn has_device(&self, device: &str) -> bool {
        self.pci
            .iter()
            .any(|prefix| device == prefix || device.starts_with(&format!("{prefix}:")))
    }

    pub(super) fn free_pages(&self, size_mib: u32) -> Option<u64> {
        if size_mib == 1024 {
            self.hugepages_1g
        } else {
            self.hugepages_2m
        }
    }

    pub(super) fn take_pages(&mut self, size_mib: u32, pages: u64) {
        let slot = if size_mib == 1024 {
            &mut self.hugepages_1g
        } else {
            &mut self.hugepages_2m
        };
        if let Some(free) = slot {
            *free = free.saturating_sub(pages);
        }
    }
}

/// Mutable bookkeeping while placing VMs.
pub(super) struct Ledger {
    /// (node, device) → vmid using it.
    pub(super) used_devices: BTreeMap<(String, String), u32>,
    /// (node, device) → name of the VM that goes away and frees it.
    pub(super) released_devices: BTreeMap<(String, String), String>,
    pub(super) numa: BTreeMap<String, Vec<NumaCapacity>>,
    /// VMs placed per node, per (group, node).
    pub(super) per_node: BTreeMap<String, usize>,
    pub(super) per_group_node: BTreeMap<(String, String), usize>,
    /// Memory (bytes) promised per node: to new VMs and to the growth of kept ones.
    pub(super) new_memory: BTreeMap<String, u64>,
    /// The part of `new_memory` promised to kept VMs (they may change before anything leaves).
    pub(super) kept_memory: BTreeMap<String, u64>,
    /// Memory (bytes) of running VMs that go away, per node.
    pub(super) released_memory: BTreeMap<String, u64>,
    /// Hugepages charged to existing VMs: vmid → (host NUMA node, page size MiB, pages).
    pub(super) hugepage_charges: BTreeMap<u32, (u32, u32, u64)>,
    pub(super) used_vmids: BTreeSet<u32>,
}

pub(super) struct Pinning {
    pub(super) affinity: String,
    pub(super) numa_node: u32,
}

impl Ledger {
    /// The ledger pass: what is taken and free before anything is placed. Devices, memory and
    /// cores of leaving VMs are released (devices remember who released them), the topology's
    /// NUMA capacity is charged with the host cores pinned by staying VMs and the hugepages of
    /// our own pinned VMs, and kept GPUs stay with their VM.
    pub(super) fn observe(
        input: &PlanInput<'_>,
        wanted: &[Wanted<'_>],
        existing_for: &BTreeMap<String, &ExistingVm>,
        keep_gpus: &BTreeMap<String, Vec<String>>,
        leaving: &Leaving<'_>,
    ) -> Result<Self, PlanError> {
        let PlanInput {
            inventory, state, ..
        } = *input;
        let mut ledger = Ledger {
            used_devices: inventory.used_devices(),
            released_devices: BTreeMap::new(),
            numa: BTreeMap::new(),
            per_node: BTreeMap::new(),
            per_group_node: BTreeMap::new(),
            new_memory: BTreeMap::new(),
            kept_memory: BTreeMap::new(),
            released_memory: BTreeMap::new(),
            hugepage_charges: BTreeMap::new(),
            used_vmids: inventory.used_vmids(),
        };
        for (vmid, (name, vm)) in leaving {
            let released: Vec<(String, String)> = ledger
                .used_devices
                .iter()
                .filter(|(_, user)| *user == vmid)
                .map(|(key, _)| key.clone())
                .collect();
            for key in released {
                ledger.used_devices.remove(&key);
                ledger.released_devices.insert(key, name.clone());
            }
            if vm.status == "running" && !vm.config.contains_key("hugepages") {
                let released = ledger.released_memory.entry(vm.node.clone()).or_default();
                *released = released.saturating_add(config_memory_bytes(vm));
            }
        }
        for topology in &inventory.topology {
            let mut nodes = Vec::new();
            for numa_node in &topology.numa_nodes {
                let cpus =
                    parse_cpulist(&numa_node.cpus).ok_or_else(|| PlanError::BadTopology {
                        node: topology.node.clone(),
                        cpus: numa_node.cpus.clone(),
                    })?;
                nodes.push(NumaCapacity {
                    id: numa_node.id,
                    all_cpus: cpus.clone(),
                    free_cpus: cpus,
                    hugepages_1g: numa_node.hugepages_1g.map(u64::from),
                    hugepages_2m: numa_node.hugepages_2m.map(u64::from),
                    pci: numa_node.pci_devices.clone(),
                });
            }
            ledger.numa.insert(topology.node.clone(), nodes);
        }
        // State intents reserve their VMIDs even when the VM does not exist (yet).
        ledger.used_vmids.extend(state.vmids());
        // Host cores pinned by any VM on our nodes are taken (except by VMs that go away).
        for vm in &inventory.vms {
            if leaving.contains_key(&vm.vmid) {
                continue;
            }
            if let (Some(affinity), Some(numa)) =
                (vm.config.get("affinity"), ledger.numa.get_mut(&vm.node))
                && let Some(cpus) = parse_cpulist(affinity)
            {
                for capacity in numa.iter_mut() {
                    capacity.free_cpus.retain(|cpu| !cpus.contains(cpu));
                }
            }
        }
        // Hugepages: the topology lists what is free for provision's VMs, so our own existing
        // pinned VMs are charged against it (keeps re-plans stable).
        for vm in existing_for.values() {
            if !leaving.contains_key(&vm.vmid) {
                charge_existing_hugepages(vm, &mut ledger);
            }
            *ledger.per_node.entry(vm.node.clone()).or_default() += 1;
        }
        // Kept GPUs stay with their VM.
        for want in wanted {
            if let (Some(vm), Some(targets)) =
                (existing_for.get(&want.name), keep_gpus.get(&want.name))
            {
                for target in targets {
                    for device in resolve_target(target, &vm.node, inventory) {
                        ledger
                            .used_devices
                            .insert((vm.node.clone(), device), vm.vmid);
                    }
                }
            }
        }
        Ok(ledger)
    }
}

/// An intent whose VM is locked by a create that no longer runs, lacks its OS disk, or is a
/// clone that never got its own config.
pub(super) fn half_created(vm: &ExistingVm, state: &State) -> bool {
    let in_intent = state
        .vms
        .values()
        .any(|r| r.vmid == vm.vmid && r.phase == VmPhase::Intent);
    let locked = matches!(vm.lock.as_deref(), Some("create" | "clone" | "disk"));
    let no_disk = !vm.config.contains_key("scsi0");
    // Cloned from a template but not yet given its own config: it still has the template's tag.
    let unconfigured_clone = vm.has_tag(super::TEMPLATE_TAG);
    in_intent && (locked || no_disk || unconfigured_clone)
}

pub(super) fn charge_existing_hugepages(vm: &ExistingVm, ledger: &mut Ledger) {
    let (Some(size), Some(numa0), Some(memory)) = (
        vm.config.get("hugepages"),
        vm.config.get("numa0"),
        vm.config.get("memory"),
    ) else {
        return;
    };
    let size_mib: u32 = match size.as_str() {
        "1024" => 1024,
        "2" => 2,
        _ => return,
    };
    let Ok(memory) = memory.parse::<u64>() else {
        return;
    };
    let host_node = propstrings::numa_host_node(numa0);
    if let (Some(host_node), Some(numa)) = (host_node, ledger.numa.get_mut(&vm.node))
        && let Some(capacity) = numa.iter_mut().find(|c| c.id == host_node)
    {
        let pages = memory.div_ceil(u64::from(size_mib));
        capacity.take_pages(size_mib, pages);
        ledger
            .hugepage_charges
            .insert(vm.vmid, (host_node, size_mib, pages));
    }
}

/// Give back the hugepages charged to an existing VM.
pub(super) fn refund_hugepages(vm: &ExistingVm, ledger: &mut Ledger) {
    let Some(numa) = ledger.numa.get_mut(&vm.node) else {
        return;
    };
    if let Some((host_node, size_mib, pages)) = ledger.hugepage_charges.remove(&vm.vmid)
        && let Some(capacity) = numa.iter_mut().find(|c| c.id == host_node)
    {
        let slot = if size_mib == 1024 {
            &mut capacity.hugepages_1g
        } else {
            &mut capacity.hugepages_2m
        };
        if let Some(free) = slot {
            *free = free.saturating_add(pages);
        }
    }
}

/// Give back what an existing kept VM holds on its host NUMA nodes: it is re-pinned.
pub(super) fn refund_existing(vm: &ExistingVm, inventory: &Inventory, ledger: &mut Ledger) {
    refund_hugepages(vm, ledger);
    let Some(cpus) = vm.config.get("affinity").and_then(|a| parse_cpulist(a)) else {
        return;
    };
    // Cores another VM on the node is also pinned to stay taken.
    let others: BTreeSet<u32> = inventory
        .vms
        .iter()
        .filter(|other| other.node == vm.node && other.vmid != vm.vmid)
        .filter_map(|other| other.config.get("affinity").and_then(|a| parse_cpulist(a)))
        .flatten()
        .collect();
    let Some(numa) = ledger.numa.get_mut(&vm.node) else {
        return;
    };
    for capacity in numa.iter_mut() {
        capacity.free_cpus.extend(
            cpus.iter()
                .filter(|cpu| capacity.all_cpus.contains(cpu) && !others.contains(cpu))
                .copied(),
        );
    }
}

/// A kept pinned VM whose hugepage-backed memory changes: charge its new size on its NUMA node.
pub(super) fn regrow_hugepages(
    want: &Wanted<'_>,
    vm: &ExistingVm,
    numa_node: u32,
    ledger: &mut Ledger,
) -> Result<(), PlanError> {
    let group = want.group;
    let charged = ledger.hugepage_charges.get(&vm.vmid).copied();
    let Some(size) = group.hugepages else {
        refund_hugepages(vm, ledger);
        return Ok(());
    };
    let size_mib = size;
    let needed = group.memory_mib.div_ceil(u64::from(size_mib));
    if charged == Some((numa_node, size_mib, needed)) {
        return Ok(());
    }
    refund_hugepages(vm, ledger);
    let Some(capacity) = ledger
        .numa
        .get_mut(&vm.node)
        .and_then(|numa| numa.iter_mut().find(|c| c.id == numa_node))
    else {
        return Ok(());
    };
    let free = capacity.free_pages(size_mib);
    if free.is_some_and(|free| free < needed) {
        return Err(PlanError::HugepagesDoNotFit {
            vm: want.name.clone(),
            node: vm.node.clone(),
            numa: numa_node,
            needed,
            size_mib,
            free: free.unwrap_or(0),
        });
    }
    capacity.take_pages(size_mib, needed);
    ledger
        .hugepage_charges
        .insert(vm.vmid, (numa_node, size_mib, needed));
    Ok(())
}

/// A kept VM's vCPUs and (non-hugepage) memory against its node: growth in place must fit
/// before anything leaves, and everything planned must fit once the leaving VMs are gone.
pub(super) fn fit_kept(
    want: &Wanted<'_>,
    vm: &ExistingVm,
    inventory: &Inventory,
    ledger: &mut Ledger,
) -> Result<(), PlanError> {
    let group = want.group;
    let Some(node) = inventory.node(&vm.node) else {
        return Ok(());
    };
    let vcpus = vcpu_count(group);
    if node.cpus > 0 && vcpus > node.cpus {
        return Err(PlanError::TooManyVcpus {
            vm: want.name.clone(),
            node: node.name.clone(),
            needed: vcpus,
            cpus: node.cpus,
        });
    }
    if group.hugepages.is_some() {
        return Ok(());
    }
    // A running VM without hugepages already counts in the node's used memory.
    let held = if vm.status == "running" && !vm.config.contains_key("hugepages") {
        config_memory_bytes(vm)
    } else {
        0
    };
    let needed = mib_to_bytes(group.memory_mib).saturating_sub(held);
    if needed == 0 {
        return Ok(());
    }
    let kept = ledger.kept_memory.get(&node.name).copied().unwrap_or(0);
    let promised = ledger.new_memory.get(&node.name).copied().unwrap_or(0);
    let released = ledger.released_memory.get(&node.name).copied().unwrap_or(0);
    if kept.saturating_add(needed) > node.memory_free
        || promised.saturating_add(needed) > node.memory_free.saturating_add(released)
    {
        return Err(PlanError::MemoryDoesNotFit {
            vm: want.name.clone(),
            node: node.name.clone(),
            needed_mib: needed / MIB,
            free_mib: node.memory_free / MIB,
            planned_mib: promised / MIB,
        });
    }
    let kept = ledger.kept_memory.entry(node.name.clone()).or_default();
    *kept = kept.saturating_add(needed);
    let promised = ledger.new_memory.entry(node.name.clone()).or_default();
    *promised = promised.saturating_add(needed);
    Ok(())
}

/// The VM's configured memory in bytes (`memory` is MiB; Proxmox's default is 512).
pub(super) fn config_memory_bytes(vm: &ExistingVm) -> u64 {
    mib_to_bytes(
        vm.config
            .get("memory")
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(512),
    )
}

pub(super) const MIB: u64 = 1024 * 1024;

/// MiB to bytes, saturating: a size beyond `u64` bytes (16 EiB) fails every capacity check
/// instead of wrapping around to a small number.
pub(super) fn mib_to_bytes(mib: u64) -> u64 {
    mib.saturating_mul(MIB)
}

/// vCPUs of one VM of `group` (cores × sockets, without overflow).
pub(super) fn vcpu_count(group: &NodeGroup) -> u64 {
    u64::from(group.cores) * u64::from(group.sockets)
}

pub(super) fn existing_pinning(vm: &ExistingVm, group: &NodeGroup) -> Option<Pinning> {
    if !group.numa_pinning {
        return None;
    }
    let affinity = vm.config.get("affinity")?;
    let cpus = parse_cpulist(affinity)?;
    if cpus.len() as u64 != vcpu_count(group) {
        return None;
    }
    let numa_node = propstrings::numa_host_node(vm.config.get("numa0")?)?;
    Some(Pinning {
        affinity: affinity.clone(),
        numa_node,
    })
}

/// `0000:41:00` → itself; `mapping=id` → the mapping's devices on `node`.
pub(super) fn resolve_target(target: &str, node: &str, inventory: &Inventory) -> Vec<String> {
    match target.strip_prefix("mapping=") {
        Some(id) => inventory
            .mappings
            .iter()
            .filter(|m| m.id == id)
            .flat_map(mapping_paths)
            .filter(|(n, _)| n == node)
            .map(|(_, path)| path)
            .collect(),
        None => vec![target.to_owned()],
    }
}

pub(super) fn allocate_vmid(
    profile: &Profile,
    vm: &str,
    ledger: &mut Ledger,
) -> Result<u32, PlanError> {
    let range = profile.proxmox.vmid_range;
    let vmid = (range.start..=range.end)
        .find(|id| !ledger.used_vmids.contains(id))
        .ok_or_else(|| PlanError::VmidRangeExhausted {
            start: range.start,
            end: range.end,
            vm: vm.to_owned(),
        })?;
    ledger.used_vmids.insert(vmid);
    Ok(vmid)
}
