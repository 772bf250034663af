//! The journal of a `replace-node` in progress, kept in the state file: which node, and the
//! last step begun. Written before each mutating step, so a re-run after a crash resumes there
//! (every step observes before it acts) and `up` can refuse to run over a half-replaced node.

use serde::{Deserialize, Serialize};

use crate::profile::model::Role;

/// One step of replacing a node, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceStep {
    /// `k3s etcd-snapshot save` on a surviving server, checked in `etcd-snapshot ls` (servers).
    Snapshot,
    /// `kubectl drain` from another server (a reachable, registered node only).
    Drain,
    /// k3s stopped and disabled on the node (when it answers SSH).
    StopK3s,
    /// Its etcd member removed (`etcd.k3s.cattle.io/remove`, then `removed-node-name`) (servers).
    RemoveMember,
    /// Its Node and `kube-system/<node>.node-password.k3s` Secret deleted.
    DeleteNode,
    /// The VM stopped and purged on Proxmox.
    DestroyVm,
    /// The VM created again from the profile (same name, address, GPU mappings).
    CreateVm,
    /// Node preparation and k3s on it (joining through a surviving server, never `cluster-init`).
    Join,
    /// Ready (and a voting etcd member; GPUs allocatable on GPU nodes), member count = servers.
    Verify,
}

impl ReplaceStep {
    /// Every step, in order.
    pub const ALL: [ReplaceStep; 9] = [
        ReplaceStep::Snapshot,
        ReplaceStep::Drain,
        ReplaceStep::StopK3s,
        ReplaceStep::RemoveMember,
        ReplaceStep::DeleteNode,
        ReplaceStep::DestroyVm,
        ReplaceStep::CreateVm,
        ReplaceStep::Join,
        ReplaceStep::Verify,
    ];

    /// The kebab-case name (`remove-member`), as the journal and `plan` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplaceStep::Snapshot => "snapshot",
            ReplaceStep::Drain => "drain",
            ReplaceStep::StopK3s => "stop-k3s",
            ReplaceStep::RemoveMember => "remove-member",
            ReplaceStep::DeleteNode => "delete-node",
            ReplaceStep::DestroyVm => "destroy-vm",
            ReplaceStep::CreateVm => "create-vm",
            ReplaceStep::Join => "join",
            ReplaceStep::Verify => "verify",
        }
    }
}

/// A `replace-node` begun and not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceJournal {
    /// The node (VM name) being replaced.
    pub node: String,
    pub role: Role,
    /// The last step begun (it may or may not have finished).
    pub step: ReplaceStep,
    /// The node was dead (VM gone or unreachable) when the replacement began: no drain.
    #[serde(default)]
    pub dead: bool,
    /// The name given to `k3s etcd-snapshot save --name` (servers).
    #[serde(default)]
    pub snapshot: Option<String>,
}
