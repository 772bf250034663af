//! A `cluster.k3s_version` change on a running cluster: the upgrade's waves (servers one at a
//! time, then agents in batches), the skew policy's refusals, and how the plan shows it.
#![allow(clippy::unwrap_used)]

use super::*;

/// Three servers and four plain agents, applied at v1.31.4+k3s1 (as the state records it).
fn running_cluster() -> (Profile, Inventory, State) {
    let mut profile = profile();
    profile.node_groups[0].count = 3;
    let agents = &mut profile.node_groups[1];
    agents.count = 4;
    agents.memory_mib = 8192;
    agents.gpus = None;
    agents.numa_pinning = false;
    agents.hugepages = None;
    let mut inventory = inventory(AuthKind::RootTicket);
    let first = plan(&profile, &inventory, &State::default(), &context()).unwrap();
    assert!(
        first.upgrade.is_none(),
        "a new cluster is installed, not upgraded"
    );
    let mut state = applied(&first, &mut inventory);
    state.k3s_version = Some("v1.31.4+k3s1".to_owned());
    (profile, inventory, state)
}

fn running_context(max_unavailable: u32) -> PlanContext {
    PlanContext {
        rolling: RollingOptions {
            max_unavailable,
            force: false,
            cluster_running: true,
        },
        ..context()
    }
}

#[test]
fn a_patch_upgrade_rolls_servers_one_at_a_time_then_agents_in_batches() {
    let (mut profile, inventory, state) = running_cluster();
    profile.cluster.k3s_version = "v1.31.5+k3s1".to_owned();
    let delta = plan(&profile, &inventory, &state, &running_context(2)).unwrap();
    assert!(delta.is_noop(), "no VM changes: the upgrade is phase 2's");
    assert!(delta.has_changes());
    let upgrade = delta.upgrade.as_ref().unwrap();
    assert_eq!(upgrade.step, UpgradeStep::Patch);
    assert!(upgrade.snapshot);
    let waves: Vec<Vec<&str>> = upgrade
        .waves
        .iter()
        .map(|wave| wave.vms.iter().map(|vm| vm.vm.as_str()).collect())
        .collect();
    assert_eq!(
        waves,
        [
            vec!["lab-cp-1"],
            vec!["lab-cp-2"],
            vec!["lab-cp-3"],
            vec!["lab-gpu-1", "lab-gpu-2"],
            vec!["lab-gpu-3", "lab-gpu-4"]
        ]
    );
    assert!(upgrade.waves.iter().flat_map(|w| &w.vms).all(|vm| vm.drain));
    insta::assert_snapshot!(render_text(&delta));
    let json = render_json(&delta);
    assert_eq!(json["upgrade"]["from"], "v1.31.4+k3s1");
    assert_eq!(json["upgrade"]["to"], "v1.31.5+k3s1");
    assert_eq!(json["upgrade"]["step"], "patch");
    assert_eq!(json["upgrade"]["waves"][3]["disruption"], "2 of 4 agents");
}

#[test]
fn the_next_minor_version_is_an_upgrade_and_new_vms_are_installed_at_it() {
    let (mut profile, inventory, state) = running_cluster();
    profile.cluster.k3s_version = "v1.32.0+k3s1".to_owned();
    profile.node_groups[1].count = 5;
    let delta = plan(&profile, &inventory, &state, &running_context(1)).unwrap();
    let upgrade = delta.upgrade.as_ref().unwrap();
    assert_eq!(upgrade.step, UpgradeStep::Minor);
    let upgraded: Vec<&str> = upgrade
        .waves
        .iter()
        .flat_map(|wave| wave.vms.iter().map(|vm| vm.vm.as_str()))
        .collect();
    assert_eq!(upgraded.len(), 7);
    assert!(
        !upgraded.contains(&"lab-gpu-5"),
        "created at the new version"
    );
    assert_eq!(upgrade.waves[6].disruption, "1 of 4 agents");
    assert!(render_text(&delta).contains("(next minor version)"));
}

#[test]
fn a_downgrade_or_a_skipped_minor_is_refused_before_anything_changes() {
    let (mut profile, inventory, state) = running_cluster();
    for (version, needle) in [
        ("v1.31.3+k3s1", "cannot be downgraded"),
        ("v1.30.9+k3s1", "cannot be downgraded"),
        ("v1.33.0+k3s1", "skips minor version 1.32"),
    ] {
        profile.cluster.k3s_version = version.to_owned();
        let error = plan(&profile, &inventory, &state, &running_context(1)).unwrap_err();
        assert!(
            matches!(error, PlanError::K3sVersion(_)),
            "{version}: {error}"
        );
        assert!(error.to_string().contains(needle), "{version}: {error}");
    }
}

#[test]
fn the_same_version_or_no_recorded_version_plans_no_upgrade() {
    let (profile, inventory, mut state) = running_cluster();
    let same = plan(&profile, &inventory, &state, &running_context(1)).unwrap();
    assert!(same.upgrade.is_none());
    assert!(!same.has_changes());
    assert!(render_text(&same).contains("No changes"));
    state.k3s_version = None;
    let mut newer = profile.clone();
    newer.cluster.k3s_version = "v1.31.5+k3s1".to_owned();
    assert!(
        plan(&newer, &inventory, &state, &running_context(1))
            .unwrap()
            .upgrade
            .is_none()
    );
    state.k3s_version = Some("v1.31.4+k3s1; reboot".to_owned());
    let error = plan(&newer, &inventory, &state, &running_context(1)).unwrap_err();
    assert!(
        error.to_string().contains("is not a k3s version"),
        "{error}"
    );
}
