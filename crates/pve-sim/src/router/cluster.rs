//! The cluster-wide routes: `/version`, `/cluster/status`, `/cluster/resources`,
//! `/cluster/nextid`, the PCI mappings of `/cluster/mapping/pci` and the resource pools of
//! `/pools`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::propstring;
use crate::state::{ApiError, ApiResult, State, now_ms};

use super::{Reply, Request};

impl Request<'_> {
    pub(super) fn version(&self) -> Value {
        let version = self.shared.state().inventory.version.clone();
        let release = version.rsplitn(2, '.').last().unwrap_or("9.1").to_owned();
        json!({ "version": version, "release": release, "repoid": "ec58e45e1bcdf2ac" })
    }

    pub(super) fn cluster_status(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        let inventory = &state.inventory;
        let mut entries = Vec::new();
        if !inventory.cluster_name.is_empty() {
            entries.push(json!({
                "type": "cluster", "id": "cluster", "name": inventory.cluster_name,
                "nodes": inventory.nodes.len(), "quorate": 1, "version": inventory.nodes.len() + 2,
            }));
        }
        for (index, node) in inventory.nodes.iter().enumerate() {
            entries.push(json!({
                "type": "node", "id": format!("node/{}", node.name), "name": node.name,
                "nodeid": index + 1, "ip": format!("10.10.0.{}", index + 11), "online": 1,
                "local": u8::from(index == 0), "level": "",
            }));
        }
        Reply::data(json!(entries))
    }

    pub(super) fn cluster_resources(&self) -> ApiResult<Reply> {
        let kind = self.text("type");
        let state = self.shared.state();
        let mut entries = Vec::new();
        let uptime = (now_ms() - state.boot_ms) / 1000;
        if kind.is_none() || kind == Some("node") {
            for node in &state.inventory.nodes {
                entries.push(json!({
                    "id": format!("node/{}", node.name), "type": "node", "node": node.name,
                    "status": "online", "maxcpu": node.cpus, "cpu": 0.02,
                    "maxmem": node.memory_gib << 30,
                    "mem": state.memory_used_mib(node) << 20, "uptime": uptime, "level": "",
                    "maxdisk": 100u64 << 30, "disk": 10u64 << 30,
                }));
            }
        }
        if kind.is_none() || kind == Some("vm") {
            for vm in state.vms.values() {
                let mut entry = state.json_vm_status(vm);
                entry["id"] = json!(format!("qemu/{}", vm.vmid));
                entry["type"] = json!("qemu");
                entry["node"] = json!(vm.node);
                entry["template"] = json!(u8::from(vm.is_template()));
                entry["maxcpu"] = json!(vm.cpus());
                if let Some(pool) = &vm.pool {
                    entry["pool"] = json!(pool);
                }
                entries.push(entry);
            }
        }
        if kind.is_none() || kind == Some("storage") {
            for node in &state.inventory.nodes {
                for storage in &state.inventory.storages {
                    let used = state.storage_used(&node.name, &storage.name);
                    entries.push(json!({
                        "id": format!("storage/{}/{}", node.name, storage.name),
                        "type": "storage", "storage": storage.name, "node": node.name,
                        "plugintype": storage.kind, "content": storage.content.join(","),
                        "maxdisk": storage.size_gib << 30, "disk": used,
                        "status": "available", "shared": u8::from(storage.shared),
                    }));
                }
            }
        }
        if kind.is_none() || kind == Some("pool") {
            for pool in state.pools.values() {
                entries.push(json!({
                    "id": format!("/pool/{}", pool.poolid), "type": "pool", "pool": pool.poolid,
                }));
            }
        }
        Reply::data(json!(entries))
    }

    pub(super) fn next_id(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        if let Some(vmid) = self.text("vmid") {
            let vmid: u32 = vmid.parse().unwrap_or(0);
            if state.vms.contains_key(&vmid) {
                return Err(ApiError::param("vmid", format!("VM {vmid} already exists")));
            }
            return Reply::data(json!(vmid.to_string()));
        }
        let free = (100..)
            .find(|id| !state.vms.contains_key(id))
            .unwrap_or(100);
        Reply::data(json!(free.to_string()))
    }

    pub(super) fn mappings(&self) -> ApiResult<Reply> {
        self.identity.check("/mapping/pci", "Mapping.Audit")?;
        let state = self.shared.state();
        let entries: Vec<Value> = state
            .mappings
            .values()
            .map(|m| {
                let mut entry = json!({ "id": m.id, "map": m.map, "type": "pci" });
                if let Some(description) = &m.description {
                    entry["description"] = json!(description);
                }
                entry
            })
            .collect();
        Reply::data(json!(entries))
    }

    fn map_entries(&self) -> Vec<String> {
        match self.params.get("map") {
            Some(Value::String(s)) => s
                .split('\n')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(_) | None => Vec::new(),
        }
    }

    fn check_map_entries(&self, state: &State, entries: &[String]) -> ApiResult<()> {
        for entry in entries {
            let parsed = propstring::parse(entry)
                .map_err(|e| ApiError::param("map", format!("invalid format - {e}")))?;
            let node = propstring::get(&parsed, "node", None).unwrap_or("");
            let path = propstring::get(&parsed, "path", None).unwrap_or("");
            let id = propstring::get(&parsed, "id", None).unwrap_or("");
            let spec = state.node(node)?;
            let device = spec
                .pci_devices
                .iter()
                .find(|p| p.id.starts_with(&format!("{path}.")) || p.id == path)
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "PCI device '{path}' does not exist on node '{node}'"
                    ))
                })?;
            let actual = format!(
                "{}:{}",
                device.vendor.trim_start_matches("0x"),
                device.device.trim_start_matches("0x")
            );
            if actual != id {
                return Err(ApiError::internal(format!(
                    "PCI device '{path}' on node '{node}' has id '{actual}', not '{id}'"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn mapping_create(&self) -> ApiResult<Reply> {
        self.identity.check("/mapping/pci", "Mapping.Modify")?;
        let id = self.text("id").unwrap_or("").to_owned();
        let mut state = self.shared.state();
        if state.mappings.contains_key(&id) {
            return Err(ApiError::internal(format!(
                "pci mapping '{id}' already defined"
            )));
        }
        let map = self.map_entries();
        self.check_map_entries(&state, &map)?;
        state.mappings.insert(
            id.clone(),
            crate::state::Mapping {
                id,
                description: self.text("description").map(str::to_owned),
                map,
            },
        );
        Reply::data(Value::Null)
    }

    pub(super) fn mapping_get(&self) -> ApiResult<Reply> {
        let id = self.vars.get("id").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/mapping/pci/{id}"), "Mapping.Audit")?;
        let state = self.shared.state();
        let mapping = state
            .mappings
            .get(&id)
            .ok_or_else(|| ApiError::internal(format!("PCI mapping '{id}' not found")))?;
        let mut entry = json!({ "id": mapping.id, "map": mapping.map, "type": "pci",
            "digest": State::digest(&BTreeMap::from([("map".to_owned(), mapping.map.join("\n"))])) });
        if let Some(description) = &mapping.description {
            entry["description"] = json!(description);
        }
        Reply::data(entry)
    }

    pub(super) fn mapping_update(&self) -> ApiResult<Reply> {
        let id = self.vars.get("id").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/mapping/pci/{id}"), "Mapping.Modify")?;
        let mut state = self.shared.state();
        let map = self.map_entries();
        self.check_map_entries(&state, &map)?;
        let mapping = state
            .mappings
            .get_mut(&id)
            .ok_or_else(|| ApiError::internal(format!("PCI mapping '{id}' not found")))?;
        if !map.is_empty() {
            mapping.map = map;
        }
        if let Some(description) = self.text("description") {
            mapping.description = Some(description.to_owned());
        }
        if self
            .text("delete")
            .is_some_and(|d| d.split(',').any(|k| k == "description"))
        {
            mapping.description = None;
        }
        Reply::data(Value::Null)
    }

    pub(super) fn mapping_delete(&self) -> ApiResult<Reply> {
        let id = self.vars.get("id").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/mapping/pci/{id}"), "Mapping.Modify")?;
        let mut state = self.shared.state();
        state
            .mappings
            .remove(&id)
            .ok_or_else(|| ApiError::internal(format!("PCI mapping '{id}' not found")))?;
        Reply::data(Value::Null)
    }

    pub(super) fn pools(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        let entries: Vec<Value> = state
            .pools
            .values()
            .map(|p| {
                let mut entry = json!({ "poolid": p.poolid });
                if let Some(comment) = &p.comment {
                    entry["comment"] = json!(comment);
                }
                entry
            })
            .collect();
        Reply::data(json!(entries))
    }

    pub(super) fn pool_create(&self) -> ApiResult<Reply> {
        let poolid = self.text("poolid").unwrap_or("").to_owned();
        self.identity
            .check(&format!("/pool/{poolid}"), "Pool.Allocate")?;
        let mut state = self.shared.state();
        if state.pools.contains_key(&poolid) {
            return Err(ApiError::internal(format!(
                "create pool failed - pool '{poolid}' already exists"
            )));
        }
        state.pools.insert(
            poolid.clone(),
            crate::state::Pool {
                poolid,
                comment: self.text("comment").map(str::to_owned),
            },
        );
        Reply::data(Value::Null)
    }

    fn pool_members(state: &State, poolid: &str) -> Vec<Value> {
        state
            .vms
            .values()
            .filter(|vm| vm.pool.as_deref() == Some(poolid))
            .map(|vm| {
                let mut entry = state.json_vm_status(vm);
                entry["id"] = json!(format!("qemu/{}", vm.vmid));
                entry["type"] = json!("qemu");
                entry["node"] = json!(vm.node);
                entry
            })
            .collect()
    }

    /// pve-manager PVE::API2::Pool `read_pool`.
    pub(super) fn pool_get(&self) -> ApiResult<Reply> {
        let poolid = self.vars.get("poolid").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/pool/{poolid}"), "Pool.Audit")?;
        let state = self.shared.state();
        let pool = state
            .pools
            .get(&poolid)
            .ok_or_else(|| ApiError::internal(format!("pool '{poolid}' does not exist")))?;
        let mut answer = json!({ "members": Self::pool_members(&state, &poolid) });
        if let Some(comment) = &pool.comment {
            answer["comment"] = json!(comment);
        }
        Reply::data(answer)
    }

    /// pve-manager PVE::API2::Pool `update_pool`: `vms` are added (or removed with
    /// `delete=1`); a VM already in another pool needs `allow-move`.
    pub(super) fn pool_update(&self) -> ApiResult<Reply> {
        let poolid = self.vars.get("poolid").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/pool/{poolid}"), "Pool.Allocate")?;
        let mut state = self.shared.state();
        if !state.pools.contains_key(&poolid) {
            return Err(ApiError::internal(format!(
                "pool '{poolid}' does not exist"
            )));
        }
        let delete = self.flag("delete");
        let vmids: Vec<u32> = self
            .text("vms")
            .unwrap_or("")
            .split([',', ';', ' '])
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::param("vms", format!("invalid VMID '{v}'")))
            })
            .collect::<ApiResult<_>>()?;
        for vmid in &vmids {
            let vm = state
                .vms
                .get(vmid)
                .ok_or_else(|| ApiError::internal(format!("no such VM '{vmid}'")))?;
            if delete {
                if vm.pool.as_deref() != Some(poolid.as_str()) {
                    return Err(ApiError::internal(format!(
                        "VM {vmid} is not a pool member"
                    )));
                }
            } else if let Some(other) = &vm.pool
                && *other != poolid
                && !self.flag("allow-move")
            {
                return Err(ApiError::internal(format!(
                    "VM {vmid} belongs already to pool '{other}' and 'allow-move' is not set"
                )));
            }
        }
        for vmid in vmids {
            if let Some(vm) = state.vms.get_mut(&vmid) {
                vm.pool = (!delete).then(|| poolid.clone());
            }
        }
        if let Some(comment) = self.text("comment")
            && let Some(pool) = state.pools.get_mut(&poolid)
        {
            pool.comment = Some(comment.to_owned());
        }
        Reply::data(Value::Null)
    }

    pub(super) fn pool_delete(&self) -> ApiResult<Reply> {
        let poolid = self.vars.get("poolid").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/pool/{poolid}"), "Pool.Allocate")?;
        let mut state = self.shared.state();
        if !state.pools.contains_key(&poolid) {
            return Err(ApiError::internal(format!(
                "delete pool failed: pool '{poolid}' does not exist"
            )));
        }
        if state
            .vms
            .values()
            .any(|vm| vm.pool.as_deref() == Some(poolid.as_str()))
        {
            return Err(ApiError::internal(format!(
                "delete pool failed: pool '{poolid}' is not empty"
            )));
        }
        state.pools.remove(&poolid);
        Reply::data(Value::Null)
    }
}
