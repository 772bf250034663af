//! The [`Intent::ReplaceNode`] plan: the converge plan, which must change nothing but the node
//! (the profile and the cluster agree), with that node's VM replaced by a new one of the same
//! name, address and GPU mappings, and the k3s/etcd steps around it in order.
//!
//! `exec` runs the steps one at a time under a journal in the state (`state.replacing`); a
//! resumed replacement plans from where the journal says it stopped.

use serde::Serialize;

use crate::profile::model::Role;
use crate::pve::{NodeName, VmId};
use crate::state::ReplaceStep;

use super::{Action, Intent, Plan, PlanError, PlanInput, VmRef};

/// What `replace-node` will do, beside the VM action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplaceSummary {
    pub node: String,
    pub role: Role,
    /// The VM today (none when Proxmox no longer shows it).
    pub vmid: Option<u32>,
    /// The steps still to run, in order.
    pub steps: Vec<ReplaceStep>,
    /// The step an earlier, interrupted run had begun.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumes_at: Option<ReplaceStep>,
}

/// The steps for a node of `role`, from `from` on (the journal's step when resuming).
pub fn replace_steps(role: Role, from: Option<ReplaceStep>) -> Vec<ReplaceStep> {
    ReplaceStep::ALL
        .into_iter()
        .filter(|step| {
            role == Role::Server
                || !matches!(step, ReplaceStep::Snapshot | ReplaceStep::RemoveMember)
        })
        .filter(|step| from.is_none_or(|from| *step >= from))
        .collect()
}

/// What one step does, for `plan` and progress.
pub fn describe_step(step: ReplaceStep) -> &'static str {
    match step {
        ReplaceStep::Snapshot => {
            "k3s etcd-snapshot save on a surviving server; verified listed in `etcd-snapshot ls` and non-empty"
        }
        ReplaceStep::Drain => "kubectl drain from another server (skipped when the node is dead)",
        ReplaceStep::StopK3s => "stop and disable k3s on the node (when it answers SSH)",
        ReplaceStep::RemoveMember => {
            "remove its etcd member: annotate etcd.k3s.cattle.io/remove=true, wait for removed-node-name"
        }
        ReplaceStep::DeleteNode => "delete its Node and kube-system/<node>.node-password.k3s",
        ReplaceStep::DestroyVm => "stop and purge its VM on Proxmox",
        ReplaceStep::CreateVm => "create the VM again: same name, address, GPU mappings, labels",
        ReplaceStep::Join => {
            "node preparation and k3s; joins through a surviving server (never cluster-init)"
        }
        ReplaceStep::Verify => {
            "wait Ready (servers: a voting etcd member; GPU nodes: GPUs allocatable); etcd members = servers"
        }
    }
}

/// Plan replacing `node`: refuse unless the state knows it (or an unfinished replacement of it
/// is journaled), no other replacement is unfinished, and converge would change no other VM.
pub(super) fn plan_replace(input: &PlanInput<'_>, node: &str) -> Result<Plan, PlanError> {
    let state = input.state;
    let journal = state.replacing.as_ref();
    if let Some(other) = journal.filter(|journal| journal.node != node) {
        return Err(PlanError::ReplaceInProgress {
            node: node.to_owned(),
            other: other.node.clone(),
        });
    }
    let record = state.vms.get(node);
    let role = match (record, journal) {
        (_, Some(journal)) => journal.role,
        (Some(record), None) => record.role,
        (None, None) => {
            return Err(PlanError::ReplaceUnknownNode {
                node: node.to_owned(),
                known: state.vms.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
    };
    let mut plan = super::converge::converge(input)?;
    let others: Vec<String> = plan
        .actions
        .iter()
        .filter(|action| action.vm() != node)
        .map(|action| format!("{} {}", action.kind().symbol(), action.vm()))
        .collect();
    if !others.is_empty() {
        return Err(PlanError::ReplacePendingChanges {
            node: node.to_owned(),
            others: others.join(", "),
        });
    }
    let Some(planned) = plan.vm(node).cloned() else {
        return Err(PlanError::ReplaceNotInProfile {
            node: node.to_owned(),
        });
    };
    let live = record
        .and_then(|record| input.inventory.vm(record.vmid))
        .filter(|vm| vm.name == node);
    let action = match plan.actions.iter().position(|action| action.vm() == node) {
        // Gone from Proxmox (or an unfinished create): converge already creates it.
        Some(index) if matches!(plan.actions[index], Action::Create { .. }) => {
            plan.actions.remove(index)
        }
        _ => Action::Replace {
            target: VmRef {
                name: node.to_owned(),
                node: live.map_or_else(|| planned.node.clone(), |vm| NodeName(vm.node.clone())),
                vmid: record.map_or(planned.vmid, |record| VmId(record.vmid)),
            },
            params: planned.params.clone(),
            resize: planned.resize.clone(),
            reason: "replace-node: a new machine under the same name".to_owned(),
            after: Vec::new(),
        },
    };
    plan.actions = vec![action];
    plan.rolling = Vec::new();
    plan.intent = Intent::ReplaceNode {
        node: node.to_owned(),
    };
    plan.replace = Some(ReplaceSummary {
        node: node.to_owned(),
        role,
        vmid: live.map(|vm| vm.vmid),
        steps: replace_steps(role, journal.map(|journal| journal.step)),
        resumes_at: journal.map(|journal| journal.step),
    });
    Ok(plan)
}
