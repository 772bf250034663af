//! Crash safety: a run aborted at each step boundary in turn, then re-run, leaves every VM on
//! Proxmox exactly once, tagged and in the state, with no VMID used twice.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeSet;

use provision::exec::{ExecOptions, InjectedCrash};
use provision::state::VmPhase;

use crate::support::sim::{self, SimWorkspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_boundary_then_a_rerun_converges_without_duplicates() {
    // homelab-ha: five VMs on three Proxmox nodes (the boundaries are per-VM steps).
    crash_at_every_boundary(&["homelab-ha"]).await;
}

/// ci-nested clones its VMs from a template (`image.strategy = "linked-clone"`): a crash
/// before, during or after the template's creation, or between it and a clone, converges on
/// the re-run with one template and each VM once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_around_the_template_and_its_clones_converges() {
    crash_at_every_boundary(&["ci-nested"]).await;
}

/// The same for every other built-in profile (a100-8x alone has ~60 boundaries): minutes, so
/// it is skipped in a plain `cargo test` and `.ci/run` runs it explicitly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: every built-in profile's step boundaries; .ci/run runs it with --ignored"]
async fn every_builtin_profile_survives_a_crash_at_every_step_boundary() {
    let others: Vec<&str> = sim::builtin_names()
        .into_iter()
        .filter(|name| *name != "homelab-ha")
        .collect();
    assert!(others.len() >= 5, "{others:?}");
    crash_at_every_boundary(&others).await;
}

/// For each profile: crash at boundary 0, 1, 2 … until a run finishes; after each crash a
/// re-run converges with every VM once, tagged, in the state, and a third run changes nothing.
async fn crash_at_every_boundary(names: &[&str]) {
    for &name in names {
        let profile = sim::builtin(name);
        let wanted: BTreeSet<String> = provision::plan::wanted_vms(&profile)
            .unwrap()
            .into_iter()
            .map(|vm| vm.name)
            .collect();
        let mut boundary = 0;
        loop {
            eprintln!("{name}: crash at boundary {boundary}");
            let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
            let crashed = workspace
                .up(
                    &profile,
                    ExecOptions {
                        fail_after_step: Some(boundary),
                        ..sim::exec_options()
                    },
                )
                .await;
            let finished = match crashed {
                Ok(_) => true,
                Err(error) => {
                    assert!(
                        error.chain().any(|cause| cause.is::<InjectedCrash>()),
                        "{name} boundary {boundary}: unexpected error {error:#}"
                    );
                    false
                }
            };
            // Let tasks that were running at the crash finish, as on a real Proxmox.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let report = workspace.up(&profile, sim::exec_options()).await.unwrap();
            assert_eq!(report.vms.len(), wanted.len(), "{name} boundary {boundary}");

            let all = workspace.api.cluster_resources(Some("vm")).await.unwrap();
            // Templates of the clone strategies: one per node, each recorded in the state.
            let (templates, resources): (Vec<_>, Vec<_>) =
                all.into_iter().partition(|r| r.template == Some(1));
            let recorded = workspace.state().templates;
            assert_eq!(
                templates.len(),
                recorded.len(),
                "{name} boundary {boundary}"
            );
            for template in &templates {
                assert!(
                    recorded
                        .values()
                        .any(|r| Some(r.vmid) == template.vmid && r.phase == VmPhase::Ready),
                    "{name} boundary {boundary}: {template:?} not recorded"
                );
            }
            let names: Vec<String> = resources
                .iter()
                .map(|r| r.name.clone().unwrap_or_default())
                .collect();
            let unique: BTreeSet<String> = names.iter().cloned().collect();
            assert_eq!(unique, wanted, "{name} boundary {boundary}: {names:?}");
            assert_eq!(
                names.len(),
                wanted.len(),
                "{name} boundary {boundary}: duplicates {names:?}"
            );
            let vmids: BTreeSet<u32> = resources.iter().filter_map(|r| r.vmid).collect();
            assert_eq!(vmids.len(), resources.len(), "{name} boundary {boundary}");
            let tag = provision::inventory::cluster_tag(&profile.cluster.name);
            let state = workspace.state();
            for resource in &resources {
                assert!(
                    resource.tag_list().contains(&tag.as_str()),
                    "{name} boundary {boundary}: {resource:?} without the cluster tag"
                );
                let vm_name = resource.name.clone().unwrap_or_default();
                let record = state.vms.get(&vm_name).unwrap_or_else(|| {
                    panic!("{name} boundary {boundary}: {vm_name} is not in the state")
                });
                assert_eq!(
                    Some(record.vmid),
                    resource.vmid,
                    "{name} boundary {boundary}"
                );
            }
            // And the re-run really converged: nothing left to do.
            let before = workspace.log().len();
            workspace.up(&profile, sim::exec_options()).await.unwrap();
            assert_eq!(
                workspace.mutating_since(before),
                Vec::new(),
                "{name} boundary {boundary}"
            );
            workspace.sim.shutdown().await;
            if finished {
                assert!(
                    boundary > wanted.len(),
                    "{name}: only {boundary} boundaries"
                );
                break;
            }
            boundary += 1;
        }
    }
}
