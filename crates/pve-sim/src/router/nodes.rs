//! The per-node routes that are not storage, VMs or tasks: `/nodes`, `/nodes/{node}/status`,
//! `…/network`, `…/hardware/pci` and `…/query-url-metadata`.

use serde_json::{Value, json};

use crate::state::{ApiResult, now_ms};

use super::storage::{format_of, url_filename, url_size};
use super::{Reply, Request};

impl Request<'_> {
    pub(super) fn nodes(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        let uptime = (now_ms() - state.boot_ms) / 1000;
        let entries: Vec<Value> = state
            .inventory
            .nodes
            .iter()
            .map(|node| {
                json!({
                    "node": node.name, "status": "online", "id": format!("node/{}", node.name),
                    "type": "node", "level": "", "cpu": 0.02, "maxcpu": node.cpus,
                    "mem": state.memory_used_mib(node) << 20, "maxmem": node.memory_gib << 30,
                    "uptime": uptime, "maxdisk": 100u64 << 30, "disk": 10u64 << 30,
                })
            })
            .collect();
        Reply::data(json!(entries))
    }

    pub(super) fn node_status(&self) -> ApiResult<Reply> {
        let path = format!("/nodes/{}", self.node());
        self.identity.check(&path, "Sys.Audit")?;
        let state = self.shared.state();
        let node = state.node(self.node())?;
        let total = node.memory_gib << 30;
        let used = state.memory_used_mib(node) << 20;
        let version = &state.inventory.version;
        let mut flags = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl cpuid pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand lahf_lm svm avx2 bmi1 bmi2".to_owned();
        for flag in &node.cpu_flags {
            flags.push(' ');
            flags.push_str(flag);
        }
        if !node.hvm {
            flags = flags.replace(" svm", "");
        }
        let hvm = if node.hvm { "1" } else { "0" };
        Reply::data(json!({
            "cpuinfo": {
                "cpus": node.cpus, "cores": node.cores, "sockets": node.sockets,
                "model": node.cpu_model, "mhz": "2450.000", "hvm": hvm, "user_hz": 100,
                "flags": flags,
            },
            "memory": { "total": total, "used": used, "free": total.saturating_sub(used),
                        "available": total.saturating_sub(used) },
            "swap": { "total": 8u64 << 30, "used": 0, "free": 8u64 << 30 },
            "uptime": (now_ms() - state.boot_ms) / 1000,
            "loadavg": ["0.12", "0.10", "0.08"],
            "cpu": 0.02, "wait": 0.0,
            "kversion": "Linux 6.14.11-4-pve #1 SMP PREEMPT_DYNAMIC PMX 6.14.11-4 (2025-10-10T08:04Z)",
            "pveversion": format!("pve-manager/{version}/ec58e45e1bcdf2ac"),
            "boot-info": { "mode": "efi", "secureboot": 0 },
            "current-kernel": { "sysname": "Linux", "release": "6.14.11-4-pve", "machine": "x86_64",
                                "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.14.11-4 (2025-10-10T08:04Z)" },
            "rootfs": { "total": 100u64 << 30, "used": 10u64 << 30, "avail": 90u64 << 30, "free": 90u64 << 30 },
            "ksm": { "shared": 0 },
        }))
    }

    /// `GET /nodes/{node}/network`: the node's bridges over one physical port each.
    pub(super) fn node_network(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        let node = state.node(self.node())?;
        let kind = self.text("type");
        let mut entries = Vec::new();
        for (index, bridge) in node.bridges.iter().enumerate() {
            let port = format!("eno{}", index + 1);
            if kind.is_none_or(|k| k == "eth") {
                entries.push(json!({
                    "iface": port, "type": "eth", "method": "manual", "families": ["inet"],
                    "active": 1, "exists": 1, "priority": index * 2 + 1,
                }));
            }
            if kind.is_none_or(|k| matches!(k, "bridge" | "any_bridge" | "any_local_bridge")) {
                let mut entry = json!({
                    "iface": bridge, "type": "bridge", "method": "manual", "families": ["inet"],
                    "active": 1, "autostart": 1, "bridge_ports": port, "bridge_stp": "off",
                    "bridge_fd": "0", "priority": index * 2 + 2,
                    // Inventory bridges model a GPU host set up for tagged VM traffic.
                    "bridge_vlan_aware": 1,
                });
                if index == 0 {
                    let node_index = state
                        .inventory
                        .nodes
                        .iter()
                        .position(|n| n.name == node.name)
                        .unwrap_or(0);
                    entry["method"] = json!("static");
                    entry["address"] = json!(format!("10.10.0.{}", node_index + 11));
                    entry["netmask"] = json!("24");
                    entry["cidr"] = json!(format!("10.10.0.{}/24", node_index + 11));
                    entry["gateway"] = json!("10.10.0.1");
                }
                entries.push(entry);
            }
        }
        Reply::data(json!(entries))
    }

    pub(super) fn hardware_pci(&self) -> ApiResult<Reply> {
        self.identity
            .check(&format!("/nodes/{}", self.node()), "Sys.Audit")?;
        let state = self.shared.state();
        let node = state.node(self.node())?;
        let blacklist: Vec<String> = self
            .text("pci-class-blacklist")
            .unwrap_or("05;06;0b")
            .split([';', ','])
            .filter(|c| !c.is_empty())
            .map(str::to_lowercase)
            .collect();
        let entries: Vec<Value> = node
            .pci_devices
            .iter()
            .filter(|p| {
                let class = p.class.trim_start_matches("0x").to_lowercase();
                !blacklist.iter().any(|prefix| class.starts_with(prefix.as_str()))
            })
            .map(|p| {
                let mut entry = json!({
                    "id": p.id, "class": p.class, "vendor": p.vendor, "device": p.device,
                    "iommugroup": p.iommugroup,
                    "subsystem_vendor": p.subsystem_vendor.clone().unwrap_or_else(|| p.vendor.clone()),
                    "subsystem_device": p.subsystem_device.clone().unwrap_or_else(|| "0x0000".to_owned()),
                });
                if let Some(name) = &p.vendor_name {
                    entry["vendor_name"] = json!(name);
                }
                if let Some(name) = &p.device_name {
                    entry["device_name"] = json!(name);
                }
                entry
            })
            .collect();
        Reply::data(json!(entries))
    }

    /// `GET /nodes/{node}/hardware/pci/{pci-id-or-mapping}`: the index below a device.
    pub(super) fn hardware_pci_index(&self) -> ApiResult<Reply> {
        self.identity
            .check(&format!("/nodes/{}", self.node()), "Sys.Audit")?;
        self.shared.state().node(self.node())?;
        Reply::data(json!([{ "method": "mdev" }]))
    }

    /// pve-manager PVE::API2::Nodes `query_url_metadata` (Sys.Audit and Sys.Modify on `/`).
    pub(super) fn query_url_metadata(&self) -> ApiResult<Reply> {
        self.identity.check("/", "Sys.Audit")?;
        self.identity.check("/", "Sys.Modify")?;
        let url = self.text("url").unwrap_or("");
        let filename = url_filename(url);
        let state = self.shared.state();
        state.node(self.node())?;
        let known = state.inventory.images.iter().find(|i| i.url == url);
        let mimetype = match (
            known.and_then(|i| i.mimetype.clone()),
            format_of(&filename).as_str(),
        ) {
            (Some(mimetype), _) => mimetype,
            (None, "iso") => "application/x-iso9660-image".to_owned(),
            (None, _) => "application/octet-stream".to_owned(),
        };
        let size = known.map_or_else(|| url_size(url), |i| i.size);
        Reply::data(json!({ "filename": filename, "size": size, "mimetype": mimetype }))
    }
}
