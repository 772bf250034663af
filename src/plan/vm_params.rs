//! The exact Proxmox parameters of a planned VM: `hostpciN` values (raw ids or PCI resource
//! mappings, planning the mappings to create) and the whole create request.

use crate::inventory::{Inventory, cluster_tag, mapping_paths, tags};
use crate::profile::model::{Bios, CloudInitMode, NodeGroup, Profile, Role};
use crate::pve::Params;
use crate::pve::types::PciMapping;

use super::ledger::{Pinning, vcpu_count};
use super::wanted::Wanted;
use super::{ImageSource, IsoUpload, PlanContext, PlanError, is_nvidia_gpu, params, propstrings};

/// `hostpciN` values for freshly allocated devices (raw ids or mappings), planning mapping
/// creation when the credentials need and may.
pub(super) fn gpu_params(
    profile: &Profile,
    group: &NodeGroup,
    node: &str,
    devices: &[String],
    inventory: &Inventory,
    to_create: &mut Vec<PciMapping>,
) -> Result<Vec<String>, PlanError> {
    let Some(gpus) = &group.gpus else {
        return Ok(Vec::new());
    };
    if let Some(mapping) = &gpus.mapping {
        return Ok(devices
            .iter()
            .map(|_| propstrings::hostpci_mapping(mapping))
            .collect());
    }
    let mut values = Vec::new();
    for device in devices {
        if inventory.auth.may_use_raw_pci() {
            values.push(propstrings::hostpci_device(device));
            continue;
        }
        // An existing mapping whose only path on this node is this device.
        let existing = inventory.mappings.iter().find(|m| {
            let paths: Vec<(String, String)> = mapping_paths(m)
                .into_iter()
                .filter(|(n, _)| n == node)
                .collect();
            paths.len() == 1 && paths[0].1 == *device
        });
        if let Some(mapping) = existing {
            values.push(propstrings::hostpci_mapping(&mapping.id));
            continue;
        }
        if !inventory.auth.may_create_mappings() {
            return Err(PlanError::RawPciNotAllowed {
                auth: inventory.auth.describe(),
                node: node.to_owned(),
                device: device.clone(),
            });
        }
        let id = format!(
            "provision-{}-{node}-{}",
            profile.cluster.name,
            device.replace([':', '.'], "-")
        );
        let node_inventory = inventory.node(node);
        let pci = node_inventory.and_then(|n| {
            n.pci
                .iter()
                .find(|p| crate::inventory::whole_device(&p.id) == *device && is_nvidia_gpu(p))
        });
        let mut entry = format!("node={node},path={device}");
        if let Some(pci) = pci {
            entry.push_str(&format!(
                ",id={}:{}",
                pci.vendor.trim_start_matches("0x"),
                pci.device.trim_start_matches("0x")
            ));
            entry.push_str(&format!(",iommugroup={}", pci.iommugroup));
        }
        if !to_create.iter().any(|m| m.id == id) {
            to_create.push(PciMapping {
                id: id.clone(),
                description: Some(format!(
                    "provision: GPU {device} on {node} for cluster {}",
                    profile.cluster.name
                )),
                map: vec![entry],
            });
        }
        values.push(propstrings::hostpci_mapping(&id));
    }
    Ok(values)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn vm_params(
    profile: &Profile,
    context: &PlanContext,
    want: &Wanted<'_>,
    mac: &str,
    vmid: u32,
    hostpci: &[String],
    pinning: Option<&Pinning>,
    image: &ImageSource,
    iso: Option<&IsoUpload>,
    prefix_len: u8,
    created: u64,
) -> Params {
    let group = want.group;
    let storage = &profile.proxmox.storage;
    let mut p = Params::new();
    let mut set = |key: &str, value: String| {
        p.insert(key.to_owned(), value);
    };
    set("vmid", vmid.to_string());
    set("name", want.name.clone());
    set("ostype", "l26".into());
    set("machine", group.machine.clone());
    match group.bios {
        Bios::Ovmf => {
            set("bios", "ovmf".into());
            set(
                "efidisk0",
                propstrings::efi_disk(storage.efi.as_deref().unwrap_or(&storage.disks)),
            );
        }
        Bios::Seabios => set("bios", "seabios".into()),
    }
    set("cpu", propstrings::cpu(&group.cpu_type, &group.cpu_flags));
    set("cores", group.cores.to_string());
    set("sockets", group.sockets.to_string());
    set("memory", group.memory_mib.to_string());
    set("balloon", "0".into());
    set("scsihw", "virtio-scsi-single".into());
    // With a clone strategy the OS disk comes from the clone: the params only configure it.
    match image {
        ImageSource::Import { volid } if profile.image.strategy.is_import() => set(
            "scsi0",
            propstrings::scsi_disk(format!("{}:0", storage.disks), Some(volid)),
        ),
        ImageSource::Import { .. } | ImageSource::Clone { .. } | ImageSource::Template { .. } => {}
    }
    if let Some(scratch) = group.disks.scratch_gb {
        let scratch_storage = group
            .disks
            .scratch_storage
            .as_deref()
            .unwrap_or(&storage.disks);
        set(
            "scsi1",
            propstrings::scsi_disk(format!("{scratch_storage}:{scratch}"), None),
        );
    }
    set("boot", "order=scsi0".into());
    // The MAC is the model key's value (`virtio=02:…`, qemu-server's `net[n]` format).
    set(
        "net0",
        propstrings::net_virtio(
            mac,
            &profile.network.bridge,
            profile.network.vlan,
            profile.network.mtu,
        ),
    );
    set("agent", "enabled=1".into());
    set("serial0", "socket".into());
    set("vga", "serial0".into());
    set("onboot", "1".into());
    set(
        "tags",
        vm_tags(profile, group.role, want.address, created).join(";"),
    );
    set(
        "description",
        format!(
            "Managed by provision: cluster {}, group {}, workspace {}. Do not edit by hand; run `provision up` instead.",
            profile.cluster.name, group.name, context.workspace
        ),
    );
    if let Some(pool) = &profile.proxmox.pool {
        set("pool", pool.clone());
    }
    for (index, value) in hostpci.iter().enumerate() {
        set(&format!("hostpci{index}"), value.clone());
    }
    if group.hugepages.is_some() || pinning.is_some() {
        set("numa", "1".into());
    }
    if let Some(size) = group.hugepages {
        set("hugepages", size.to_string());
        set("keephugepages", "1".into());
    }
    if let Some(pinning) = pinning {
        set("affinity", pinning.affinity.clone());
        set(
            "numa0",
            propstrings::numa_binding(vcpu_count(group), pinning.numa_node, group.memory_mib),
        );
    }
    cloud_init_params(&mut p, profile, context, want, iso, prefix_len);
    p
}

/// The cloud-init part: the NoCloud seed ISO as a CD-ROM, or Proxmox's own cloud-init drive
/// with user, key, address and DNS.
fn cloud_init_params(
    p: &mut Params,
    profile: &Profile,
    context: &PlanContext,
    want: &Wanted<'_>,
    iso: Option<&IsoUpload>,
    prefix_len: u8,
) {
    let storage = &profile.proxmox.storage;
    let mut set = |key: &str, value: String| {
        p.insert(key.to_owned(), value);
    };
    match (profile.proxmox.cloud_init, iso) {
        (CloudInitMode::NocloudIso, Some(iso)) => {
            set("ide2", format!("{},media=cdrom", iso.volid));
        }
        (CloudInitMode::NocloudIso, None) | (CloudInitMode::Proxmox, _) => {
            set("ide2", format!("{}:cloudinit", storage.disks));
            set("ciuser", profile.ssh.user.clone());
            if let Some(key) = &context.ssh_public_key {
                set("sshkeys", params::encode_ssh_keys(key.trim_end()));
            }
            // Validation keeps addresses inside the network's CIDR, so the prefix fits.
            if let Some(ipconfig) =
                propstrings::ip_config(want.address, prefix_len, profile.network.gateway)
            {
                set("ipconfig0", ipconfig);
            }
            if !profile.network.dns.is_empty() {
                set(
                    "nameserver",
                    profile
                        .network
                        .dns
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            if let Some(domain) = &profile.network.search_domain {
                set("searchdomain", domain.clone());
            }
        }
    }
}

/// Every tag of a VM (see [`crate::inventory::tags`]): provision's, the cluster's id, role,
/// creation and (with a TTL) expiry time and address, then the profile's own.
pub(super) fn vm_tags(
    profile: &Profile,
    role: Role,
    address: std::net::IpAddr,
    created: u64,
) -> Vec<String> {
    let cluster = &profile.cluster.name;
    let mut tags = vec![
        tags::PROVISION_TAG.to_owned(),
        cluster_tag(cluster),
        tags::cluster_id_tag(cluster),
        format!(
            "role-{}",
            match role {
                Role::Server => "server",
                Role::Agent => "agent",
            }
        ),
        tags::created_tag(created),
    ];
    if let Some(expires) = profile
        .cluster
        .ttl
        .as_deref()
        .and_then(crate::profile::validate::ttl_seconds)
        .and_then(|ttl| created.checked_add(ttl))
    {
        tags.push(tags::expiry_tag(expires));
    }
    tags.push(tags::address_tag(address));
    tags.extend(profile.proxmox.tags.iter().cloned());
    tags
}
