//! `provision status`'s look at the cluster: ask the servers, in order, for the node list and the
//! API server's readiness checks over SSH (the connection phase 2 uses: the workspace's host keys
//! and known_hosts, the profile's SSH user and key) and turn the answers into a
//! [`ClusterView`]. A cluster that cannot be reached is an answer too, with the reason.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::k3s::cluster::GET_NODES_COMMAND;
use crate::k3s::status::{
    ClusterView, ExpectedNode, Health, cluster_view, parse_node_states, parse_readyz,
    readyz_command,
};
use crate::profile::Profile;
use crate::profile::model::Role;
use crate::ssh::SshOptions;
use crate::state::{VmPhase, VmRecord};
use crate::workspace::Workspace;

use super::ProvisionedVm;
use super::cluster::{ClusterOptions, SshConnector, guest_nodes};
use super::phase2::{Connector, GuestNode};
use super::session::host_key_dir;

/// What `status` learnt about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum ClusterObservation {
    /// There is nothing to ask (no server VM yet, simulated VMs without guests).
    NotChecked { reason: String },
    /// Every server was tried and none answered.
    Unreachable { reason: String },
    /// `server` answered.
    Reached {
        server: String,
        #[serde(flatten)]
        view: ClusterView,
    },
}

impl ClusterObservation {
    /// Unhealthy: reached, with at least one unhealthy finding.
    pub fn is_unhealthy(&self) -> bool {
        match self {
            ClusterObservation::Reached { view, .. } => view.health == Health::Unhealthy,
            ClusterObservation::NotChecked { .. } | ClusterObservation::Unreachable { .. } => false,
        }
    }
}

/// The nodes `status` expects in Kubernetes: every VM of the state that exists on Proxmox.
pub fn expected_nodes(records: &[&VmRecord]) -> Vec<ExpectedNode> {
    records
        .iter()
        .filter(|record| record.phase != VmPhase::Intent)
        .map(|record| ExpectedNode {
            name: record.name.clone(),
            role: record.role,
        })
        .collect()
}

/// Ask `servers` in order until one answers both commands; the view is built against `expected`.
pub async fn observe(
    servers: &[GuestNode],
    connector: &dyn Connector,
    expected: &[ExpectedNode],
) -> ClusterObservation {
    let mut failures = Vec::new();
    for server in servers {
        match ask(server, connector, expected).await {
            Ok(view) => {
                return ClusterObservation::Reached {
                    server: server.name.clone(),
                    view,
                };
            }
            Err(reason) => failures.push(format!("{}: {reason}", server.name)),
        }
    }
    ClusterObservation::Unreachable {
        reason: if failures.is_empty() {
            "no server to ask".to_owned()
        } else {
            failures.join("; ")
        },
    }
}

async fn ask(
    server: &GuestNode,
    connector: &dyn Connector,
    expected: &[ExpectedNode],
) -> Result<ClusterView, String> {
    let exec = connector
        .connect(server)
        .await
        .map_err(|error| error.to_string())?;
    let nodes = exec
        .run(GET_NODES_COMMAND, None)
        .await
        .map_err(|error| error.to_string())?;
    if nodes.exit_status != 0 {
        return Err(format!(
            "`{GET_NODES_COMMAND}` exited {}: {}",
            nodes.exit_status,
            String::from_utf8_lossy(&nodes.stderr).trim()
        ));
    }
    let nodes = parse_node_states(&String::from_utf8_lossy(&nodes.stdout))
        .map_err(|error| error.to_string())?;
    // kubectl exits 1 when a check fails and quotes the checks in its error: both streams count.
    let readyz = exec
        .run(&readyz_command(), None)
        .await
        .map_err(|error| error.to_string())?;
    let readyz = format!(
        "{}\n{}",
        String::from_utf8_lossy(&readyz.stdout),
        String::from_utf8_lossy(&readyz.stderr)
    );
    Ok(cluster_view(nodes, parse_readyz(&readyz), expected))
}

/// SSH options for a quick look: VMs should be up, so one short connection window per server.
fn status_ssh_options() -> ClusterOptions {
    ClusterOptions {
        ssh: SshOptions {
            connect_timeout: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            become_root: true,
            ..SshOptions::default()
        },
        ..ClusterOptions::default()
    }
}

/// Observe the cluster of the state's VMs over SSH, as phase 2 connects to them.
pub async fn observe_over_ssh(
    profile: &Profile,
    workspace: &Workspace,
    records: &[&VmRecord],
) -> ClusterObservation {
    let servers: Vec<ProvisionedVm> = records
        .iter()
        .filter(|record| record.role == Role::Server && record.phase == VmPhase::Ready)
        .filter_map(|record| {
            let address: IpAddr = record.address.as_deref()?.parse().ok()?;
            Some(ProvisionedVm {
                name: record.name.clone(),
                vmid: record.vmid,
                node: record.node.clone(),
                address,
                role: record.role,
                group: record.group.clone(),
                gpus: record.gpus.clone(),
                seconds: 0.0,
            })
        })
        .collect();
    if servers.is_empty() {
        return ClusterObservation::NotChecked {
            reason: "no server VM with an address is ready in the state".to_owned(),
        };
    }
    let nodes = match guest_nodes(&servers, &host_key_dir(workspace)) {
        Ok(nodes) => nodes,
        Err(error) => {
            return ClusterObservation::Unreachable {
                reason: format!("{error:#}"),
            };
        }
    };
    let connector = match SshConnector::new(profile, workspace, &nodes, &status_ssh_options(), None)
    {
        Ok(connector) => connector,
        Err(error) => {
            return ClusterObservation::Unreachable {
                reason: format!("{error:#}"),
            };
        }
    };
    observe(&nodes, &connector, &expected_nodes(records)).await
}
