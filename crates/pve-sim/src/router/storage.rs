//! The storage routes: `/storage`, `/nodes/{node}/storage`, a storage's status and content,
//! volumes (get, delete), `download-url` and `upload`.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::state::{
    ApiError, ApiResult, State, TaskAction, Volume, WgetProgress, durations, find_volume,
    format_size, now_ms, referenced_volumes, volume_key,
};

use super::body::Upload;
use super::{Reply, Request};

impl Request<'_> {
    /// `GET /storage`: the cluster's storage configuration (storage.cfg).
    pub(super) fn storage_config_list(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        let kind = self.text("type");
        let entries: Vec<Value> = state
            .inventory
            .storages
            .iter()
            .filter(|s| kind.is_none_or(|k| s.kind == k))
            .map(|s| {
                let mut entry = json!({
                    "storage": s.name, "type": s.kind, "content": s.content.join(","),
                    "digest": State::digest(&BTreeMap::from([("storage".to_owned(), s.name.clone())])),
                });
                if s.shared {
                    entry["shared"] = json!(1);
                }
                match s.kind.as_str() {
                    "dir" => entry["path"] = json!(storage_path(s)),
                    "lvmthin" => {
                        entry["vgname"] = json!("pve");
                        entry["thinpool"] = json!("data");
                    }
                    _ => {}
                }
                entry
            })
            .collect();
        Reply::data(json!(entries))
    }

    fn storage_entry(state: &State, node: &str, storage: &crate::inventory::StorageSpec) -> Value {
        let total = storage.size_gib << 30;
        let used = state.storage_used(node, &storage.name).min(total);
        json!({
            "storage": storage.name, "type": storage.kind, "content": storage.content.join(","),
            "active": 1, "enabled": 1, "shared": u8::from(storage.shared),
            "total": total, "used": used, "avail": total - used,
            "used_fraction": used as f64 / total.max(1) as f64,
        })
    }

    pub(super) fn storages(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        state.node(self.node())?;
        let content = self.text("content");
        let entries: Vec<Value> = state
            .inventory
            .storages
            .iter()
            .filter(|s| {
                content.is_none_or(|c| c.split(',').all(|c| s.content.iter().any(|x| x == c)))
            })
            .filter(|s| self.text("storage").is_none_or(|name| s.name == name))
            .map(|s| Self::storage_entry(&state, self.node(), s))
            .collect();
        Reply::data(json!(entries))
    }

    pub(super) fn storage_status(&self) -> ApiResult<Reply> {
        let storage_name = self.vars.get("storage").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/storage/{storage_name}"), "Datastore.Audit")?;
        let state = self.shared.state();
        state.node(self.node())?;
        let storage = state.storage(&storage_name)?;
        Reply::data(Self::storage_entry(&state, self.node(), storage))
    }

    pub(super) fn storage_content(&self) -> ApiResult<Reply> {
        let storage_name = self.vars.get("storage").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/storage/{storage_name}"), "Datastore.Audit")?;
        let state = self.shared.state();
        state.node(self.node())?;
        let storage = state.storage(&storage_name)?;
        let content = self.text("content");
        let vmid: Option<u32> = self.text("vmid").and_then(|v| v.parse().ok());
        let entries: Vec<Value> = state
            .volumes
            .values()
            .filter(|v| v.volid.split(':').next() == Some(storage.name.as_str()))
            .filter(|v| storage.shared || v.node.as_deref() == Some(self.node()))
            .filter(|v| content.is_none_or(|c| v.content == c))
            .filter(|v| vmid.is_none_or(|id| v.vmid == Some(id)))
            .map(|v| {
                let mut entry = json!({
                    "volid": v.volid, "content": v.content, "format": v.format,
                    "size": v.size, "ctime": v.ctime,
                });
                if let Some(vmid) = v.vmid {
                    entry["vmid"] = json!(vmid);
                }
                entry
            })
            .collect();
        Reply::data(json!(entries))
    }

    /// pve-storage PVE::API2::Storage::Content `info`: path, size, used, format.
    pub(super) fn volume_get(&self) -> ApiResult<Reply> {
        let storage_name = self.vars.get("storage").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/storage/{storage_name}"), "Datastore.Audit")?;
        let volume = self.vars.get("volume").cloned().unwrap_or_default();
        let volid = if volume.contains(':') {
            volume
        } else {
            format!("{storage_name}:{volume}")
        };
        let state = self.shared.state();
        state.node(self.node())?;
        let found = find_volume(&state, self.node(), &volid)
            .ok_or_else(|| ApiError::internal(format!("volume '{volid}' does not exist")))?;
        let storage = state.storage(volid.split(':').next().unwrap_or(""))?;
        let volname = volid.split_once(':').map_or("", |(_, name)| name);
        let path = match storage.kind.as_str() {
            "lvmthin" | "lvm" => format!("/dev/pve/{volname}"),
            "zfspool" | "zfs" => format!("/dev/zvol/rpool/data/{volname}"),
            _ => match volname.split_once('/') {
                Some((content, file)) => {
                    format!("{}/template/{content}/{file}", storage_path(storage))
                        .replace("/template/import/", "/import/")
                        .replace("/template/images/", "/images/")
                }
                None => format!("{}/images/{volname}", storage_path(storage)),
            },
        };
        Reply::data(json!({
            "path": path, "size": found.size, "used": found.size, "format": found.format,
            "protected": 0,
        }))
    }

    pub(super) fn volume_delete(&self) -> ApiResult<Reply> {
        let storage = self.vars.get("storage").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/storage/{storage}"), "Datastore.Allocate")?;
        let volume = self.vars.get("volume").cloned().unwrap_or_default();
        let volid = if volume.contains(':') {
            volume
        } else {
            format!("{storage}:{volume}")
        };
        let mut state = self.shared.state();
        state.node(self.node())?;
        let Some(found) = find_volume(&state, self.node(), &volid) else {
            return Err(ApiError::internal(format!(
                "volume '{volid}' does not exist"
            )));
        };
        if let Some(vmid) = found.vmid
            && found.content == "images"
            && state
                .vms
                .get(&vmid)
                .is_some_and(|vm| referenced_volumes(&vm.config).contains(&volid))
        {
            return Err(ApiError::internal(format!(
                "volume '{volid}' is still in use by VM {vmid}"
            )));
        }
        let key = volume_key(found.node.as_deref(), &volid);
        let upid = self.spawn(
            &mut state,
            "imgdel",
            &volid,
            durations::VOLUME_DELETE,
            TaskAction::DeleteVolume { key },
            None,
            Vec::new(),
        );
        Reply::data(json!(upid))
    }

    pub(super) fn check_content(
        storage: &crate::inventory::StorageSpec,
        content: &str,
    ) -> ApiResult<()> {
        if storage.content.iter().any(|c| c == content) {
            Ok(())
        } else {
            Err(ApiError::internal(format!(
                "storage '{}' does not support content-type '{content}'",
                storage.name
            )))
        }
    }

    pub(super) fn download_url(&self) -> ApiResult<Reply> {
        let storage_name = self.vars.get("storage").cloned().unwrap_or_default();
        self.identity.check(
            &format!("/storage/{storage_name}"),
            "Datastore.AllocateTemplate",
        )?;
        self.identity.check("/", "Sys.Modify")?;
        let content = self.text("content").unwrap_or("").to_owned();
        let filename = self.text("filename").unwrap_or("").to_owned();
        let url = self.text("url").unwrap_or("").to_owned();
        let mut state = self.shared.state();
        state.node(self.node())?;
        let storage = state.storage(&storage_name)?.clone();
        Self::check_content(&storage, &content)?;
        let volid = format!("{storage_name}:{content}/{filename}");
        if find_volume(&state, self.node(), &volid).is_some() {
            return Err(ApiError::internal(format!(
                "refusing to override existing file '{filename}'"
            )));
        }
        // No network: a known image has its size and checksums; any other URL a size derived
        // from it so repeated runs agree.
        let known = state
            .inventory
            .images
            .iter()
            .find(|i| i.url == url)
            .cloned();
        let size = known.as_ref().map_or_else(|| url_size(&url), |i| i.size);
        let volume = Volume {
            volid: volid.clone(),
            node: (!storage.shared).then(|| self.node().to_owned()),
            content: content.clone(),
            format: format_of(&filename),
            size,
            vmid: None,
            ctime: now_ms() / 1000,
            data: None,
        };
        // pve-common PVE::Tools `download_file_from_url`: wget's header and progress rows
        // while the bytes arrive, then "calculating checksum..." with "OK, checksum verified"
        // or die "checksum mismatch: got '…' != expect '…'", then "download of … finished".
        let dest = format!("/var/lib/vz/template/{content}/{filename}");
        let tmp = format!("{dest}.tmp_dwnl.{}", state.next_pid);
        let log = vec![
            format!("downloading {url} to {tmp}"),
            format!(
                "Length: {size} ({}) [application/octet-stream]",
                format_size(size)
            ),
            format!("Saving to: '{tmp}'"),
        ];
        let prefix = log.len();
        let mut log = log;
        let mut doomed = None;
        if let Some(expected) = self.text("checksum") {
            let algorithm = self.text("checksum-algorithm").unwrap_or("sha256");
            match known.as_ref().and_then(|i| i.checksums.get(algorithm)) {
                Some(actual) if !actual.eq_ignore_ascii_case(expected) => {
                    log.push("calculating checksum...".to_owned());
                    doomed = Some(format!(
                        "checksum mismatch: got '{actual}' != expect '{expected}'"
                    ));
                }
                Some(_) | None => {
                    log.push("calculating checksum...OK, checksum verified".to_owned());
                }
            }
        }
        if doomed.is_none() {
            log.push(format!("download of '{url}' to '{dest}' finished"));
        }
        let rate = durations::WAN_MIB_S * (1u64 << 20) as f64;
        let wan_s = size as f64 / rate;
        let upid = self.spawn(
            &mut state,
            "download",
            &filename,
            wan_s,
            TaskAction::AddVolume {
                volume: Box::new(volume),
            },
            doomed,
            log,
        );
        let wire_ms = (wan_s * self.shared.config.time_scale * 1000.0) as u64;
        if let Some(task) = state.tasks.iter_mut().find(|t| t.upid == upid) {
            task.wget = Some(WgetProgress {
                prefix,
                started_ms: now_ms(),
                wire_ms,
                size,
                rate,
            });
        }
        self.shared
            .start_transfer(&mut state, &upid, self.node(), &storage, size, 0, "");
        Reply::data(json!(upid))
    }

    pub(super) fn upload(&self, upload: Option<Upload>) -> ApiResult<Reply> {
        let storage_name = self.vars.get("storage").cloned().unwrap_or_default();
        self.identity.check(
            &format!("/storage/{storage_name}"),
            "Datastore.AllocateTemplate",
        )?;
        let Some(upload) = upload else {
            return Err(ApiError::param("filename", "missing file content"));
        };
        let content = self.text("content").unwrap_or("").to_owned();
        let mut state = self.shared.state();
        state.node(self.node())?;
        let storage = state.storage(&storage_name)?.clone();
        Self::check_content(&storage, &content)?;
        let filename = upload.filename.clone();
        let volid = format!("{storage_name}:{content}/{filename}");
        let mut doomed = None;
        let actual = hex::encode(Sha256::digest(&upload.data));
        if let Some(expected) = self.text("checksum") {
            let algorithm = self.text("checksum-algorithm").unwrap_or("sha256");
            if algorithm != "sha256" {
                doomed = Some(format!("checksum algorithm '{algorithm}' not simulated"));
            } else if !expected.eq_ignore_ascii_case(&actual) {
                doomed = Some(format!(
                    "checksum mismatch: got '{actual}' != expect '{expected}'"
                ));
            }
        }
        let size = upload.data.len() as u64;
        let volume = Volume {
            volid,
            node: (!storage.shared).then(|| self.node().to_owned()),
            content,
            format: format_of(&filename),
            size,
            vmid: None,
            ctime: now_ms() / 1000,
            data: Some(upload.data),
        };
        let upid = self.spawn(
            &mut state,
            "imgcopy",
            "",
            durations::UPLOAD,
            TaskAction::AddVolume {
                volume: Box::new(volume),
            },
            doomed,
            vec![format!(
                "starting file import from: /var/tmp/pveupload-{}",
                &actual[..16]
            )],
        );
        self.shared
            .start_transfer(&mut state, &upid, self.node(), &storage, size, 0, "");
        Reply::data(json!(upid))
    }
}

/// A deterministic size for a URL the simulator cannot fetch (shared by `download-url` and
/// `query-url-metadata` so both agree).
pub(super) fn url_size(url: &str) -> u64 {
    300 * (1 << 20) + (u64::from(Sha256::digest(url.as_bytes())[0]) << 20)
}

pub(super) fn url_filename(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or("").to_owned()
}

/// Where a directory storage lives (`local` is `/var/lib/vz`, others `/mnt/pve/NAME`).
fn storage_path(storage: &crate::inventory::StorageSpec) -> String {
    if storage.name == "local" {
        "/var/lib/vz".to_owned()
    } else {
        format!("/mnt/pve/{}", storage.name)
    }
}

pub(super) fn format_of(filename: &str) -> String {
    match filename.rsplit_once('.').map(|(_, ext)| ext) {
        Some("qcow2") => "qcow2",
        Some("vmdk") => "vmdk",
        Some("iso") => "iso",
        Some("img" | "raw") => "raw",
        Some("ova") => "ova",
        Some(_) | None => "raw",
    }
    .to_owned()
}
