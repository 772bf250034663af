//! Rolling changes: every action that disrupts a running VM (a restart, a replace, a scale-down
//! destroy) gets a wave. Servers go one at a time, so etcd keeps its quorum; agents go in
//! batches of at most `max_unavailable`. `exec` starts a wave only when every earlier wave is
//! done, its VMs back (started, guest agent reporting its address). Scale-down removes the
//! newest VMs first and never leaves an even number of servers.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::profile::model::Role;

use super::{Action, ActionKind, PlanError, PlanInput};

/// How disruptions roll (`up --max-unavailable N`, `--force`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollingOptions {
    /// Agents disrupted at once (at least 1).
    pub max_unavailable: u32,
    /// Allow a server scale-down that leaves a single server.
    pub force: bool,
    /// Phase 2 has bootstrapped the cluster: disrupted nodes are drained first.
    pub cluster_running: bool,
}

impl Default for RollingOptions {
    fn default() -> Self {
        Self {
            max_unavailable: 1,
            force: false,
            cluster_running: false,
        }
    }
}

/// One VM of a wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaveVm {
    pub vm: String,
    pub role: Role,
    pub action: ActionKind,
    /// What happens to it (`restart: cores 4 → 8`).
    pub why: String,
    /// Drained (cordon, evict) before, uncordoned after.
    pub drain: bool,
}

/// Disruptions that run together; wave N+1 starts when wave N is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wave {
    /// 1-based.
    pub number: u32,
    pub vms: Vec<WaveVm>,
    /// What is unavailable while it runs (`1 of 3 servers`).
    pub disruption: String,
}

/// Whether `action` disrupts a running VM (and so belongs to a wave).
pub fn disrupts(action: &Action) -> bool {
    match action {
        Action::Update { restart, .. } => *restart,
        Action::Replace { .. } | Action::Destroy { .. } => true,
        Action::Create { .. } => false,
    }
}

/// The trailing number of a VM name (`lab-gpu-12` → 12): newer VMs have larger ones.
pub(super) fn name_index(name: &str) -> u32 {
    let digits: String = name
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap_or(0)
}

/// Refuse a server scale-down that breaks quorum: an even count, or a single server without
/// `force`.
pub(super) fn check_server_count(
    input: &PlanInput<'_>,
    options: &RollingOptions,
) -> Result<(), PlanError> {
    let wanted: u32 = input
        .profile
        .node_groups
        .iter()
        .filter(|group| group.role == Role::Server)
        .map(|group| group.count)
        .sum();
    let existing = u32::try_from(
        input
            .state
            .vms
            .values()
            .filter(|record| record.role == Role::Server)
            .filter(|record| input.inventory.vm(record.vmid).is_some())
            .count(),
    )
    .unwrap_or(u32::MAX);
    if wanted >= existing {
        return Ok(());
    }
    let group = input
        .profile
        .node_groups
        .iter()
        .position(|group| group.role == Role::Server)
        .unwrap_or(0);
    if wanted.is_multiple_of(2) {
        return Err(PlanError::EvenServerScaleDown {
            from: existing,
            to: wanted,
            group,
        });
    }
    if wanted == 1 && !options.force {
        return Err(PlanError::SingleServerScaleDown {
            from: existing,
            group,
        });
    }
    Ok(())
}

/// Put every disruptive action of `actions` in a wave: servers one at a time, then agents in
/// batches; destroys first (newest first), then replaces, then restarts.
pub(super) fn waves(
    input: &PlanInput<'_>,
    actions: &[Action],
    options: &RollingOptions,
) -> Vec<Wave> {
    let role_of = |name: &str| {
        input
            .state
            .vms
            .get(name)
            .map(|record| record.role)
            .or_else(|| {
                super::wanted::expand(input.profile)
                    .ok()
                    .and_then(|wanted| {
                        wanted
                            .iter()
                            .find(|want| want.name == name)
                            .map(|want| want.group.role)
                    })
            })
            .unwrap_or(Role::Agent)
    };
    let disruptive = order_disruptive(actions, &role_of);
    let renumbered = assign_waves(&disruptive, options);
    let wave_of = |vm: &str| renumbered.get(vm).copied().unwrap_or(1);
    let servers = count_role(input, Role::Server);
    let agents = count_role(input, Role::Agent);
    let mut waves: Vec<Wave> = Vec::new();
    for (role, action) in &disruptive {
        let number = wave_of(action.vm());
        if waves.last().is_none_or(|wave| wave.number != number) {
            waves.push(Wave {
                number,
                vms: Vec::new(),
                disruption: String::new(),
            });
        }
        if let Some(wave) = waves.last_mut() {
            wave.vms.push(WaveVm {
                vm: action.vm().to_owned(),
                role: *role,
                action: action.kind(),
                why: leaving(why(input, action), action, *role, options),
                drain: options.cluster_running,
            });
        }
    }
    waves.sort_by_key(|wave| wave.number);
    for wave in &mut waves {
        let down = |role: Role| wave.vms.iter().filter(|vm| vm.role == role).count();
        let mut parts = Vec::new();
        for (role, total, noun) in [
            (Role::Server, servers, "servers"),
            (Role::Agent, agents, "agents"),
        ] {
            let count = down(role);
            if count > 0 {
                parts.push(format!("{count} of {total} {noun}"));
            }
        }
        wave.disruption = parts.join(", ");
    }
    waves
}

/// The disruptive actions in the order they roll: servers, then agents; destroys (newest
/// first), then replaces, then restarts.
fn order_disruptive<'a>(
    actions: &'a [Action],
    role_of: &dyn Fn(&str) -> Role,
) -> Vec<(Role, &'a Action)> {
    let mut disruptive: Vec<(Role, &Action)> = actions
        .iter()
        .filter(|action| disrupts(action))
        .map(|action| (role_of(action.vm()), action))
        .collect();
    let rank = |kind: ActionKind| match kind {
        ActionKind::Destroy => 0,
        ActionKind::Replace => 1,
        ActionKind::Update | ActionKind::Create => 2,
    };
    disruptive.sort_by(|(role_a, a), (role_b, b)| {
        let role_rank = |role: &Role| u8::from(*role == Role::Agent);
        role_rank(role_a)
            .cmp(&role_rank(role_b))
            .then(rank(a.kind()).cmp(&rank(b.kind())))
            .then_with(|| match a.kind() {
                ActionKind::Destroy => name_index(b.vm()).cmp(&name_index(a.vm())),
                ActionKind::Create | ActionKind::Update | ActionKind::Replace => {
                    name_index(a.vm()).cmp(&name_index(b.vm()))
                }
            })
            .then(a.vm().cmp(b.vm()))
    });

    disruptive
}

/// Wave numbers (1, 2, …) by VM name: one server per wave, agents in batches, and a VM that
/// waits for another's removal in that one's wave.
fn assign_waves<'a>(
    disruptive: &[(Role, &'a Action)],
    options: &RollingOptions,
) -> BTreeMap<&'a str, u32> {
    // First assignment: one server per wave, agents in batches.
    let batch = options.max_unavailable.max(1) as usize;
    let mut wave_of: BTreeMap<&str, u32> = BTreeMap::new();
    let mut next = 1;
    let mut in_batch = 0;
    for (role, action) in disruptive {
        match role {
            Role::Server => {
                if in_batch > 0 {
                    next += 1;
                    in_batch = 0;
                }
                wave_of.insert(action.vm(), next);
                next += 1;
            }
            Role::Agent => {
                wave_of.insert(action.vm(), next);
                in_batch += 1;
                if in_batch == batch {
                    next += 1;
                    in_batch = 0;
                }
            }
        }
    }
    // A VM re-created where another leaves waits for it to be gone: that one may not roll
    // later, or neither would ever run. Such pairs share the later wave.
    loop {
        let mut moved = false;
        for (_, action) in disruptive {
            let own = wave_of[action.vm()];
            let latest = action
                .after()
                .iter()
                .filter_map(|other| wave_of.get(other.as_str()).copied())
                .max()
                .unwrap_or(own);
            if latest > own {
                wave_of.insert(action.vm(), latest);
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let used: BTreeSet<u32> = wave_of.values().copied().collect();
    let renumber: BTreeMap<u32, u32> = used.iter().zip(1..).map(|(old, new)| (*old, new)).collect();
    wave_of
        .into_iter()
        .map(|(vm, wave)| (vm, renumber[&wave]))
        .collect()
}

/// The VMs of `role` that exist now.
pub(super) fn count_role(input: &PlanInput<'_>, role: Role) -> usize {
    input
        .state
        .vms
        .values()
        .filter(|record| record.role == role && input.inventory.vm(record.vmid).is_some())
        .count()
}

/// A scale-down of a running cluster says how the node leaves it before its VM goes.
fn leaving(why: String, action: &Action, role: Role, options: &RollingOptions) -> String {
    if !options.cluster_running || !matches!(action, Action::Destroy { .. }) {
        return why;
    }
    match role {
        Role::Server => format!(
            "{why}; leaves the cluster first: snapshot, k3s stopped, etcd member removed, Node and node-password Secret deleted"
        ),
        Role::Agent => format!(
            "{why}; leaves the cluster first: k3s stopped, Node and node-password Secret deleted"
        ),
    }
}

/// `restart: cores 4 → 8`, `replace: …`, `destroy: scale-down`.
fn why(input: &PlanInput<'_>, action: &Action) -> String {
    match action {
        Action::Update { changes, .. } => {
            let live = input.inventory.vm(action.vmid().0).map(|vm| &vm.config);
            let keys: Vec<String> = changes
                .iter()
                .map(
                    |(key, value)| match live.and_then(|config| config.get(key)) {
                        Some(old) => format!("{key} {old} → {value}"),
                        None => format!("{key} → {value}"),
                    },
                )
                .collect();
            format!("restart: {}", keys.join(", "))
        }
        Action::Replace { reason, .. } => format!("replace: {reason}"),
        Action::Destroy { .. } => "destroy: scale-down".to_owned(),
        Action::Create { .. } => "create".to_owned(),
    }
}
