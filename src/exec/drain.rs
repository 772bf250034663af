//! `drain` and `uncordon` over SSH: the cluster's nodes from the profile and the state, a Ready
//! server to run `k3s kubectl` on (another than the node being drained when there is one), the
//! preflight read from the API, and `kubectl drain` itself with a re-list of the node afterwards.
//!
//! Nothing changes before the preflight has passed: a refusal leaves the node as it was, not
//! even cordoned.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::error::UserError;
use crate::k3s::cluster::GET_NODES_COMMAND;
use crate::k3s::drain::{
    ClusterObjects, DrainError, DrainFlags, GET_PDBS_COMMAND, GET_PVCS_COMMAND, GET_PVS_COMMAND,
    NodeName, NodeState, Preflight, drain_command, list_pods_command, parse_node_states, preflight,
    uncordon_command,
};
use crate::profile::Profile;
use crate::profile::model::Role;
use crate::ssh::{RemoteExec, SshOptions};
use crate::state::State;

use crate::workspace::Workspace;

use super::cluster::{ClusterOptions, SshConnector, guest_node};
use super::phase2::{Connector, GuestNode};
use super::session::host_key_dir;

/// SSH settings for day-2 commands: the VMs are up, so connecting is bounded tightly; a command
/// may run as long as the drain's timeout plus a margin.
pub fn cluster_options(command_time: Duration) -> ClusterOptions {
    let defaults = ClusterOptions::default();
    ClusterOptions {
        ssh: SshOptions {
            connect_timeout: Duration::from_secs(30),
            command_timeout: command_time + Duration::from_secs(120),
            ..defaults.ssh.clone()
        },
        ..defaults
    }
}

/// Every node of the cluster: the profile's, plus those the state still records (a node
/// removed from the profile but not yet destroyed is exactly one to drain). Expected host keys
/// come from `host_key_dir`, as in phase 2.
pub fn known_nodes(
    profile: &Profile,
    state: &State,
    host_key_dir: &Path,
) -> anyhow::Result<Vec<GuestNode>> {
    let mut nodes: BTreeMap<String, (std::net::IpAddr, Role, String)> = BTreeMap::new();
    let mut order = Vec::new();
    for planned in profile.nodes() {
        order.push(planned.name.clone());
        nodes.insert(planned.name, (planned.address, planned.role, planned.group));
    }
    if state.cluster == profile.cluster.name {
        for record in state.vms.values() {
            let Some(address) = record.address.as_deref().and_then(|a| a.parse().ok()) else {
                continue;
            };
            // The state records where the VM is: an address_range skips addresses other
            // clusters use, so the profile alone may not say.
            if let Some(entry) = nodes.get_mut(&record.name) {
                entry.0 = address;
            } else {
                order.push(record.name.clone());
                nodes.insert(
                    record.name.clone(),
                    (address, record.role, record.group.clone()),
                );
            }
        }
    }
    order
        .into_iter()
        .filter_map(|name| nodes.remove(&name).map(|node| (name, node)))
        .map(|(name, (address, role, group))| {
            guest_node(&name, address, role, &group, host_key_dir)
        })
        .collect()
}

/// The cluster's nodes and an SSH connector to them (the workspace's keys and known_hosts,
/// the profile's user and jump host), for commands that may run up to `command_time`.
pub fn open_cluster(
    profile: &Profile,
    workspace: &Workspace,
    command_time: Duration,
) -> anyhow::Result<(Vec<GuestNode>, SshConnector)> {
    let state = crate::state::load(&workspace.state_dir().join("state.json"))?;
    let nodes = known_nodes(profile, &state, &host_key_dir(workspace))?;
    let connector = SshConnector::new(
        profile,
        workspace,
        &nodes,
        &cluster_options(command_time),
        None,
    )?;
    Ok((nodes, connector))
}

/// `name` as a node of the cluster, or a user error listing the known nodes.
pub fn find_node<'a>(
    nodes: &'a [GuestNode],
    name: &str,
    profile_source: &str,
) -> anyhow::Result<(&'a GuestNode, NodeName)> {
    let Some(node) = nodes.iter().find(|node| node.name == name) else {
        let known: Vec<&str> = nodes.iter().map(|node| node.name.as_str()).collect();
        return Err(UserError::new(
            format!(
                "{name:?} is not a node of this cluster ({profile_source} and the workspace state); known nodes: {}",
                known.join(", ")
            ),
            Some("give one of the known node names"),
        )
        .into());
    };
    Ok((node, NodeName::new(&node.name)?))
}

/// A server that answers `k3s kubectl`, and what it says about the nodes.
pub struct ApiServer {
    pub name: String,
    pub exec: Box<dyn RemoteExec>,
    pub nodes: Vec<NodeState>,
}

/// The first server that is Ready and answers `kubectl get nodes`, trying the servers other
/// than `avoid` first (draining a server should not run on it); a server that answers but is
/// not Ready is used only when no Ready one does.
pub async fn api_server(
    nodes: &[GuestNode],
    avoid: &str,
    connector: &dyn Connector,
) -> anyhow::Result<ApiServer> {
    let mut servers: Vec<&GuestNode> = nodes
        .iter()
        .filter(|node| node.role == Role::Server)
        .collect();
    servers.sort_by_key(|node| node.name == avoid);
    let mut failures = Vec::new();
    let mut fallback = None;
    for server in servers {
        let exec = match connector.connect(server).await {
            Ok(exec) => exec,
            Err(error) => {
                failures.push(format!("{}: {error}", server.name));
                continue;
            }
        };
        let listed = match run_checked(exec.as_ref(), &server.name, GET_NODES_COMMAND).await {
            Ok(stdout) => parse_node_states(&stdout).map_err(anyhow::Error::from),
            Err(error) => Err(error),
        };
        match listed {
            Ok(states) => {
                let ready = states.iter().any(|s| s.name == server.name && s.ready);
                let answered = ApiServer {
                    name: server.name.clone(),
                    exec,
                    nodes: states,
                };
                if ready {
                    return Ok(answered);
                }
                failures.push(format!("{}: answers but is not Ready", server.name));
                fallback.get_or_insert(answered);
            }
            Err(error) => failures.push(format!("{}: {error:#}", server.name)),
        }
    }
    fallback.ok_or_else(|| {
        anyhow::anyhow!(
            "no server answers `{GET_NODES_COMMAND}`:\n  {}",
            failures.join("\n  ")
        )
    })
}

async fn run_checked(exec: &dyn RemoteExec, server: &str, command: &str) -> anyhow::Result<String> {
    let output = exec
        .run(command, None)
        .await
        .with_context(|| format!("running `{command}` on {server}"))?;
    if output.exit_status != 0 {
        return Err(DrainError::Kubectl {
            command: command.to_owned(),
            server: server.to_owned(),
            exit_status: output.exit_status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What `provision drain` asks for.
#[derive(Debug, Clone)]
pub struct DrainRequest {
    pub node: NodeName,
    pub flags: DrainFlags,
    pub timeout: Duration,
    pub dry_run: bool,
}

/// How a drain ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum DrainOutcome {
    /// `--dry-run`: the preflight only, nothing changed.
    DryRun,
    /// Pods need flags that were not given: nothing changed.
    Refused,
    /// Cordoned and every pod that moves has left.
    Drained,
    /// kubectl gave up (timeout, PDB): the node stays cordoned with these pods on it.
    Incomplete {
        still_on_node: Vec<String>,
        kubectl: String,
    },
}

/// The preflight, where it ran and how the drain ended.
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    pub server: String,
    pub preflight: Preflight,
    #[serde(flatten)]
    pub outcome: DrainOutcome,
}

impl DrainReport {
    /// The error the command ends with, if the drain did not happen.
    pub fn error(&self) -> Option<DrainError> {
        match &self.outcome {
            DrainOutcome::DryRun | DrainOutcome::Drained => None,
            DrainOutcome::Refused => self.preflight.refusal(),
            DrainOutcome::Incomplete { still_on_node, .. } => Some(DrainError::TimedOut {
                node: self.preflight.node.to_string(),
                pods: still_on_node.clone(),
            }),
        }
    }
}

/// The preflight of `node`, read through `server`.
pub async fn read_preflight(
    server: &ApiServer,
    node: &NodeName,
    flags: DrainFlags,
) -> anyhow::Result<Preflight> {
    let exec = server.exec.as_ref();
    let pods = run_checked(exec, &server.name, &list_pods_command(node)).await?;
    let pdbs = run_checked(exec, &server.name, GET_PDBS_COMMAND).await?;
    let pvcs = run_checked(exec, &server.name, GET_PVCS_COMMAND).await?;
    let pvs = run_checked(exec, &server.name, GET_PVS_COMMAND).await?;
    let objects = ClusterObjects::parse(&pods, &pdbs, &pvcs, &pvs)?;
    Ok(preflight(node, &objects, flags))
}

/// Drain `request.node` of the cluster of `nodes`: preflight, then (unless it refuses or it is
/// a dry run) `kubectl drain`, and a re-list of the node when kubectl gives up.
pub async fn drain(
    nodes: &[GuestNode],
    connector: &dyn Connector,
    request: &DrainRequest,
) -> anyhow::Result<DrainReport> {
    let server = api_server(nodes, request.node.as_str(), connector).await?;
    registered(&server, &request.node)?;
    let preflight = read_preflight(&server, &request.node, request.flags).await?;
    let report = |outcome| DrainReport {
        server: server.name.clone(),
        preflight: preflight.clone(),
        outcome,
    };
    if request.dry_run {
        return Ok(report(DrainOutcome::DryRun));
    }
    if preflight.refusal().is_some() {
        return Ok(report(DrainOutcome::Refused));
    }
    let command = drain_command(&request.node, request.flags, request.timeout);
    let output = server
        .exec
        .run(&command, None)
        .await
        .with_context(|| format!("running `{command}` on {}", server.name))?;
    if output.exit_status == 0 {
        return Ok(report(DrainOutcome::Drained));
    }
    let kubectl = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let after = read_preflight(&server, &request.node, request.flags).await?;
    let still_on_node = preflight.still_on_node(&after.pods);
    if still_on_node.is_empty() {
        return Err(DrainError::Kubectl {
            command,
            server: server.name.clone(),
            exit_status: output.exit_status,
            stderr: kubectl,
        }
        .into());
    }
    Ok(report(DrainOutcome::Incomplete {
        still_on_node,
        kubectl,
    }))
}

/// What `uncordon` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UncordonReport {
    pub node: NodeName,
    pub server: String,
    /// The node was cordoned before (false: it already took pods; nothing changed).
    pub was_cordoned: bool,
}

/// Make `node` schedulable again; a no-op on a schedulable node.
pub async fn uncordon(
    nodes: &[GuestNode],
    connector: &dyn Connector,
    node: &NodeName,
) -> anyhow::Result<UncordonReport> {
    let server = api_server(nodes, node.as_str(), connector).await?;
    let state = registered(&server, node)?;
    let was_cordoned = state.unschedulable;
    // kubectl's uncordon is itself a no-op on a schedulable node.
    run_checked(server.exec.as_ref(), &server.name, &uncordon_command(node)).await?;
    Ok(UncordonReport {
        node: node.clone(),
        server: server.name,
        was_cordoned,
    })
}

fn registered<'a>(server: &'a ApiServer, node: &NodeName) -> Result<&'a NodeState, DrainError> {
    server
        .nodes
        .iter()
        .find(|state| state.name == node.as_str())
        .ok_or_else(|| DrainError::NotRegistered {
            node: node.to_string(),
            server: server.name.clone(),
        })
}
