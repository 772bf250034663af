//! The clone strategies (`image.strategy = "linked-clone" | "full-clone"`): one template per
//! (Proxmox node, image, storage), built once from the image and kept, each created VM a clone
//! of the template on its node. `down` destroys the templates after the VMs.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::inventory::cluster_tag;
use crate::profile::model::{ImageStrategy, Profile};
use crate::pve::{NodeName, Params, VmId};

use super::ledger::{Ledger, allocate_vmid};
use super::{Action, ActionKind, ImageSource, PlanError, PlanInput, PlannedVm, propstrings};

/// The tag that marks a VM as a template provision built (besides the cluster's tag).
pub const TEMPLATE_TAG: &str = "provision-template";

/// What happens to a template in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TemplateAction {
    /// Create it from the image (`template: 1`, `import-from`) before its clones.
    Create,
    /// It exists and is reused.
    Keep,
    /// `down`: destroyed after every VM of the cluster.
    Destroy,
}

/// A template provision builds (or keeps, or destroys) on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedTemplate {
    pub name: String,
    pub node: NodeName,
    pub vmid: VmId,
    /// The image volume it imports.
    pub image: String,
    /// The storage of its base disk (and of its clones' disks).
    pub storage: String,
    pub action: TemplateAction,
    /// Create parameters (`POST /nodes/{node}/qemu`); empty unless created.
    #[serde(skip_serializing_if = "Params::is_empty")]
    pub params: Params,
    /// The download (node, storage) its create imports, if one is planned.
    #[serde(skip)]
    pub image_download: Option<(NodeName, String)>,
}

/// The template's name: the cluster, the node and a short hash of what it is built from, so a
/// new image or storage gets a new template.
pub fn template_name(cluster: &str, node: &str, image: &str, storage: &str) -> String {
    let digest = Sha256::digest(format!("{image}\n{storage}").as_bytes());
    format!("{cluster}-template-{node}-{}", &hex::encode(digest)[..8])
}

/// Clone strategy: the templates the created VMs need, and each created VM's image turned into
/// a clone of its node's template (which, once it exists, needs no download).
pub(super) fn plan_templates(
    input: &PlanInput<'_>,
    vms: &mut [PlannedVm],
    actions: &[Action],
    ledger: &mut Ledger,
) -> Result<Vec<PlannedTemplate>, PlanError> {
    let profile = input.profile;
    let strategy = profile.image.strategy;
    if strategy.is_import() || profile.image.template_vmid.is_some() {
        return Ok(Vec::new());
    }
    let creating: BTreeSet<&str> = actions
        .iter()
        .filter(|a| matches!(a.kind(), ActionKind::Create | ActionKind::Replace))
        .map(Action::vm)
        .collect();
    let storage = profile.proxmox.storage.disks.clone();
    let mut templates: BTreeMap<String, PlannedTemplate> = BTreeMap::new();
    for vm in vms.iter_mut() {
        if !creating.contains(vm.name.as_str()) {
            continue;
        }
        let ImageSource::Import { volid } = &vm.image else {
            continue;
        };
        if strategy == ImageStrategy::LinkedClone {
            check_links(input, &vm.node.0, &storage)?;
        }
        let name = template_name(&profile.cluster.name, &vm.node.0, volid, &storage);
        if !templates.contains_key(&name) {
            let template = one_template(input, &name, &vm.node, volid, &storage, ledger)?;
            templates.insert(name.clone(), template);
        }
        let Some(template) = templates.get_mut(&name) else {
            continue;
        };
        match template.action {
            TemplateAction::Keep => vm.image_download = None,
            TemplateAction::Create | TemplateAction::Destroy => {
                template.image_download = vm.image_download.clone();
            }
        }
        vm.image = ImageSource::Template {
            template: template.vmid,
            name,
            strategy,
        };
    }
    Ok(templates.into_values().collect())
}

/// pve-storage's `volume_has_feature(…, 'clone', …)`: only these storage types link a clone
/// to a base volume (LVM thick, iSCSI and the rest copy).
const LINKING_STORAGES: &[&str] = &[
    "lvmthin",
    "zfspool",
    "rbd",
    "dir",
    "nfs",
    "cifs",
    "glusterfs",
    "btrfs",
    "cephfs",
];

/// A linked clone on `storage` of `node` is possible (an unobserved storage is not refused).
fn check_links(input: &PlanInput<'_>, node: &str, storage: &str) -> Result<(), PlanError> {
    let kind = input
        .inventory
        .node(node)
        .and_then(|n| n.storage(storage))
        .map(|s| s.kind.clone());
    match kind {
        Some(kind) if !LINKING_STORAGES.contains(&kind.as_str()) => {
            Err(PlanError::StorageCannotLink {
                storage: storage.to_owned(),
                kind,
                node: node.to_owned(),
            })
        }
        Some(_) | None => Ok(()),
    }
}

/// The template `name` on `node`: kept when Proxmox shows it (a template with the cluster's
/// tag), else created with the id an earlier run recorded for it, or a new id from the range.
fn one_template(
    input: &PlanInput<'_>,
    name: &str,
    node: &NodeName,
    image: &str,
    storage: &str,
    ledger: &mut Ledger,
) -> Result<PlannedTemplate, PlanError> {
    let PlanInput {
        profile,
        inventory,
        state,
        ..
    } = *input;
    let tag = cluster_tag(&profile.cluster.name);
    let ours = |vmid: u32| {
        inventory
            .vm(vmid)
            .filter(|vm| vm.name == name && vm.has_tag(&tag))
    };
    let recorded = state.templates.get(name).map(|record| record.vmid);
    let found = recorded.and_then(ours).or_else(|| {
        inventory
            .cluster_vms(&profile.cluster.name)
            .find(|vm| vm.name == name && vm.template)
    });
    let (vmid, action) = match found {
        // A finished template; one still being created (from an interrupted run) is created
        // again, which waits for that create.
        Some(vm) if vm.template && vm.lock.is_none() => (vm.vmid, TemplateAction::Keep),
        Some(vm) => (vm.vmid, TemplateAction::Create),
        None => match recorded.filter(|vmid| inventory.vm(*vmid).is_none()) {
            Some(vmid) => (vmid, TemplateAction::Create),
            None => (
                allocate_vmid(profile, name, ledger)?,
                TemplateAction::Create,
            ),
        },
    };
    let params = match action {
        TemplateAction::Create => template_params(profile, name, vmid, image, storage),
        TemplateAction::Keep | TemplateAction::Destroy => Params::new(),
    };
    Ok(PlannedTemplate {
        name: name.to_owned(),
        node: node.clone(),
        vmid: VmId(vmid),
        image: image.to_owned(),
        storage: storage.to_owned(),
        action,
        params,
        image_download: None,
    })
}

/// A VM created as a template at once (qemu-server makes its disks base volumes), its OS disk
/// imported from the image: what every clone starts from before its own config is applied.
fn template_params(profile: &Profile, name: &str, vmid: u32, image: &str, storage: &str) -> Params {
    let mut params = Params::new();
    let mut set = |key: &str, value: String| {
        params.insert(key.to_owned(), value);
    };
    set("vmid", vmid.to_string());
    set("name", name.to_owned());
    set("ostype", "l26".into());
    set("scsihw", "virtio-scsi-single".into());
    set(
        "scsi0",
        propstrings::scsi_disk(format!("{storage}:0"), Some(image)),
    );
    set("boot", "order=scsi0".into());
    set("template", "1".into());
    set(
        "tags",
        [
            "provision".to_owned(),
            cluster_tag(&profile.cluster.name),
            TEMPLATE_TAG.to_owned(),
        ]
        .join(";"),
    );
    set(
        "description",
        format!(
            "Template built by provision from {image} for the clones of cluster {}. Do not edit by hand; `provision down` removes it.",
            profile.cluster.name
        ),
    );
    if let Some(pool) = &profile.proxmox.pool {
        set("pool", pool.clone());
    }
    params
}

/// `down`: every template the state records that Proxmox still shows with the cluster's tag
/// and its name; the others are only forgotten.
pub(super) fn down_templates(input: &PlanInput<'_>) -> Vec<PlannedTemplate> {
    let tag = cluster_tag(&input.profile.cluster.name);
    input
        .state
        .templates
        .values()
        .filter_map(|record| {
            let vm = input
                .inventory
                .vm(record.vmid)
                .filter(|vm| vm.has_tag(&tag) && vm.name == record.name)?;
            Some(PlannedTemplate {
                name: record.name.clone(),
                node: NodeName(vm.node.clone()),
                vmid: VmId(record.vmid),
                image: record.image.clone(),
                storage: record.storage.clone(),
                action: TemplateAction::Destroy,
                params: Params::new(),
                image_download: None,
            })
        })
        .collect()
}
