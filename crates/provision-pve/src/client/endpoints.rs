//! Every [`PveApi`] method of [`PveClient`], each mapped to its `/api2/json` route.

use std::collections::BTreeMap;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::Value;

use crate::api::PveApi;
use crate::error::PveError;
use crate::types::{
    ClusterResource, GuestInterface, NetworkInterface, NodeName, NodeStatus, NodeSummary, Params,
    PciDevice, PciMapping, Permissions, PoolSummary, StorageStatus, StorageVolume, TaskListEntry,
    TaskListQuery, TaskStatus, Upid, UploadContent, Version, VmId, VmStatus, VolumeId,
};

use super::http::{Body, decode_data, multipart_body, value_to_string};
use super::{PveClient, segment};

pub(super) fn params(pairs: &[(&str, String)]) -> Params {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect()
}

/// `GET /cluster/nextid` answers the id as a string (the schema says integer).
pub(super) fn parse_vmid(value: &Value) -> Option<VmId> {
    match value {
        Value::String(text) => text.trim().parse().ok().map(VmId),
        Value::Number(number) => number
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(VmId),
        _ => None,
    }
}

#[async_trait]
impl PveApi for PveClient {
    async fn access_permissions(&self) -> Result<Permissions, PveError> {
        self.get_data("/access/permissions", &[]).await
    }

    async fn version(&self) -> Result<Version, PveError> {
        self.get_data("/version", &[]).await
    }

    async fn cluster_status(&self) -> Result<Vec<Value>, PveError> {
        self.get_data("/cluster/status", &[]).await
    }

    async fn cluster_resources(
        &self,
        kind: Option<&str>,
    ) -> Result<Vec<ClusterResource>, PveError> {
        let query: Vec<(&str, String)> = kind
            .map(|kind| ("type", kind.to_owned()))
            .into_iter()
            .collect();
        self.get_data("/cluster/resources", &query).await
    }

    async fn nodes(&self) -> Result<Vec<NodeSummary>, PveError> {
        self.get_data("/nodes", &[]).await
    }

    async fn node_status(&self, node: &NodeName) -> Result<NodeStatus, PveError> {
        self.get_data(&format!("/nodes/{}/status", segment(&node.0)), &[])
            .await
    }

    async fn node_network(&self, node: &NodeName) -> Result<Vec<NetworkInterface>, PveError> {
        self.get_data(&format!("/nodes/{}/network", segment(&node.0)), &[])
            .await
    }

    async fn pci_devices(&self, node: &NodeName) -> Result<Vec<PciDevice>, PveError> {
        self.get_data(&format!("/nodes/{}/hardware/pci", segment(&node.0)), &[])
            .await
    }

    async fn storages(&self, node: &NodeName) -> Result<Vec<StorageStatus>, PveError> {
        self.get_data(&format!("/nodes/{}/storage", segment(&node.0)), &[])
            .await
    }

    async fn storage_content(
        &self,
        node: &NodeName,
        storage: &str,
        content: Option<&str>,
    ) -> Result<Vec<StorageVolume>, PveError> {
        let query: Vec<(&str, String)> = content
            .map(|content| ("content", content.to_owned()))
            .into_iter()
            .collect();
        self.get_data(
            &format!(
                "/nodes/{}/storage/{}/content",
                segment(&node.0),
                segment(storage)
            ),
            &query,
        )
        .await
    }

    async fn download_url(
        &self,
        node: &NodeName,
        storage: &str,
        params: &Params,
    ) -> Result<Upid, PveError> {
        self.post_upid(
            &format!(
                "/nodes/{}/storage/{}/download-url",
                segment(&node.0),
                segment(storage)
            ),
            params,
        )
        .await
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
        let path = format!(
            "/nodes/{}/storage/{}/upload",
            segment(&node.0),
            segment(storage)
        );
        let content = match content {
            UploadContent::Iso => "iso",
            UploadContent::Import => "import",
        };
        let boundary = format!("provision-{:032x}", rand::random::<u128>());
        let bytes = multipart_body(
            &boundary,
            &[
                ("content", content),
                ("checksum-algorithm", "sha256"),
                ("checksum", sha256),
            ],
            "filename",
            filename,
            &data,
        );
        let envelope = self
            .call(
                Method::POST,
                &path,
                &[],
                Body::Multipart {
                    boundary,
                    bytes: bytes::Bytes::from(bytes),
                },
            )
            .await?;
        decode_data("POST", &path, envelope)
    }

    async fn delete_volume(
        &self,
        node: &NodeName,
        volume: &VolumeId,
    ) -> Result<Option<Upid>, PveError> {
        let path = format!(
            "/nodes/{}/storage/{}/content/{}",
            segment(&node.0),
            segment(volume.storage()),
            segment(&volume.0)
        );
        let envelope = self.call(Method::DELETE, &path, &[], Body::None).await?;
        decode_data("DELETE", &path, envelope)
    }

    async fn next_id(&self, check: Option<VmId>) -> Result<VmId, PveError> {
        let query: Vec<(&str, String)> = check
            .map(|vmid| ("vmid", vmid.to_string()))
            .into_iter()
            .collect();
        let data: Value = self.get_data("/cluster/nextid", &query).await?;
        parse_vmid(&data).ok_or_else(|| PveError::Decode {
            method: "GET".to_owned(),
            path: "/cluster/nextid".to_owned(),
            message: format!("expected a VM id, got {data}"),
        })
    }

    async fn vm_create(&self, node: &NodeName, params: &Params) -> Result<Upid, PveError> {
        self.post_upid(&format!("/nodes/{}/qemu", segment(&node.0)), params)
            .await
    }

    async fn vm_clone(
        &self,
        node: &NodeName,
        source: VmId,
        params: &Params,
    ) -> Result<Upid, PveError> {
        self.post_upid(&Self::qemu_path(node, source, "/clone"), params)
            .await
    }

    async fn vm_config(&self, node: &NodeName, vmid: VmId) -> Result<Params, PveError> {
        let data: BTreeMap<String, Value> = self
            .get_data(&Self::qemu_path(node, vmid, "/config"), &[])
            .await?;
        Ok(data
            .into_iter()
            .map(|(key, value)| (key, value_to_string(&value)))
            .collect())
    }

    async fn vm_config_put(
        &self,
        node: &NodeName,
        vmid: VmId,
        params: &Params,
    ) -> Result<(), PveError> {
        let _ignored: Value = self
            .write_data(Method::PUT, &Self::qemu_path(node, vmid, "/config"), params)
            .await?;
        Ok(())
    }

    async fn vm_config_post(
        &self,
        node: &NodeName,
        vmid: VmId,
        params: &Params,
    ) -> Result<Upid, PveError> {
        self.post_upid(&Self::qemu_path(node, vmid, "/config"), params)
            .await
    }

    async fn vm_resize(
        &self,
        node: &NodeName,
        vmid: VmId,
        disk: &str,
        size: &str,
    ) -> Result<Upid, PveError> {
        self.write_data(
            Method::PUT,
            &Self::qemu_path(node, vmid, "/resize"),
            &params(&[("disk", disk.to_owned()), ("size", size.to_owned())]),
        )
        .await
    }

    async fn vm_status(&self, node: &NodeName, vmid: VmId) -> Result<VmStatus, PveError> {
        self.get_data(&Self::qemu_path(node, vmid, "/status/current"), &[])
            .await
    }

    async fn vm_start(&self, node: &NodeName, vmid: VmId) -> Result<Upid, PveError> {
        self.post_upid(
            &Self::qemu_path(node, vmid, "/status/start"),
            &Params::new(),
        )
        .await
    }

    async fn vm_stop(
        &self,
        node: &NodeName,
        vmid: VmId,
        timeout_secs: Option<u32>,
    ) -> Result<Upid, PveError> {
        let mut body = Params::new();
        if let Some(timeout) = timeout_secs {
            body.insert("timeout".to_owned(), timeout.to_string());
        }
        self.post_upid(&Self::qemu_path(node, vmid, "/status/stop"), &body)
            .await
    }

    async fn vm_shutdown(
        &self,
        node: &NodeName,
        vmid: VmId,
        timeout_secs: u32,
    ) -> Result<Upid, PveError> {
        self.post_upid(
            &Self::qemu_path(node, vmid, "/status/shutdown"),
            &params(&[
                ("timeout", timeout_secs.to_string()),
                ("forceStop", "1".to_owned()),
            ]),
        )
        .await
    }

    async fn vm_delete(&self, node: &NodeName, vmid: VmId) -> Result<Upid, PveError> {
        let path = Self::qemu_path(node, vmid, "");
        let envelope = self
            .call(
                Method::DELETE,
                &path,
                &[
                    ("purge", "1".to_owned()),
                    ("destroy-unreferenced-disks", "1".to_owned()),
                ],
                Body::None,
            )
            .await?;
        decode_data("DELETE", &path, envelope)
    }

    async fn agent_ping(&self, node: &NodeName, vmid: VmId) -> Result<(), PveError> {
        let _answer: Value = self
            .write_data(
                Method::POST,
                &Self::qemu_path(node, vmid, "/agent/ping"),
                &Params::new(),
            )
            .await?;
        Ok(())
    }

    async fn agent_network_interfaces(
        &self,
        node: &NodeName,
        vmid: VmId,
    ) -> Result<Vec<GuestInterface>, PveError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            result: Vec<GuestInterface>,
        }
        let answer: Answer = self
            .get_data(
                &Self::qemu_path(node, vmid, "/agent/network-get-interfaces"),
                &[],
            )
            .await?;
        Ok(answer.result)
    }

    async fn agent_file_read(
        &self,
        node: &NodeName,
        vmid: VmId,
        file: &str,
    ) -> Result<String, PveError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            content: String,
        }
        let answer: Answer = self
            .get_data(
                &Self::qemu_path(node, vmid, "/agent/file-read"),
                &[("file", file.to_owned())],
            )
            .await?;
        Ok(answer.content)
    }

    async fn pci_mappings(&self) -> Result<Vec<PciMapping>, PveError> {
        self.get_data("/cluster/mapping/pci", &[]).await
    }

    async fn pci_mapping_create(&self, mapping: &PciMapping) -> Result<(), PveError> {
        // `map` is an array parameter: one form field per entry.
        let mut fields = vec![("id".to_owned(), mapping.id.clone())];
        if let Some(description) = &mapping.description {
            fields.push(("description".to_owned(), description.clone()));
        }
        fields.extend(
            mapping
                .map
                .iter()
                .map(|entry| ("map".to_owned(), entry.clone())),
        );
        let path = "/cluster/mapping/pci";
        self.call(Method::POST, path, &[], Body::Form(fields))
            .await?;
        Ok(())
    }

    async fn pools(&self) -> Result<Vec<PoolSummary>, PveError> {
        self.get_data("/pools", &[]).await
    }

    async fn pool_create(&self, poolid: &str, comment: Option<&str>) -> Result<(), PveError> {
        let mut body = params(&[("poolid", poolid.to_owned())]);
        if let Some(comment) = comment {
            body.insert("comment".to_owned(), comment.to_owned());
        }
        let _ignored: Value = self.write_data(Method::POST, "/pools", &body).await?;
        Ok(())
    }

    async fn node_tasks(
        &self,
        node: &NodeName,
        query: &TaskListQuery,
    ) -> Result<Vec<TaskListEntry>, PveError> {
        let mut params = vec![
            ("source", query.source.to_owned()),
            ("limit", query.limit.to_string()),
        ];
        if let Some(since) = query.since {
            params.push(("since", since.to_string()));
        }
        self.get_data(&format!("/nodes/{}/tasks", segment(&node.0)), &params)
            .await
    }

    async fn task_status(&self, node: &NodeName, upid: &Upid) -> Result<TaskStatus, PveError> {
        self.get_data(
            &format!(
                "/nodes/{}/tasks/{}/status",
                segment(&node.0),
                segment(&upid.0)
            ),
            &[],
        )
        .await
    }

    async fn task_log(
        &self,
        node: &NodeName,
        upid: &Upid,
        limit: u32,
    ) -> Result<Vec<String>, PveError> {
        #[derive(serde::Deserialize)]
        struct Line {
            t: String,
        }
        let path = format!("/nodes/{}/tasks/{}/log", segment(&node.0), segment(&upid.0));
        let read = |start: u64| {
            let path = path.clone();
            async move {
                let envelope = self
                    .call(
                        Method::GET,
                        &path,
                        &[("start", start.to_string()), ("limit", limit.to_string())],
                        Body::None,
                    )
                    .await?;
                let total = envelope.get("total").and_then(Value::as_u64);
                let lines: Vec<Line> = decode_data("GET", &path, envelope)?;
                Ok::<_, PveError>((total, lines))
            }
        };
        let (total, mut lines) = read(0).await?;
        // The log is read from the start; when it is longer than `limit`, read its tail.
        if let Some(total) = total
            && total > u64::from(limit)
            && lines.len() as u64 >= u64::from(limit)
        {
            lines = read(total - u64::from(limit)).await?.1;
        }
        Ok(lines.into_iter().map(|line| line.t).collect())
    }
}
