//! The one trait all Proxmox access goes through: the reqwest client implements it, tests may
//! wrap it. Domain code takes `&dyn PveApi` and never builds a URL.

use async_trait::async_trait;

use super::error::PveError;
use super::types::{
    ClusterResource, GuestInterface, NetworkInterface, NodeName, NodeStatus, NodeSummary, Params,
    PciDevice, PciMapping, Permissions, PoolSummary, StorageStatus, StorageVolume, TaskListEntry,
    TaskListQuery, TaskStatus, Upid, UploadContent, Version, VmId, VmStatus, VolumeId,
};

/// Every Proxmox VE call provision makes. Parameters are the exact Proxmox names and values
/// ([`Params`]) so that what `plan` prints is what is sent.
#[async_trait]
pub trait PveApi: Send + Sync {
    /// `GET /access/permissions`: the caller's effective privileges per ACL path.
    async fn access_permissions(&self) -> Result<Permissions, PveError>;
    /// `GET /version`.
    async fn version(&self) -> Result<Version, PveError>;
    /// `GET /cluster/status` (raw entries).
    async fn cluster_status(&self) -> Result<Vec<serde_json::Value>, PveError>;
    /// `GET /cluster/resources[?type=vm|node|storage]`.
    async fn cluster_resources(&self, kind: Option<&str>)
    -> Result<Vec<ClusterResource>, PveError>;
    /// `GET /nodes`.
    async fn nodes(&self) -> Result<Vec<NodeSummary>, PveError>;
    /// `GET /nodes/{node}/status`.
    async fn node_status(&self, node: &NodeName) -> Result<NodeStatus, PveError>;
    /// `GET /nodes/{node}/network`.
    async fn node_network(&self, node: &NodeName) -> Result<Vec<NetworkInterface>, PveError>;
    /// `GET /nodes/{node}/hardware/pci`.
    async fn pci_devices(&self, node: &NodeName) -> Result<Vec<PciDevice>, PveError>;
    /// `GET /nodes/{node}/storage`.
    async fn storages(&self, node: &NodeName) -> Result<Vec<StorageStatus>, PveError>;
    /// `GET /nodes/{node}/storage/{storage}/content[?content=]`.
    async fn storage_content(
        &self,
        node: &NodeName,
        storage: &str,
        content: Option<&str>,
    ) -> Result<Vec<StorageVolume>, PveError>;
    /// `POST /nodes/{node}/storage/{storage}/download-url` (params: url, content, filename,
    /// checksum, checksum-algorithm …).
    async fn download_url(
        &self,
        node: &NodeName,
        storage: &str,
        params: &Params,
    ) -> Result<Upid, PveError>;
    /// `POST /nodes/{node}/storage/{storage}/upload` (multipart; sha256 checked by Proxmox).
    async fn upload(
        &self,
        node: &NodeName,
        storage: &str,
        content: UploadContent,
        filename: &str,
        data: Vec<u8>,
        sha256: &str,
    ) -> Result<Upid, PveError>;
    /// `DELETE /nodes/{node}/storage/{storage}/content/{volume}`.
    async fn delete_volume(
        &self,
        node: &NodeName,
        volume: &VolumeId,
    ) -> Result<Option<Upid>, PveError>;
    /// `GET /cluster/nextid[?vmid=N]`: with `Some(n)`, Ok(n) when free, an error when taken.
    async fn next_id(&self, check: Option<VmId>) -> Result<VmId, PveError>;
    /// `POST /nodes/{node}/qemu` (params include `vmid`).
    async fn vm_create(&self, node: &NodeName, params: &Params) -> Result<Upid, PveError>;
    /// `POST /nodes/{node}/qemu/{vmid}/clone` (params include `newid`).
    async fn vm_clone(
        &self,
        node: &NodeName,
        source: VmId,
        params: &Params,
    ) -> Result<Upid, PveError>;
    /// `GET /nodes/{node}/qemu/{vmid}/config` as Proxmox returns it (values as strings).
    async fn vm_config(&self, node: &NodeName, vmid: VmId) -> Result<Params, PveError>;
    /// `PUT /nodes/{node}/qemu/{vmid}/config` (synchronous).
    async fn vm_config_put(
        &self,
        node: &NodeName,
        vmid: VmId,
        params: &Params,
    ) -> Result<(), PveError>;
    /// `POST /nodes/{node}/qemu/{vmid}/config` (asynchronous, returns a task).
    async fn vm_config_post(
        &self,
        node: &NodeName,
        vmid: VmId,
        params: &Params,
    ) -> Result<Upid, PveError>;
    /// `PUT /nodes/{node}/qemu/{vmid}/resize` (`disk`, `size` such as `500G`).
    async fn vm_resize(
        &self,
        node: &NodeName,
        vmid: VmId,
        disk: &str,
        size: &str,
    ) -> Result<Upid, PveError>;
    /// `GET /nodes/{node}/qemu/{vmid}/status/current`.
    async fn vm_status(&self, node: &NodeName, vmid: VmId) -> Result<VmStatus, PveError>;
    /// `POST …/status/start`.
    async fn vm_start(&self, node: &NodeName, vmid: VmId) -> Result<Upid, PveError>;
    /// `POST …/status/stop` (hard stop; `timeout` seconds).
    async fn vm_stop(
        &self,
        node: &NodeName,
        vmid: VmId,
        timeout_secs: Option<u32>,
    ) -> Result<Upid, PveError>;
    /// `POST …/status/shutdown` (ACPI; `forceStop=1` after `timeout`).
    async fn vm_shutdown(
        &self,
        node: &NodeName,
        vmid: VmId,
        timeout_secs: u32,
    ) -> Result<Upid, PveError>;
    /// `DELETE /nodes/{node}/qemu/{vmid}?purge=1&destroy-unreferenced-disks=1`.
    async fn vm_delete(&self, node: &NodeName, vmid: VmId) -> Result<Upid, PveError>;
    /// `POST …/agent/ping`.
    async fn agent_ping(&self, node: &NodeName, vmid: VmId) -> Result<(), PveError>;
    /// `GET …/agent/network-get-interfaces`.
    async fn agent_network_interfaces(
        &self,
        node: &NodeName,
        vmid: VmId,
    ) -> Result<Vec<GuestInterface>, PveError>;
    /// `GET …/agent/file-read?file=` (content as returned).
    async fn agent_file_read(
        &self,
        node: &NodeName,
        vmid: VmId,
        file: &str,
    ) -> Result<String, PveError>;
    /// `GET /cluster/mapping/pci`.
    async fn pci_mappings(&self) -> Result<Vec<PciMapping>, PveError>;
    /// `POST /cluster/mapping/pci` (params: id, map (repeated, `\n`-joined), description).
    async fn pci_mapping_create(&self, mapping: &PciMapping) -> Result<(), PveError>;
    /// `GET /pools`.
    async fn pools(&self) -> Result<Vec<PoolSummary>, PveError>;
    /// `POST /pools`.
    async fn pool_create(&self, poolid: &str, comment: Option<&str>) -> Result<(), PveError>;
    /// `GET /nodes/{node}/tasks?source=…&since=…&limit=…`: the caller's tasks on `node` (all
    /// of them with Sys.Audit on `/nodes/{node}`).
    async fn node_tasks(
        &self,
        node: &NodeName,
        query: &TaskListQuery,
    ) -> Result<Vec<TaskListEntry>, PveError>;
    /// `GET /nodes/{node}/tasks/{upid}/status`.
    async fn task_status(&self, node: &NodeName, upid: &Upid) -> Result<TaskStatus, PveError>;
    /// `GET /nodes/{node}/tasks/{upid}/log?limit=` (lines, newest last).
    async fn task_log(
        &self,
        node: &NodeName,
        upid: &Upid,
        limit: u32,
    ) -> Result<Vec<String>, PveError>;
}
