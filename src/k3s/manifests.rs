//! Manifests dropped into `/var/lib/rancher/k3s/server/manifests/` on the bootstrap server: kube-vip,
//! NVIDIA, storage, GitOps handoff. Rendered from `templates/manifests/`.

use std::collections::BTreeMap;

use crate::profile::Profile;
use crate::profile::credentials::GitCredentials;
use crate::profile::model::{GitOpsEngine, NodeGroup, NvidiaMode};

use super::K3sError;
use super::gitops::{CREDENTIALS_SECRET, argocd_values, credentials_manifest, fleet_values};
use super::templates::Templates;

/// Pinned component versions (override a template to change them).
pub const KUBE_VIP_IMAGE: &str = "ghcr.io/kube-vip/kube-vip:v0.8.9";
pub const GPU_OPERATOR_VERSION: &str = "v24.9.2";
pub const NFS_PROVISIONER_VERSION: &str = "4.0.18";
pub const LOCAL_PATH_IMAGE: &str = "rancher/local-path-provisioner:v0.0.30";
pub const LOCAL_PATH_HELPER_IMAGE: &str = "rancher/mirrored-library-busybox:1.36.1";
pub const FLUX_CHART_VERSION: &str = "2.14.1";
pub const ARGOCD_CHART_VERSION: &str = "7.7.16";
pub const FLEET_CHART_VERSION: &str = "0.11.2";
/// Where k3s's bundled local-path keeps volumes.
pub const DEFAULT_LOCAL_PATH: &str = "/var/lib/rancher/k3s/storage";

/// Node label provision sets on nodes whose scratch disk holds the `fast-scratch` path; the class's
/// `allowedTopologies` selects it. Not under `kubernetes.io`/`k8s.io`: k3s refuses those in `node-label`.
pub const FAST_SCRATCH_LABEL: &str = "provision.dev/fast-scratch";

/// Whether `group`'s scratch disk (its `scratch_mount`) holds the `fast_scratch` path.
pub fn holds_fast_scratch(profile: &Profile, group: &NodeGroup) -> bool {
    let Some(scratch) = &profile.storage.fast_scratch else {
        return false;
    };
    group.disks.scratch_mount.as_deref().is_some_and(|mount| {
        let mount = mount.trim_end_matches('/');
        scratch.path == mount || scratch.path.starts_with(&format!("{mount}/"))
    })
}

/// Labels provision's storage needs on a node of `group`: [`FAST_SCRATCH_LABEL`] where the scratch disk
/// holds the `fast-scratch` path.
pub fn storage_labels(profile: &Profile, group: &NodeGroup) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if holds_fast_scratch(profile, group) {
        labels.insert(FAST_SCRATCH_LABEL.to_owned(), "true".to_owned());
    }
    labels
}

/// One file for the manifests directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// RFC 1123 file name, e.g. `provision-kube-vip.yaml`.
    pub file_name: String,
    pub content: String,
}

/// Every manifest the profile asks for, in apply order. `credentials` are the GitOps repository's, as
/// read from the files `[gitops.credentials]` names (`None` for a public repository); the Secret that
/// carries them is its own manifest, `provision-gitops-credentials.yaml`.
pub fn render_manifests(
    templates: &Templates,
    profile: &Profile,
    credentials: Option<&GitCredentials>,
) -> Result<Vec<Manifest>, K3sError> {
    let mut out = Collector {
        templates,
        manifests: Vec::new(),
    };
    if let Some(vip) = profile.cluster.api_vip {
        out.add(
            "kube-vip",
            "manifests/kube-vip.yaml.j2",
            serde_json::json!({ "vip": vip.to_string(), "image": KUBE_VIP_IMAGE, "interface": "" }),
        )?;
    }
    add_nvidia(&mut out, profile)?;
    add_storage(&mut out, profile)?;
    add_gitops(&mut out, profile, credentials)?;
    Ok(out.manifests)
}

/// Manifests rendered so far, in apply order.
struct Collector<'t> {
    templates: &'t Templates,
    manifests: Vec<Manifest>,
}

impl Collector<'_> {
    /// Renders `template` as `provision-{file}.yaml`.
    fn add(
        &mut self,
        file: &str,
        template: &str,
        context: serde_json::Value,
    ) -> Result<(), K3sError> {
        let content = self.templates.render(template, &context)?;
        self.manifests.push(Manifest {
            file_name: format!("provision-{file}.yaml"),
            content,
        });
        Ok(())
    }
}

/// The GPU operator (operator and host mode) and, in host mode, the `nvidia` RuntimeClass.
fn add_nvidia(out: &mut Collector<'_>, profile: &Profile) -> Result<(), K3sError> {
    let mode = match profile.nvidia.mode {
        NvidiaMode::Operator => "operator",
        NvidiaMode::Host => "host",
        NvidiaMode::None => return Ok(()),
    };
    out.add(
        "nvidia-gpu-operator",
        "manifests/nvidia-gpu-operator.yaml.j2",
        serde_json::json!({
            "mode": mode,
            // The operator's driver container only in operator mode, and only when the image
            // does not carry the driver already (`nvidia.driver = "preinstalled"`).
            "driver_enabled": profile.nvidia.mode == NvidiaMode::Operator
                && !profile.nvidia.driver_preinstalled(),
            "toolkit_enabled": profile.nvidia.mode == NvidiaMode::Operator,
            "version": profile.nvidia.operator_version.as_deref().unwrap_or(GPU_OPERATOR_VERSION),
            "time_slicing_replicas": profile.nvidia.time_slicing_replicas.filter(|r| *r > 1),
            "default_runtime": profile.nvidia.default_runtime,
        }),
    )?;
    if profile.nvidia.mode == NvidiaMode::Host {
        out.add(
            "nvidia-runtimeclass",
            "manifests/nvidia-runtimeclass.yaml.j2",
            serde_json::json!({}),
        )?;
    }
    Ok(())
}

/// The NFS provisioner and the local-path provisioner with the `fast-scratch` class.
fn add_storage(out: &mut Collector<'_>, profile: &Profile) -> Result<(), K3sError> {
    if let Some(nfs) = &profile.storage.nfs {
        out.add(
            "nfs-provisioner",
            "manifests/nfs-provisioner.yaml.j2",
            serde_json::json!({
                "server": nfs.server.to_string(),
                "path": nfs.path,
                "class_name": nfs.class_name,
                "default_class": nfs.default_class,
                "version": NFS_PROVISIONER_VERSION,
            }),
        )?;
    }
    let Some(scratch) = &profile.storage.fast_scratch else {
        return Ok(());
    };
    let nfs_is_default = profile
        .storage
        .nfs
        .as_ref()
        .is_some_and(|n| n.default_class);
    // Volumes of the class land only where the path is on a scratch disk. When no group has one (the
    // validator warns: the path lives on every node's OS disk), any node will do.
    let scratch_label = profile
        .node_groups
        .iter()
        .any(|group| holds_fast_scratch(profile, group))
        .then(|| serde_json::json!({ "key": FAST_SCRATCH_LABEL, "value": "true" }));
    out.add(
        "local-path-provisioner",
        "manifests/local-path-provisioner.yaml.j2",
        serde_json::json!({
            "image": LOCAL_PATH_IMAGE,
            "helper_image": LOCAL_PATH_HELPER_IMAGE,
            "classes": [
                { "name": "local-path", "path": DEFAULT_LOCAL_PATH, "default": !nfs_is_default },
                {
                    "name": scratch.class_name,
                    "path": scratch.path,
                    "default": false,
                    "node_label": scratch_label,
                },
            ],
        }),
    )
}

/// The GitOps engine, its repository credentials Secret (first) and the repository it syncs.
fn add_gitops(
    out: &mut Collector<'_>,
    profile: &Profile,
    credentials: Option<&GitCredentials>,
) -> Result<(), K3sError> {
    let gitops = &profile.gitops;
    let repo = gitops.repo.as_deref().unwrap_or_default();
    let secret_name = credentials.map(|_| CREDENTIALS_SECRET);
    let repo_context = || {
        serde_json::json!({
            "repo": repo,
            "branch": gitops.branch.as_deref().unwrap_or("main"),
            "path": gitops.path.as_deref().unwrap_or("./"),
            "secret_name": secret_name,
        })
    };
    if let Some(credentials) = credentials
        && let Some(content) = credentials_manifest(gitops.engine, repo, credentials)?
    {
        out.manifests.push(Manifest {
            file_name: "provision-gitops-credentials.yaml".to_owned(),
            content,
        });
    }
    let (engine, engine_values, sync) = match gitops.engine {
        GitOpsEngine::Flux => (
            "flux",
            serde_json::json!({ "version": FLUX_CHART_VERSION }),
            "flux-sync",
        ),
        GitOpsEngine::Argocd => (
            "argocd",
            serde_json::json!({
                "version": ARGOCD_CHART_VERSION,
                "values": argocd_values(credentials)?,
            }),
            "argocd-root",
        ),
        GitOpsEngine::Fleet => (
            "fleet",
            serde_json::json!({
                "version": FLEET_CHART_VERSION,
                "values": fleet_values(credentials)?,
            }),
            "fleet-gitrepo",
        ),
        GitOpsEngine::None => return Ok(()),
    };
    out.add(
        engine,
        &format!("manifests/{engine}.yaml.j2"),
        engine_values,
    )?;
    out.add(sync, &format!("manifests/{sync}.yaml.j2"), repo_context())
}
