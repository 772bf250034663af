//! Two credentials behind one [`PveApi`]: an API token does everything, a `root@pam` ticket
//! only the requests that carry keys Proxmox lets no one but `root@pam` set (`hugepages`,
//! `keephugepages`, `affinity` …; qemu-server's `check_vm_modify_config_perm`). This is the
//! least-privilege way to apply a profile with hugepages or CPU pinning: the password is used
//! for as few requests as possible, and every other change is attributable to the token.

use std::sync::Arc;

use async_trait::async_trait;

use super::api::PveApi;
use super::error::PveError;
use super::privileges::root_only_keys;
use super::types::{
    ClusterResource, GuestInterface, NetworkInterface, NodeName, NodeStatus, NodeSummary, Params,
    PciDevice, PciMapping, Permissions, PoolSummary, StorageStatus, StorageVolume, TaskListEntry,
    TaskListQuery, TaskStatus, Upid, UploadContent, Version, VmId, VmStatus, VolumeId,
};

/// Routes each request to the token, or to root when it carries root-only keys.
pub struct TokenWithRoot {
    token: Arc<dyn PveApi>,
    root: Arc<dyn PveApi>,
}

impl TokenWithRoot {
    pub fn new(token: Arc<dyn PveApi>, root: Arc<dyn PveApi>) -> Self {
        Self { token, root }
    }

    /// The connection for a create or config request with `params`.
    fn for_params(&self, params: &Params) -> &dyn PveApi {
        if root_only_keys(params).is_empty() {
            self.token.as_ref()
        } else {
            self.root.as_ref()
        }
    }
}

#[async_trait]
impl PveApi for TokenWithRoot {
    /// The token's permissions: the root ticket is used only for root-only keys.
    async fn access_permissions(&self) -> Result<Permissions, PveError> {
        self.token.access_permissions().await
    }
    async fn version(&self) -> Result<Version, PveError> {
        self.token.version().await
    }
    async fn cluster_status(&self) -> Result<Vec<serde_json::Value>, PveError> {
        self.token.cluster_status().await
    }
    async fn cluster_resources(
        &self,
        kind: Option<&str>,
    ) -> Result<Vec<ClusterResource>, PveError> {
        self.token.cluster_resources(kind).await
    }
    async fn nodes(&self) -> Result<Vec<NodeSummary>, PveError> {
        self.token.nodes().await
    }
    async fn node_status(&self, node: &NodeName) -> Result<NodeStatus, PveError> {
        self.token.node_status(node).await
    }
    async fn node_network(&self, node: &NodeName) -> Result<Vec<NetworkInterface>, PveError> {
        self.token.node_network(node).await
    }
    async fn pci_devices(&self, node: &NodeName) -> Result<Vec<PciDevice>, PveError> {
        self.token.pci_devices(node).await
    }
    async fn storages(&self, node: &NodeName) -> Result<Vec<StorageStatus>, PveError> {
        self.token.storages(node).await
    }
    async fn storage_content(
        &self,
        node: &NodeName,
        storage: &str,
        content: Option<&str>,
    ) -> Result<Vec<StorageVolume>, PveError> {
        self.token.storage_content(node, storage, content).await
    }
    async fn download_url(
        &self,
        node: &NodeName,
        storage: &str,
        params: &Params,
    ) -> Result<Upid, PveError> {
        self.token.download_url(node, storage, params).await
    }
    async fn upload(
        &self,
        node: &NodeName,
        storage: &str,
        content: UploadContent,
        filename: &str,
        data: Vec<u8>,
        sha256: &str,
    ) -> Result<Upid, PveError> {
        self.token
            .upload(node, storage, content, filename, data, sha256)
            .await
    }
    async fn delete_volume(
        &self,
        node: &NodeName,
        volume: &VolumeId,
    ) -> Result<Option<Upid>, PveError> {
        self.token.delete_volume(node, volume).await
    }
    async fn next_id(&self, check: Option<VmId>) -> Result<VmId, PveError> {
        self.token.next_id(check).await
    }
    async fn vm_create(&self, node: &NodeName, params: &Params) -> Result<Upid, PveError> {
        self.for_params(params).vm_create(node, params).await
    }
    async fn vm_clone(
        &self,
        node: &NodeName,
        source: VmId,
        params: &Params,
    ) -> Result<Upid, PveError> {
        self.token.vm_clone(node, source, params).await
    }
    async fn vm_config(&self, node: &NodeName, vmid: VmId) -> Result<Params, PveError> {
        self.token.vm_config(node, vmid).await
    }
    async fn vm_config_put(
        &self,
        node: &NodeName,
        vmid: VmId,
        params: &Params,
    ) -> Result<(), PveError> {
        self.for_params(params)
            .vm_config_put(node, vmid, params)
            .await
    }
    async fn vm_config_post(
        &self,
        node: &NodeName,
        vmid: VmId,
        params: &Params,
    ) -> Result<Upid, PveError> {
        self.for_params(params)
            .vm_config_post(node, vmid, params)
            .await
    }
    async fn vm_resize(
        &self,
        node: &NodeName,
        vmid: VmId,
        disk: &str,
        size: &str,
    ) -> Result<Upid, PveError> {
        self.token.vm_resize(node, vmid, disk, size).await
    }
    async fn vm_status(&self, node: &NodeName, vmid: VmId) -> Result<VmStatus, PveError> {
        self.token.vm_status(node, vmid).await
    }
    async fn vm_start(&self, node: &NodeName, vmid: VmId) -> Result<Upid, PveError> {
        self.token.vm_start(node, vmid).await
    }
    async fn vm_stop(
        &self,
        node: &NodeName,
        vmid: VmId,
        timeout_secs: Option<u32>,
    ) -> Result<Upid, PveError> {
        self.token.vm_stop(node, vmid, timeout_secs).await
    }
    async fn vm_shutdown(
        &self,
        node: &NodeName,
        vmid: VmId,
        timeout_secs: u32,
    ) -> Result<Upid, PveError> {
        self.token.vm_shutdown(node, vmid, timeout_secs).await
    }
    async fn vm_delete(&self, node: &NodeName, vmid: VmId) -> Result<Upid, PveError> {
        self.token.vm_delete(node, vmid).await
    }
    async fn agent_ping(&self, node: &NodeName, vmid: VmId) -> Result<(), PveError> {
        self.token.agent_ping(node, vmid).await
    }
    async fn agent_network_interfaces(
        &self,
        node: &NodeName,
        vmid: VmId,
    ) -> Result<Vec<GuestInterface>, PveError> {
        self.token.agent_network_interfaces(node, vmid).await
    }
    async fn agent_file_read(
        &self,
        node: &NodeName,
        vmid: VmId,
        file: &str,
    ) -> Result<String, PveError> {
        self.token.agent_file_read(node, vmid, file).await
    }
    async fn pci_mappings(&self) -> Result<Vec<PciMapping>, PveError> {
        self.token.pci_mappings().await
    }
    async fn pci_mapping_create(&self, mapping: &PciMapping) -> Result<(), PveError> {
        self.token.pci_mapping_create(mapping).await
    }
    async fn pools(&self) -> Result<Vec<PoolSummary>, PveError> {
        self.token.pools().await
    }
    async fn pool_create(&self, poolid: &str, comment: Option<&str>) -> Result<(), PveError> {
        self.token.pool_create(poolid, comment).await
    }
    async fn node_tasks(
        &self,
        node: &NodeName,
        query: &TaskListQuery,
    ) -> Result<Vec<TaskListEntry>, PveError> {
        self.token.node_tasks(node, query).await
    }
    async fn task_status(&self, node: &NodeName, upid: &Upid) -> Result<TaskStatus, PveError> {
        self.token.task_status(node, upid).await
    }
    async fn task_log(
        &self,
        node: &NodeName,
        upid: &Upid,
        limit: u32,
    ) -> Result<Vec<String>, PveError> {
        self.token.task_log(node, upid, limit).await
    }
}
