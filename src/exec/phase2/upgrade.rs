//! A k3s rolling upgrade of the running cluster, before phase 2 converges it: the versions the
//! kubelets report are checked against `cluster.k3s_version` (never a downgrade, never a skipped
//! minor version), an etcd snapshot is saved and verified, then the nodes behind the target
//! version get the new binary and a k3s restart — servers one at a time, then agents in batches
//! of `max_unavailable` — each behind the [`K3sGate`] (quorum check, drain; afterwards the new
//! version reported, Ready, an etcd member, uncordoned). Nodes already at the target are left
//! alone, so a re-run after an interruption carries on where it stopped.

use anyhow::{Context as _, bail};
use futures::future::try_join_all;

use super::{Connector, GuestNode, K3sGate, Phase2Options, run_checked};
use crate::error::UserError;
use crate::exec::etcd_ops;
use crate::exec::rolling::RollingGate;
use crate::k3s::BINARY_PATH;
use crate::k3s::cluster::GET_NODES_COMMAND;
use crate::k3s::config::unit_name;
use crate::k3s::etcd::SnapshotName;
use crate::k3s::install::{ServiceAction, service_command};
use crate::k3s::release::{BinarySource, fetch_binary};
use crate::k3s::status::{NodeState, parse_node_states};
use crate::nodeprep::ensure_file;
use crate::plan::{ActionKind, K3sVersion, UpgradeStep, WaveVm, check_cluster_upgrade};
use crate::profile::Profile;
use crate::profile::model::Role;
use crate::pve::wait::{Check, PollInterval, WaitError, await_condition};
use crate::ssh::RemoteExec;

/// How the upgrade rolls (`up --max-unavailable N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeOptions {
    /// Agents upgraded at once (at least 1).
    pub max_unavailable: u32,
    /// The version the workspace recorded at the last converged `up`, if any.
    pub recorded: Option<String>,
}

/// What the upgrade did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpgradeReport {
    /// The version the cluster ran before (its oldest node's).
    pub from: Option<String>,
    /// `cluster.k3s_version`.
    pub to: String,
    /// Nodes restarted on the new binary, in order.
    pub upgraded: Vec<String>,
    /// The etcd snapshot saved first.
    pub snapshot: Option<String>,
}

/// Upgrade the registered nodes among `nodes` to `cluster.k3s_version`; nothing when every
/// node runs it already. Nodes not yet registered are installed at the new version by phase 2.
pub async fn rolling_upgrade(
    profile: &Profile,
    nodes: &[GuestNode],
    connector: &dyn Connector,
    opts: &Phase2Options,
    upgrade: &UpgradeOptions,
) -> anyhow::Result<UpgradeReport> {
    let target = K3sVersion::parse("cluster.k3s_version", &profile.cluster.k3s_version)?;
    if upgrade.recorded.as_deref() == Some(profile.cluster.k3s_version.as_str()) {
        return Ok(UpgradeReport::default());
    }
    let Some((server, states)) = read_cluster(nodes, connector).await? else {
        if upgrade.recorded.is_some() {
            bail!(UserError::new(
                format!(
                    "cannot upgrade k3s to {target}: no server answers `k3s kubectl get nodes` to tell which version the nodes run"
                ),
                Some("start k3s on the servers (`systemctl start k3s`) and run `up` again"),
            ));
        }
        return Ok(UpgradeReport::default());
    };
    let mut running = Vec::new();
    for state in &states {
        running.push(K3sVersion::parse(
            &format!("the kubelet version of {}", state.name),
            &state.kubelet_version,
        )?);
    }
    if check_cluster_upgrade(&running, target).map_err(|refusal| {
        UserError::new(
            format!("{refusal}; nothing was changed"),
            Some("`provision status` shows the version every node runs"),
        )
    })? == UpgradeStep::None
    {
        return Ok(UpgradeReport::default());
    }
    let behind = behind(nodes, &states, target);
    let mut report = UpgradeReport {
        from: running.iter().min().map(ToString::to_string),
        to: target.to_string(),
        ..UpgradeReport::default()
    };
    if behind.is_empty() {
        return Ok(report);
    }
    let binary = load_binary(profile, opts).await?;
    let gate = K3sGate::new(nodes.to_vec(), connector, opts.clone());
    if behind.iter().any(|node| node.role == Role::Server) {
        let name = SnapshotName::new(&format!(
            "provision-pre-upgrade-{}",
            target.to_string().replace(['.', '+'], "-")
        ))?;
        let snapshot = etcd_ops::save_snapshot(server.as_ref(), &name)
            .await
            .with_context(|| format!("the etcd snapshot before the upgrade to {target}"))?;
        gate.snapshot_taken(&snapshot.name).await;
        report.snapshot = Some(snapshot.name);
    }
    let batch = usize::try_from(upgrade.max_unavailable.max(1)).unwrap_or(usize::MAX);
    let servers: Vec<&GuestNode> = behind
        .iter()
        .copied()
        .filter(|n| n.role == Role::Server)
        .collect();
    let agents: Vec<&GuestNode> = behind
        .iter()
        .copied()
        .filter(|n| n.role == Role::Agent)
        .collect();
    let waves = servers
        .chunks(1)
        .chain(agents.chunks(batch))
        .map(<[&GuestNode]>::to_vec);
    for wave in waves {
        upgrade_wave(&gate, &wave, connector, &binary, target, opts).await?;
        report
            .upgraded
            .extend(wave.iter().map(|node| node.name.clone()));
    }
    Ok(report)
}

/// The first server that answers the node list, with what it answered; `None` when none does.
async fn read_cluster(
    nodes: &[GuestNode],
    connector: &dyn Connector,
) -> anyhow::Result<Option<(Box<dyn RemoteExec>, Vec<NodeState>)>> {
    for node in nodes.iter().filter(|node| node.role == Role::Server) {
        let Ok(exec) = connector.connect(node).await else {
            continue;
        };
        if let Ok(stdout) = run_checked(exec.as_ref(), GET_NODES_COMMAND).await {
            return Ok(Some((exec, parse_node_states(&stdout)?)));
        }
    }
    Ok(None)
}

/// The registered nodes among `nodes` not at `target`: servers first, each role in `nodes`'
/// order.
fn behind<'n>(
    nodes: &'n [GuestNode],
    states: &[NodeState],
    target: K3sVersion,
) -> Vec<&'n GuestNode> {
    let target = target.to_string();
    let mut behind: Vec<&GuestNode> = nodes
        .iter()
        .filter(|node| {
            states
                .iter()
                .any(|state| state.name == node.name && state.kubelet_version != target)
        })
        .collect();
    behind.sort_by_key(|node| u8::from(node.role == Role::Agent));
    behind
}

/// The verified bytes of the profile's k3s binary.
async fn load_binary(profile: &Profile, opts: &Phase2Options) -> anyhow::Result<Vec<u8>> {
    let artifact = match &opts.binary {
        Some(artifact) => artifact.clone(),
        None => fetch_binary(&BinarySource::from_profile(profile)?, &opts.cache_dir)
            .await
            .context("cannot obtain the k3s binary for the upgrade")?,
    };
    let bytes = std::fs::read(&artifact.path)
        .with_context(|| format!("cannot read {}", artifact.path.display()))?;
    if crate::nodeprep::sha256_hex(&bytes) != artifact.sha256 {
        bail!("{} changed since it was verified", artifact.path.display());
    }
    Ok(bytes)
}

/// One wave: every node drained (the gate refuses a server whose peers are not healthy), the
/// new binary written and k3s restarted on each, then each waited for at the new version,
/// Ready (an etcd member for a server) and uncordoned.
async fn upgrade_wave(
    gate: &K3sGate<&dyn Connector>,
    wave: &[&GuestNode],
    connector: &dyn Connector,
    binary: &[u8],
    target: K3sVersion,
    opts: &Phase2Options,
) -> anyhow::Result<()> {
    let members: Vec<WaveVm> = wave
        .iter()
        .map(|node| WaveVm {
            vm: node.name.clone(),
            role: node.role,
            action: ActionKind::Update,
            why: format!("upgrade: k3s {target}"),
            drain: true,
        })
        .collect();
    for member in &members {
        gate.before_disruption(member).await?;
    }
    try_join_all(wave.iter().map(|node| async move {
        let exec = connector
            .connect(node)
            .await
            .with_context(|| format!("node {}: cannot connect to upgrade k3s", node.name))?;
        ensure_file(exec.as_ref(), BINARY_PATH, binary, 0o755)
            .await
            .with_context(|| format!("node {}: writing the k3s {target} binary", node.name))?;
        let restart = service_command(node.role, ServiceAction::Restart, false)
            .with_context(|| format!("no restart command for {}", unit_name(node.role)))?;
        run_checked(exec.as_ref(), &restart)
            .await
            .with_context(|| format!("node {}: restarting k3s on {target}", node.name))?;
        anyhow::Ok(())
    }))
    .await?;
    for member in &members {
        wait_version(gate, &member.vm, target, opts).await?;
        gate.after_recovery(member).await?;
    }
    Ok(())
}

/// Wait (bounded by `ready_timeout`) until a server other than `node` (or `node`, a single
/// server) reports `node`'s kubelet at `target` and Ready: k3s has restarted on the new binary.
async fn wait_version(
    gate: &K3sGate<&dyn Connector>,
    node: &str,
    target: K3sVersion,
    opts: &Phase2Options,
) -> anyhow::Result<()> {
    let target = target.to_string();
    let what = format!("{node} to report k3s {target} and be Ready");
    let waited = await_condition(
        &what,
        opts.ready_timeout,
        PollInterval::fixed(opts.poll_interval),
        || async {
            let answer = match gate.other_server_exec(node).await {
                Ok(exec) => run_checked(exec.as_ref(), GET_NODES_COMMAND)
                    .await
                    .and_then(|stdout| Ok(parse_node_states(&stdout)?)),
                Err(error) => Err(error),
            };
            Ok::<_, std::convert::Infallible>(match answer {
                Ok(states) => match states.iter().find(|state| state.name == node) {
                    Some(state) if state.ready && state.kubelet_version == target => Check::Met(()),
                    Some(state) => Check::Pending(format!(
                        "{} at {}",
                        if state.ready { "Ready" } else { "NotReady" },
                        state.kubelet_version
                    )),
                    None => Check::Pending("not registered".to_owned()),
                },
                Err(error) => Check::Pending(format!("{error:#}")),
            })
        },
    )
    .await;
    match waited {
        Ok(()) => Ok(()),
        Err(WaitError::Failed(never)) => match never {},
        Err(WaitError::TimedOut { last, .. }) => bail!(
            "timed out after {}s waiting for {what} (last seen: {last}); `journalctl -u k3s -u k3s-agent` on {node} says why k3s did not come back",
            opts.ready_timeout.as_secs()
        ),
    }
}
