//! The replace-node intent: the node's VM replaced in place (same VMID, name, params), the
//! k3s/etcd steps by role, refusals when anything else would change, and resuming.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::state::{ReplaceJournal, ReplaceStep};

fn converged() -> (Profile, Inventory, State) {
    let profile = profile();
    let mut inventory = inventory(AuthKind::RootTicket);
    let first = plan(&profile, &inventory, &State::default(), &context()).unwrap();
    let state = applied(&first, &mut inventory);
    (profile, inventory, state)
}

fn replace(
    profile: &Profile,
    inventory: &Inventory,
    state: &State,
    node: &str,
) -> Result<Plan, PlanError> {
    let input = PlanInput {
        profile,
        inventory,
        state,
        context: &context(),
    };
    crate::plan::plan(
        &input,
        Intent::ReplaceNode {
            node: node.to_owned(),
        },
    )
}

#[test]
fn a_server_is_replaced_in_place_with_every_step() {
    let (profile, inventory, state) = converged();
    let plan = replace(&profile, &inventory, &state, "lab-cp-1").unwrap();
    assert_eq!(plan.actions.len(), 1);
    let action = &plan.actions[0];
    assert_eq!(action.kind(), ActionKind::Replace);
    assert_eq!(action.target().vmid.0, state.vms["lab-cp-1"].vmid);
    assert_eq!(action.params(), Some(&plan.vm("lab-cp-1").unwrap().params));
    let summary = plan.replace.as_ref().unwrap();
    assert_eq!(summary.steps, ReplaceStep::ALL);
    assert_eq!(summary.vmid, Some(state.vms["lab-cp-1"].vmid));
    let text = render_text(&plan);
    for step in ReplaceStep::ALL {
        assert!(text.contains(step.as_str()), "{text}");
    }
    assert!(
        text.contains("Plan: 0 to create, 0 to update, 1 to replace, 0 to destroy."),
        "{text}"
    );
    assert_eq!(render_json(&plan)["replace"]["node"], "lab-cp-1");
}

#[test]
fn an_agent_keeps_its_gpus_and_skips_the_etcd_steps() {
    let (profile, inventory, state) = converged();
    let plan = replace(&profile, &inventory, &state, "lab-gpu-2").unwrap();
    let summary = plan.replace.as_ref().unwrap();
    assert!(!summary.steps.contains(&ReplaceStep::Snapshot));
    assert!(!summary.steps.contains(&ReplaceStep::RemoveMember));
    assert_eq!(summary.steps.len(), 7);
    let planned = plan.vm("lab-gpu-2").unwrap();
    assert_eq!(planned.gpus, state.vms["lab-gpu-2"].gpus);
    assert!(!planned.gpus.is_empty());
}

#[test]
fn a_gone_vm_is_created_and_a_journal_resumes_at_its_step() {
    let (profile, mut inventory, mut state) = converged();
    let vmid = state.vms["lab-cp-1"].vmid;
    inventory.vms.retain(|vm| vm.vmid != vmid);
    state.replacing = Some(ReplaceJournal {
        node: "lab-cp-1".into(),
        role: crate::profile::model::Role::Server,
        step: ReplaceStep::CreateVm,
        dead: true,
        snapshot: Some("provision-replace-1".into()),
    });
    let plan = replace(&profile, &inventory, &state, "lab-cp-1").unwrap();
    assert_eq!(plan.actions[0].kind(), ActionKind::Create);
    let summary = plan.replace.as_ref().unwrap();
    assert_eq!(summary.vmid, None);
    assert_eq!(summary.resumes_at, Some(ReplaceStep::CreateVm));
    assert_eq!(
        summary.steps,
        [
            ReplaceStep::CreateVm,
            ReplaceStep::Join,
            ReplaceStep::Verify
        ]
    );
    assert!(render_text(&plan).contains("resumes at create-vm"));
    // Another node while this one is unfinished: refused.
    let refused = replace(&profile, &inventory, &state, "lab-gpu-1").unwrap_err();
    assert!(
        matches!(refused, PlanError::ReplaceInProgress { .. }),
        "{refused}"
    );
}

#[test]
fn unknown_nodes_and_pending_changes_are_refused() {
    let (mut profile, inventory, state) = converged();
    let unknown = replace(&profile, &inventory, &state, "lab-cp-9").unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("known: lab-cp-1, lab-gpu-1, lab-gpu-2"),
        "{unknown}"
    );
    profile.node_groups[1].cores = 12;
    let pending = replace(&profile, &inventory, &state, "lab-cp-1").unwrap_err();
    assert!(
        matches!(pending, PlanError::ReplacePendingChanges { .. }),
        "{pending}"
    );
    assert!(pending.to_string().contains("lab-gpu-1"), "{pending}");
}
