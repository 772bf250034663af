//! Where a VM's OS disk comes from: a template clone or an imported cloud image, and on which
//! node and storage that image is downloaded.

use crate::inventory::Inventory;
use crate::profile::model::Profile;
use crate::pve::{NodeName, Params, VmId};

use super::{ImageDownload, ImageSource, PlanError};

pub(super) fn image_source(
    profile: &Profile,
    inventory: &Inventory,
) -> Result<ImageSource, PlanError> {
    if let Some(template) = profile.image.template_vmid {
        let vm = inventory
            .vm(template)
            .ok_or(PlanError::TemplateMissing { vmid: template })?;
        return Ok(ImageSource::Clone {
            template: VmId(template),
            template_node: NodeName(vm.node.clone()),
        });
    }
    if let Some(volume) = &profile.image.volume {
        return Ok(ImageSource::Import {
            volid: volume.clone(),
        });
    }
    Ok(ImageSource::Import {
        volid: format!(
            "{}:import/{}",
            profile.proxmox.storage.images,
            image_file_name(profile)
        ),
    })
}

/// The file name a downloaded cloud image gets on the images storage.
pub fn image_file_name(profile: &Profile) -> String {
    profile.image.file_name.clone().unwrap_or_else(|| {
        profile
            .image
            .url
            .as_deref()
            .and_then(|url| url.rsplit('/').next())
            .filter(|name| !name.is_empty())
            .unwrap_or("cloud-image.qcow2")
            .to_owned()
    })
}

pub(super) fn image_download(
    profile: &Profile,
    node: &str,
    volid: &str,
    inventory: &Inventory,
) -> Option<ImageDownload> {
    let url = profile.image.url.as_ref()?;
    let storage = profile.proxmox.storage.images.clone();
    let node_inventory = inventory.node(node)?;
    if node_inventory.has_volume(volid) {
        return None;
    }
    // A shared storage holding the volume on any node is enough.
    let shared = node_inventory
        .storage(&storage)
        .is_some_and(|s| s.shared == Some(1));
    let download_node = if shared {
        if inventory.nodes.iter().any(|n| n.has_volume(volid)) {
            return None;
        }
        profile
            .proxmox
            .nodes
            .first()
            .cloned()
            .unwrap_or_else(|| node.to_owned())
    } else {
        node.to_owned()
    };
    let mut params = Params::new();
    params.insert("content".into(), "import".into());
    params.insert("filename".into(), image_file_name(profile));
    params.insert("url".into(), url.clone());
    if let Some(sha256) = &profile.image.sha256 {
        params.insert("checksum".into(), sha256.to_ascii_lowercase());
        params.insert("checksum-algorithm".into(), "sha256".into());
    }
    Some(ImageDownload {
        node: NodeName(download_node),
        storage,
        volid: volid.to_owned(),
        params,
    })
}
