//! Rolling changes: disruptive actions in waves, scale-down order and the server-count rules.
#![allow(clippy::unwrap_used)]

use super::*;

/// Three servers and four plain agents, applied: a running cluster to change.
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
    let state = applied(&first, &mut inventory);
    (profile, inventory, state)
}

fn rolling_context(max_unavailable: u32, force: bool) -> PlanContext {
    PlanContext {
        rolling: RollingOptions {
            max_unavailable,
            force,
            cluster_running: true,
        },
        ..context()
    }
}

fn wave_names(plan: &Plan) -> Vec<Vec<&str>> {
    plan.rolling
        .iter()
        .map(|wave| wave.vms.iter().map(|vm| vm.vm.as_str()).collect())
        .collect()
}

#[test]
fn a_restart_of_every_server_rolls_one_server_per_wave() {
    let (mut profile, inventory, state) = running_cluster();
    profile.node_groups[0].cores = 8;
    let delta = plan(&profile, &inventory, &state, &rolling_context(1, false)).unwrap();
    assert_eq!(
        wave_names(&delta),
        [["lab-cp-1"], ["lab-cp-2"], ["lab-cp-3"]],
        "{}",
        render_text(&delta)
    );
    let first = &delta.rolling[0];
    assert_eq!(first.vms[0].why, "restart: cores 4 → 8");
    assert!(first.vms[0].drain);
    assert_eq!(first.disruption, "1 of 3 servers");
    let text = render_text(&delta);
    assert!(
        text.contains("  1.  lab-cp-1 (restart: cores 4 → 8), drain: yes\n"),
        "{text}"
    );
    assert_eq!(delta.wave_of("lab-cp-3"), Some(3));
    let json = render_json(&delta);
    assert_eq!(json["rolling"][1]["vms"][0]["vm"], "lab-cp-2");
    assert_eq!(json["rolling"][1]["number"], 2);
}

#[test]
fn agents_roll_in_batches_of_max_unavailable() {
    let (mut profile, inventory, state) = running_cluster();
    profile.node_groups[1].cores = 4;
    let delta = plan(&profile, &inventory, &state, &rolling_context(2, false)).unwrap();
    assert_eq!(
        wave_names(&delta),
        [["lab-gpu-1", "lab-gpu-2"], ["lab-gpu-3", "lab-gpu-4"]],
        "{}",
        render_text(&delta)
    );
    assert_eq!(delta.rolling[0].disruption, "2 of 4 agents");
    // The default: one agent at a time.
    let delta = plan(&profile, &inventory, &state, &context()).unwrap();
    assert_eq!(delta.rolling.len(), 4);
    assert!(!delta.rolling[0].vms[0].drain, "no cluster yet: no drain");
}

#[test]
fn scale_down_removes_the_newest_first_and_servers_before_agents() {
    let (mut profile, inventory, state) = running_cluster();
    profile.node_groups[1].count = 1;
    profile.node_groups[0].cores = 8;
    let delta = plan(&profile, &inventory, &state, &rolling_context(1, false)).unwrap();
    assert_eq!(
        wave_names(&delta),
        [
            vec!["lab-cp-1"],
            vec!["lab-cp-2"],
            vec!["lab-cp-3"],
            vec!["lab-gpu-4"],
            vec!["lab-gpu-3"],
            vec!["lab-gpu-2"]
        ],
        "{}",
        render_text(&delta)
    );
    assert_eq!(
        delta.rolling[3].vms[0].why,
        "destroy: scale-down; leaves the cluster first: k3s stopped, Node and node-password Secret deleted"
    );
}

#[test]
fn a_server_scale_down_keeps_an_odd_count_and_one_server_needs_force() {
    let (mut profile, inventory, state) = running_cluster();
    profile.node_groups[0].count = 2;
    let error = plan(&profile, &inventory, &state, &rolling_context(1, true)).unwrap_err();
    assert!(
        matches!(
            error,
            PlanError::EvenServerScaleDown {
                from: 3,
                to: 2,
                group: 0
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().starts_with("node_groups[0].count: "),
        "{error}"
    );

    profile.node_groups[0].count = 1;
    let error = plan(&profile, &inventory, &state, &rolling_context(1, false)).unwrap_err();
    assert!(
        matches!(error, PlanError::SingleServerScaleDown { from: 3, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("--force"), "{error}");

    let forced = plan(&profile, &inventory, &state, &rolling_context(1, true)).unwrap();
    assert_eq!(
        wave_names(&forced),
        [["lab-cp-3"], ["lab-cp-2"]],
        "{}",
        render_text(&forced)
    );
}
