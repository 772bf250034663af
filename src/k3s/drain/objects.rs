//! The parts of the Kubernetes objects the drain preflight reads (pods, PodDisruptionBudgets,
//! PersistentVolumeClaims, PersistentVolumes, nodes), parsed from `kubectl get … -o json`, and
//! the rules that give one pod its fate.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{DrainError, DrainFlags, Fate, NodeName, PodFate, Reason};

/// The annotation the kubelet puts on the API mirror of a static pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

#[derive(Debug, Deserialize)]
struct List<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

fn parse_list<T: for<'de> Deserialize<'de>>(
    command: &str,
    json: &str,
) -> Result<Vec<T>, DrainError> {
    serde_json::from_str::<List<T>>(json)
        .map(|list| list.items)
        .map_err(|error| DrainError::Parse {
            command: command.to_owned(),
            message: error.to_string(),
        })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Deserialize)]
struct OwnerReference {
    kind: String,
    name: String,
    #[serde(default)]
    controller: bool,
}

/// A pod, as far as draining cares.
#[derive(Debug, Deserialize)]
pub struct Pod {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: PodSpec,
    #[serde(default)]
    status: PodStatus,
    /// Filled from `spec.nodeName` for the filter in [`super::preflight`].
    #[serde(skip)]
    pub node_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    volumes: Vec<Volume>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Volume {
    name: String,
    #[serde(default)]
    empty_dir: Option<serde_json::Value>,
    #[serde(default)]
    persistent_volume_claim: Option<ClaimSource>,
    #[serde(default)]
    ephemeral: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimSource {
    claim_name: String,
}

#[derive(Debug, Default, Deserialize)]
struct PodStatus {
    #[serde(default)]
    phase: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Pdb {
    metadata: Metadata,
    #[serde(default)]
    spec: PdbSpec,
    #[serde(default)]
    status: PdbStatus,
}

#[derive(Debug, Default, Deserialize)]
struct PdbSpec {
    /// Absent = selects nothing; `{}` = every pod of the namespace (policy/v1).
    #[serde(default)]
    selector: Option<LabelSelector>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PdbStatus {
    #[serde(default)]
    disruptions_allowed: i64,
    #[serde(default)]
    desired_healthy: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LabelSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<Requirement>,
}

#[derive(Debug, Deserialize)]
struct Requirement {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

impl LabelSelector {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|requirement| {
                let value = labels.get(&requirement.key);
                match requirement.operator.as_str() {
                    "In" => value.is_some_and(|v| requirement.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !requirement.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    // An operator this code does not know: assume it matches (warn rather than miss).
                    _ => true,
                }
            })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pvc {
    metadata: Metadata,
    #[serde(default)]
    spec: PvcSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PvcSpec {
    #[serde(default)]
    volume_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Pv {
    metadata: Metadata,
    #[serde(default)]
    spec: PvSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PvSpec {
    #[serde(default)]
    local: Option<serde_json::Value>,
    #[serde(default)]
    host_path: Option<serde_json::Value>,
    #[serde(default)]
    node_affinity: Option<VolumeNodeAffinity>,
}

#[derive(Debug, Deserialize)]
struct VolumeNodeAffinity {
    #[serde(default)]
    required: Option<NodeSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeSelector {
    #[serde(default)]
    node_selector_terms: Vec<NodeSelectorTerm>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeSelectorTerm {
    #[serde(default)]
    match_expressions: Vec<Requirement>,
}

impl Pv {
    /// A node-local volume (`spec.local`, or a hostPath as the local-path provisioner makes)
    /// whose required node affinity names `node`.
    fn bound_to(&self, node: &str) -> bool {
        // The local-path provisioner makes hostPath volumes (or `local` ones) pinned by affinity.
        let local = self.spec.local.is_some() || self.spec.host_path.is_some();
        let names_node = self
            .spec
            .node_affinity
            .as_ref()
            .and_then(|affinity| affinity.required.as_ref())
            .is_some_and(|required| {
                required.node_selector_terms.iter().any(|term| {
                    term.match_expressions.iter().any(|requirement| {
                        requirement.operator == "In"
                            && requirement.values.iter().any(|value| value == node)
                    })
                })
            });
        local && names_node
    }
}

/// What the API says about the node's pods and the objects that decide their fate.
#[derive(Debug, Default)]
pub struct ClusterObjects {
    pub pods: Vec<Pod>,
    pdbs: Vec<Pdb>,
    pvcs: Vec<Pvc>,
    pvs: Vec<Pv>,
}

impl ClusterObjects {
    /// From the output of [`super::list_pods_command`], [`super::GET_PDBS_COMMAND`],
    /// [`super::GET_PVCS_COMMAND`] and [`super::GET_PVS_COMMAND`].
    pub fn parse(pods: &str, pdbs: &str, pvcs: &str, pvs: &str) -> Result<Self, DrainError> {
        let mut pods: Vec<Pod> = parse_list("get pods", pods)?;
        for pod in &mut pods {
            pod.node_name = pod.spec.node_name.clone();
        }
        Ok(Self {
            pods,
            pdbs: parse_list(super::GET_PDBS_COMMAND, pdbs)?,
            pvcs: parse_list(super::GET_PVCS_COMMAND, pvcs)?,
            pvs: parse_list(super::GET_PVS_COMMAND, pvs)?,
        })
    }

    /// The fate of one pod of `node` (kubectl drain's filters, in its order, plus local volumes).
    pub(super) fn fate_of(&self, pod: &Pod, node: &NodeName, flags: DrainFlags) -> PodFate {
        let meta = &pod.metadata;
        let controller = meta.owner_references.iter().find(|owner| owner.controller);
        let mut fate = PodFate {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            controller: controller.map(|owner| format!("{}/{}", owner.kind, owner.name)),
            fate: Fate::Evict,
            reasons: Vec::new(),
        };
        if meta.annotations.contains_key(MIRROR_ANNOTATION) {
            fate.fate = Fate::Skip;
            fate.reasons.push(Reason::Mirror);
            return fate;
        }
        if let Some(owner) = controller.filter(|owner| owner.kind == "DaemonSet") {
            fate.fate = Fate::Skip;
            fate.reasons.push(Reason::DaemonSet {
                name: owner.name.clone(),
            });
            return fate;
        }
        if matches!(pod.status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            fate.reasons.push(Reason::Finished);
            return fate;
        }
        if controller.is_none() {
            fate.reasons.push(Reason::Unmanaged {
                allowed: flags.force,
            });
        }
        let empty_dirs: Vec<String> = pod
            .spec
            .volumes
            .iter()
            .filter(|volume| volume.empty_dir.is_some())
            .map(|volume| volume.name.clone())
            .collect();
        if !empty_dirs.is_empty() {
            fate.reasons.push(Reason::EmptyDir {
                volumes: empty_dirs,
                allowed: flags.delete_emptydir_data,
            });
        }
        for volume in &pod.spec.volumes {
            let claim = match (&volume.persistent_volume_claim, &volume.ephemeral) {
                (Some(source), _) => source.claim_name.clone(),
                // A generic ephemeral volume's claim is named `<pod>-<volume>`.
                (None, Some(_)) => format!("{}-{}", meta.name, volume.name),
                (None, None) => continue,
            };
            let bound = self
                .pvcs
                .iter()
                .find(|pvc| pvc.metadata.namespace == meta.namespace && pvc.metadata.name == claim)
                .and_then(|pvc| pvc.spec.volume_name.as_deref())
                .and_then(|volume_name| self.pvs.iter().find(|pv| pv.metadata.name == volume_name))
                .filter(|pv| pv.bound_to(node.as_str()));
            if let Some(pv) = bound {
                fate.reasons.push(Reason::LocalVolume {
                    claim,
                    volume: pv.metadata.name.clone(),
                    allowed: flags.allow_local_volumes,
                });
            }
        }
        for pdb in &self.pdbs {
            let selects = pdb.metadata.namespace == meta.namespace
                && pdb
                    .spec
                    .selector
                    .as_ref()
                    .is_some_and(|selector| selector.matches(&meta.labels));
            if selects && pdb.status.disruptions_allowed <= 0 {
                fate.reasons.push(Reason::PdbBlocked {
                    pdb: pdb.metadata.name.clone(),
                    desired_healthy: pdb.status.desired_healthy,
                });
            }
        }
        if !fate.missing_flags().is_empty() {
            fate.fate = Fate::Refuse;
        }
        fate
    }
}

/// A node's name, readiness and whether it is cordoned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub name: String,
    pub ready: bool,
    pub unschedulable: bool,
}

#[derive(Debug, Deserialize)]
struct NodeItem {
    metadata: Metadata,
    #[serde(default)]
    spec: NodeSpec,
    #[serde(default)]
    status: NodeStatus,
}

#[derive(Debug, Default, Deserialize)]
struct NodeSpec {
    #[serde(default)]
    unschedulable: bool,
}

#[derive(Debug, Default, Deserialize)]
struct NodeStatus {
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Debug, Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

/// Parse `k3s kubectl get nodes -o json` into [`NodeState`]s.
pub fn parse_node_states(json: &str) -> Result<Vec<NodeState>, DrainError> {
    let items: Vec<NodeItem> = parse_list(crate::k3s::cluster::GET_NODES_COMMAND, json)?;
    Ok(items
        .into_iter()
        .map(|item| NodeState {
            ready: item
                .status
                .conditions
                .iter()
                .any(|c| c.kind == "Ready" && c.status == "True"),
            unschedulable: item.spec.unschedulable,
            name: item.metadata.name,
        })
        .collect())
}
