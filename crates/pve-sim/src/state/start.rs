//! What a VM start needs from its node (KVM, bridges, PCI devices, hugepages or memory),
//! checked and reserved the way qemu-server and QEMU fail when it is missing.

use std::collections::BTreeMap;

use crate::inventory::NodeSpec;
use crate::propstring;

use super::{State, Vm};

/// Why a start fails: the task's exit status, and the lines it adds to the task log.
type StartFailure = (String, Vec<String>);

/// Checks a start can succeed and reserves hugepages and PCI devices for it. Returns the
/// failure message a Proxmox start task would end with.
pub(crate) fn reserve_for_start(state: &mut State, vmid: u32) -> Result<(), StartFailure> {
    let Some(vm) = state.vms.get(&vmid).cloned() else {
        return Err((format!("VM {vmid} does not exist"), Vec::new()));
    };
    let node = match state.node(&vm.node) {
        Ok(node) => node.clone(),
        Err(error) => return Err((error.message, Vec::new())),
    };
    check_kvm_and_bridges(&vm, &node)?;
    let reserved = reserve_pci(state, &vm, &node)?;
    let hugepages = match vm.config.get("hugepages") {
        Some(setting) => reserve_hugepages(state, &vm, &node, setting)?,
        None => {
            check_free_memory(state, &vm, &node)?;
            BTreeMap::new()
        }
    };
    if let Some(vm) = state.vms.get_mut(&vmid) {
        vm.starting = true;
        vm.hugepages = hugepages;
        vm.pci_in_use = reserved;
    }
    Ok(())
}

fn check_kvm_and_bridges(vm: &Vm, node: &NodeSpec) -> Result<(), StartFailure> {
    // KVM (qemu-server's config_to_command dies when the node's cpuinfo has no hvm).
    if !node.hvm && vm.config.get("kvm").map(String::as_str) != Some("0") {
        return Err((
            "KVM virtualisation configured, but not available. Either disable in VM configuration or enable in BIOS.".to_owned(),
            Vec::new(),
        ));
    }
    // Bridges.
    for (key, value) in vm.config.iter().filter(|(k, _)| k.starts_with("net")) {
        if let Ok(entries) = propstring::parse(value)
            && let Some(bridge) = propstring::get(&entries, "bridge", None)
            && !node.bridges.iter().any(|b| b == bridge)
        {
            return Err((
                format!("bridge '{bridge}' does not exist"),
                vec![format!("{key}: bridge '{bridge}' does not exist")],
            ));
        }
    }
    Ok(())
}

/// Picks a free, passable device for every `hostpciN` (the first that works of a mapping's
/// paths on this node); returns the devices reserved.
fn reserve_pci(state: &State, vm: &Vm, node: &NodeSpec) -> Result<Vec<String>, StartFailure> {
    let vmid = vm.vmid;
    let mut reserved: Vec<String> = Vec::new();
    let hostpci: Vec<(String, String)> = vm
        .config
        .iter()
        .filter(|(k, _)| k.starts_with("hostpci"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in hostpci {
        let entries = propstring::parse(&value).map_err(|e| (e.to_string(), Vec::new()))?;
        let candidates = pci_candidates(state, &node.name, &key, &entries)?;
        let mut last_error = None;
        let mut chosen = None;
        for candidate in &candidates {
            match check_pci(state, node, vmid, candidate, &reserved) {
                Ok(device) => {
                    chosen = Some(device);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        match chosen {
            Some(device) => reserved.push(device),
            None => {
                let error = last_error.unwrap_or_else(|| "no PCI device available".to_owned());
                return Err((error.clone(), vec![format!("{key}: {error}")]));
            }
        }
    }
    Ok(reserved)
}

/// The devices a `hostpciN` value may use: a mapping's paths on `node_name`, or its `host`.
fn pci_candidates(
    state: &State,
    node_name: &str,
    key: &str,
    entries: &[propstring::Entry],
) -> Result<Vec<String>, StartFailure> {
    let candidates = match propstring::get(entries, "mapping", None) {
        Some(mapping_id) => {
            let Some(mapping) = state.mappings.get(mapping_id) else {
                return Err((
                    format!("PCI mapping '{mapping_id}' does not exist"),
                    Vec::new(),
                ));
            };
            let paths: Vec<String> = mapping
                .map
                .iter()
                .filter_map(|entry| {
                    let entries = propstring::parse(entry).ok()?;
                    (propstring::get(&entries, "node", None)? == node_name)
                        .then(|| propstring::get(&entries, "path", None).map(str::to_owned))?
                })
                .collect();
            if paths.is_empty() {
                return Err((
                    format!(
                        "PCI mapping '{mapping_id}' has no entry for node '{}'",
                        node_name
                    ),
                    Vec::new(),
                ));
            }
            paths
        }
        None => match propstring::get(entries, "host", Some("host")) {
            Some(host) => vec![host.split(';').next().unwrap_or(host).to_owned()],
            None => return Err((format!("{key}: no host or mapping"), Vec::new())),
        },
    };
    Ok(candidates)
}

/// Hugepages of the VM's size (`1024`, `2` or `any`) on the NUMA nodes its `numaN` entries bind
/// it to, else on any; returns the pages taken per `NUMA/SIZE_KIB`.
fn reserve_hugepages(
    state: &State,
    vm: &Vm,
    node: &NodeSpec,
    setting: &str,
) -> Result<BTreeMap<String, u64>, StartFailure> {
    let vmid = vm.vmid;
    let memory = vm.memory_mib();
    if vm.config.get("numa").map(String::as_str) != Some("1") {
        return Err((
            "NUMA needs to be enabled for memory hotplug or hugepages".to_owned(),
            Vec::new(),
        ));
    }
    let free = state.free_hugepages(node);
    let sizes: Vec<u64> = match setting {
        "1024" => vec![1_048_576],
        "2" => vec![2048],
        _ => vec![1_048_576, 2048],
    };
    let bound = numa_bindings(vm);
    for size_kib in sizes {
        let page_mib = size_kib / 1024;
        let mut plan: BTreeMap<String, u64> = BTreeMap::new();
        let ok = if bound.is_empty() {
            let mut needed = memory.div_ceil(page_mib);
            for numa in &node.numa_nodes {
                let available = free.get(&(numa.id, size_kib)).copied().unwrap_or(0);
                let take = available.min(needed);
                if take > 0 {
                    plan.insert(format!("{}/{size_kib}", numa.id), take);
                    needed -= take;
                }
            }
            needed == 0
        } else {
            bound.iter().all(|(host, mib)| {
                let needed = mib.div_ceil(page_mib);
                let available = free.get(&(*host, size_kib)).copied().unwrap_or(0);
                plan.insert(format!("{host}/{size_kib}"), needed);
                available >= needed
            })
        };
        if ok {
            return Ok(plan);
        }
    }
    let free_1g: u64 = free
        .iter()
        .filter(|((_, size), _)| *size == 1_048_576)
        .map(|(_, n)| n)
        .sum();
    Err((
        "hugepage allocation failed".to_owned(),
        vec![format!(
            "VM {vmid} needs {memory} MiB of hugepages ({setting}); node '{}' has {free_1g} free 1 GiB pages",
            node.name
        )],
    ))
}

/// Host NUMA nodes the VM's `numaN` entries bind memory to (MiB per host node); empty: any.
fn numa_bindings(vm: &Vm) -> BTreeMap<u32, u64> {
    vm.config
        .iter()
        .filter(|(k, _)| k.starts_with("numa") && k.len() > 4)
        .filter_map(|(_, v)| {
            let entries = propstring::parse(v).ok()?;
            let host = propstring::get(&entries, "hostnodes", None)?
                .parse::<u32>()
                .ok()?;
            let mib = propstring::get(&entries, "memory", None)?
                .parse::<u64>()
                .ok()?;
            Some((host, mib))
        })
        .fold(BTreeMap::new(), |mut acc, (host, mib)| {
            *acc.entry(host).or_insert(0) += mib;
            acc
        })
}

/// Without hugepages the VM's memory must fit in what the node has free.
fn check_free_memory(state: &State, vm: &Vm, node: &NodeSpec) -> Result<(), StartFailure> {
    let vmid = vm.vmid;
    let memory = vm.memory_mib();
    let total = node.memory_gib * 1024;
    let free = total.saturating_sub(state.memory_used_mib(node));
    if memory > free {
        return Err((
            "start failed: QEMU exited with code 1".to_owned(),
            vec![
                "kvm: cannot set up guest memory 'pc.ram': Cannot allocate memory".to_owned(),
                format!(
                    "not enough memory on node '{}': VM {vmid} needs {memory} MiB, {free} MiB free",
                    node.name
                ),
            ],
        ));
    }
    Ok(())
}

/// Checks one PCI device (`0000:41:00` or `0000:41:00.0`) can be passed to `vmid`; returns the
/// device address without function.
fn check_pci(
    state: &State,
    node: &NodeSpec,
    vmid: u32,
    address: &str,
    reserved_here: &[String],
) -> Result<String, String> {
    let device = address.rsplit_once('.').map_or(address, |(d, _)| d);
    let device = if device.matches(':').count() == 1 {
        format!("0000:{device}")
    } else {
        device.to_owned()
    };
    let functions: Vec<_> = node
        .pci_devices
        .iter()
        .filter(|p| p.id.starts_with(&format!("{device}.")))
        .collect();
    let Some(first) = functions.first() else {
        return Err(format!("no PCI device found for '{device}'"));
    };
    if first.iommugroup < 0 {
        return Err(format!(
            "kvm: -device vfio-pci,host={}: vfio {}: no iommu_group found: Invalid argument",
            first.id, first.id
        ));
    }
    let group = first.iommugroup;
    let foreign: Vec<_> = node
        .pci_devices
        .iter()
        .filter(|p| p.iommugroup == group && !p.id.starts_with(&format!("{device}.")))
        .collect();
    if !foreign.is_empty() {
        return Err(format!(
            "kvm: -device vfio-pci,host={}: vfio {}: group {group} is not viable. Please ensure all devices within the iommu_group are bound to their vfio bus driver.",
            first.id, first.id
        ));
    }
    if reserved_here.contains(&device) {
        return Err(format!(
            "PCI device '{device}' already in use by VMID '{vmid}'"
        ));
    }
    for other in state.vms.values() {
        if other.vmid != vmid
            && other.node == node.name
            && other.running_or_starting()
            && other.pci_in_use.contains(&device)
        {
            return Err(format!(
                "PCI device '{device}' already in use by VMID '{}'",
                other.vmid
            ));
        }
    }
    Ok(device)
}
