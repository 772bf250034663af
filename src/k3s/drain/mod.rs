//! Draining a node the way `kubectl drain` does, with a preflight first: the commands that read
//! the node's pods, PodDisruptionBudgets and volumes, the pure [`preflight`] that says what will
//! happen to every pod, and the `kubectl drain` / `uncordon` commands themselves.
//!
//! kubectl's rules (k8s.io/kubectl/pkg/drain): mirror pods and DaemonSet pods are skipped
//! (`--ignore-daemonsets`), pods without a controller need `--force`, pods with an emptyDir
//! volume need `--delete-emptydir-data`, finished pods (Succeeded/Failed) are deleted without
//! either flag, and evictions go through `policy/v1` so a PodDisruptionBudget with no
//! disruption allowed makes kubectl retry until its timeout. provision adds one rule: a pod on
//! a volume bound to this node (`spec.local`, or the local-path provisioner's hostPath with
//! node affinity) is evicted but never comes back elsewhere, so it needs
//! `--allow-local-volumes`.

mod objects;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::nodeprep::shell::quote;

pub use objects::{ClusterObjects, NodeState, parse_node_states};

/// Lists the PodDisruptionBudgets of every namespace.
pub const GET_PDBS_COMMAND: &str = "k3s kubectl get pdb -A -o json";
/// Lists the PersistentVolumeClaims of every namespace.
pub const GET_PVCS_COMMAND: &str = "k3s kubectl get pvc -A -o json";
/// Lists the PersistentVolumes.
pub const GET_PVS_COMMAND: &str = "k3s kubectl get pv -o json";

/// Errors of draining a node.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("{name:?} is not a valid node name: {reason}")]
    InvalidNodeName { name: String, reason: &'static str },
    #[error("cannot read `{command}` output: {message}")]
    Parse { command: String, message: String },
    #[error(
        "refusing to drain {node}; nothing was changed (the node is not even cordoned):\n{pods}"
    )]
    Refused { node: String, pods: String },
    #[error(
        "drain of {node} did not finish: {count} pod(s) still on it: {pods}; the node stays cordoned",
        count = pods.len(), pods = pods.join(", ")
    )]
    TimedOut { node: String, pods: Vec<String> },
    #[error("`{command}` on {server} failed (exit {exit_status}): {stderr}")]
    Kubectl {
        command: String,
        server: String,
        exit_status: u32,
        stderr: String,
    },
    #[error("node {node} is not registered in the cluster (`k3s kubectl get nodes` on {server})")]
    NotRegistered { node: String, server: String },
}

impl crate::error::UserFacing for DrainError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            DrainError::InvalidNodeName { .. } | DrainError::Refused { .. } => {
                crate::exit::ExitStatus::UserError
            }
            DrainError::Parse { .. }
            | DrainError::TimedOut { .. }
            | DrainError::Kubectl { .. }
            | DrainError::NotRegistered { .. } => crate::exit::ExitStatus::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            DrainError::Refused { .. } => Some(
                "add the flag named for each pod, or move those pods first; `--dry-run` shows the preflight"
                    .to_owned(),
            ),
            DrainError::TimedOut { node, .. } => Some(format!(
                "`provision uncordon --profile P {node}` gives the node back; or fix what holds the pods (a PodDisruptionBudget allowing no disruption) and drain again, perhaps with a longer --timeout"
            )),
            DrainError::NotRegistered { .. } => {
                Some("run `provision up` to join it, or check k3s on that node".to_owned())
            }
            DrainError::InvalidNodeName { .. }
            | DrainError::Parse { .. }
            | DrainError::Kubectl { .. } => None,
        }
    }
}

/// A Kubernetes node name: an RFC 1123 subdomain (lowercase letters, digits, `-` and `.`, at most
/// 253 characters, each dot-separated label starting and ending with a letter or digit), so it
/// is one shell word that kubectl cannot take for an option.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct NodeName(String);

impl NodeName {
    pub fn new(name: &str) -> Result<Self, DrainError> {
        let invalid = |reason| DrainError::InvalidNodeName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() || name.len() > 253 {
            return Err(invalid("it must have 1 to 253 characters"));
        }
        for label in name.split('.') {
            let bytes = label.as_bytes();
            let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
                return Err(invalid("it has an empty label between dots"));
            };
            if !bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            {
                return Err(invalid(
                    "only lowercase letters, digits, `-` and `.` are allowed (RFC 1123)",
                ));
            }
            if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
                return Err(invalid(
                    "each label must start and end with a letter or digit (RFC 1123)",
                ));
            }
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The flags of `provision drain` that change verdicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DrainFlags {
    /// Delete pods without a controller (`--force`).
    pub force: bool,
    /// Delete pods with emptyDir volumes, losing the data (`--delete-emptydir-data`).
    pub delete_emptydir_data: bool,
    /// Evict pods whose volumes are bound to this node (`--allow-local-volumes`).
    pub allow_local_volumes: bool,
}

/// `k3s kubectl get pods -A -o json --field-selector spec.nodeName=NODE`.
pub fn list_pods_command(node: &NodeName) -> String {
    format!(
        "k3s kubectl get pods -A -o json --field-selector {}",
        quote(&format!("spec.nodeName={node}"))
    )
}

/// `k3s kubectl drain NODE --ignore-daemonsets [--force] [--delete-emptydir-data] --timeout Ns`.
pub fn drain_command(node: &NodeName, flags: DrainFlags, timeout: Duration) -> String {
    let mut command = format!(
        "k3s kubectl drain {} --ignore-daemonsets",
        quote(node.as_str())
    );
    if flags.force {
        command.push_str(" --force");
    }
    if flags.delete_emptydir_data {
        command.push_str(" --delete-emptydir-data");
    }
    command.push_str(&format!(" --timeout {}s", timeout.as_secs().max(1)));
    command
}

/// `k3s kubectl uncordon NODE` (a no-op on a schedulable node).
pub fn uncordon_command(node: &NodeName) -> String {
    format!("k3s kubectl uncordon {}", quote(node.as_str()))
}

/// What happens to a pod when the node is drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Evicted (or deleted, for unmanaged pods with `--force`).
    Evict,
    /// Left alone: a DaemonSet pod or a mirror pod.
    Skip,
    /// Needs a flag that was not given: the drain is refused.
    Refuse,
}

/// A flag of `provision drain` that allows a pod to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Flag {
    #[serde(rename = "--force")]
    Force,
    #[serde(rename = "--delete-emptydir-data")]
    DeleteEmptydirData,
    #[serde(rename = "--allow-local-volumes")]
    AllowLocalVolumes,
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flag::Force => "--force",
            Flag::DeleteEmptydirData => "--delete-emptydir-data",
            Flag::AllowLocalVolumes => "--allow-local-volumes",
        })
    }
}

/// Why a pod has its fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// Controlled by a DaemonSet: its pod comes back on the node whatever happens.
    DaemonSet { name: String },
    /// A mirror of a static pod (`kubernetes.io/config.mirror`): the kubelet owns it.
    Mirror,
    /// Succeeded or Failed: deleted without needing any flag.
    Finished,
    /// No controller: nothing recreates it once deleted.
    Unmanaged { allowed: bool },
    /// emptyDir volumes: their data is lost.
    EmptyDir { volumes: Vec<String>, allowed: bool },
    /// A volume bound to this node: the replacement stays Pending elsewhere.
    LocalVolume {
        claim: String,
        volume: String,
        allowed: bool,
    },
    /// A PodDisruptionBudget allows no disruption now: eviction waits (until the timeout).
    PdbBlocked { pdb: String, desired_healthy: i64 },
}

impl Reason {
    /// The flag that allows it, and whether it was given.
    pub fn flag(&self) -> Option<(Flag, bool)> {
        match self {
            Reason::Unmanaged { allowed } => Some((Flag::Force, *allowed)),
            Reason::EmptyDir { allowed, .. } => Some((Flag::DeleteEmptydirData, *allowed)),
            Reason::LocalVolume { allowed, .. } => Some((Flag::AllowLocalVolumes, *allowed)),
            Reason::DaemonSet { .. }
            | Reason::Mirror
            | Reason::Finished
            | Reason::PdbBlocked { .. } => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::DaemonSet { name } => write!(f, "DaemonSet {name}"),
            Reason::Mirror => f.write_str("mirror pod"),
            Reason::Finished => f.write_str("finished"),
            Reason::Unmanaged { .. } => f.write_str("no controller"),
            Reason::EmptyDir { volumes, .. } => write!(f, "emptyDir {}", volumes.join(",")),
            Reason::LocalVolume { claim, volume, .. } => write!(
                f,
                "will not reschedule: volume {volume} (claim {claim}) is bound to this node"
            ),
            Reason::PdbBlocked {
                pdb,
                desired_healthy,
            } => write!(f, "blocked by PDB {pdb} needing {desired_healthy} healthy"),
        }?;
        match self.flag() {
            Some((flag, true)) => write!(f, " (allowed by {flag})"),
            Some((flag, false)) => write!(f, " (needs {flag})"),
            None => Ok(()),
        }
    }
}

/// One pod on the node and what draining does to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodFate {
    pub namespace: String,
    pub name: String,
    /// `Kind/name` of the controller, if any.
    pub controller: Option<String>,
    pub fate: Fate,
    pub reasons: Vec<Reason>,
}

impl PodFate {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The flags this pod needs that were not given.
    pub fn missing_flags(&self) -> Vec<Flag> {
        self.reasons
            .iter()
            .filter_map(Reason::flag)
            .filter(|(_, given)| !given)
            .map(|(flag, _)| flag)
            .collect()
    }
}

/// Every pod on the node with its fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preflight {
    pub node: NodeName,
    pub pods: Vec<PodFate>,
}

impl Preflight {
    /// Pods that need a flag that was not given.
    pub fn refused(&self) -> Vec<&PodFate> {
        self.pods
            .iter()
            .filter(|p| p.fate == Fate::Refuse)
            .collect()
    }

    /// The refusal as an error listing each pod and the flag that would allow it, if any pod is refused.
    pub fn refusal(&self) -> Option<DrainError> {
        let refused = self.refused();
        if refused.is_empty() {
            return None;
        }
        let pods = refused
            .iter()
            .map(|pod| {
                let flags: Vec<String> = pod
                    .missing_flags()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                format!("  {}: needs {}", pod.id(), flags.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n");
        Some(DrainError::Refused {
            node: self.node.to_string(),
            pods,
        })
    }

    /// Pods drain moves (not skipped) that are still in `remaining` (a re-list of the node).
    pub fn still_on_node(&self, remaining: &[PodFate]) -> Vec<String> {
        remaining
            .iter()
            .filter(|pod| pod.fate != Fate::Skip)
            .map(PodFate::id)
            .collect()
    }
}

impl fmt::Display for Preflight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pods.is_empty() {
            return writeln!(f, "no pods on {}", self.node);
        }
        let rows: Vec<[String; 4]> = self
            .pods
            .iter()
            .map(|pod| {
                let fate = match pod.fate {
                    Fate::Evict => "evict",
                    Fate::Skip => "skip",
                    Fate::Refuse => "refuse",
                };
                [
                    pod.namespace.clone(),
                    pod.name.clone(),
                    pod.controller.clone().unwrap_or_else(|| "-".to_owned()),
                    fate.to_owned(),
                ]
            })
            .collect();
        let headers = ["NAMESPACE", "POD", "CONTROLLER", "FATE"];
        let widths: Vec<usize> = (0..4)
            .map(|i| {
                rows.iter()
                    .map(|row| row[i].len())
                    .chain([headers[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 4], why: &str| {
            let text = format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {why}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
            );
            writeln!(f, "{}", text.trim_end())
        };
        line(f, headers, "WHY")?;
        for (pod, row) in self.pods.iter().zip(&rows) {
            let why: Vec<String> = pod.reasons.iter().map(ToString::to_string).collect();
            line(f, [&row[0], &row[1], &row[2], &row[3]], &why.join("; "))?;
        }
        Ok(())
    }
}

/// What draining `node` does to each of its pods, given what the API holds.
pub fn preflight(node: &NodeName, objects: &ClusterObjects, flags: DrainFlags) -> Preflight {
    let mut pods: Vec<PodFate> = objects
        .pods
        .iter()
        .filter(|pod| {
            pod.node_name
                .as_deref()
                .is_none_or(|name| name == node.as_str())
        })
        .map(|pod| objects.fate_of(pod, node, flags))
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Preflight {
        node: node.clone(),
        pods,
    }
}
