//! k3s's embedded etcd on day 2: the commands that list members (with learners), check their
//! health, save and verify a snapshot, remove a node's member and delete its Node and
//! node-password Secret, and the pure decision whether the cluster stays healthy without a node.
//!
//! k3s ships no `etcdctl`; provision installs Debian's `etcd-client` on servers and talks to
//! `127.0.0.1:2379` with k3s's client certificates. Where those files are absent (the testbed's
//! stand-in, whose etcd is plain HTTP) the same command uses `http://127.0.0.1:2379`.
//! Everything here is pure: node names arrive as [`NodeName`] (RFC 1123, never option-like)
//! and are still quoted where they reach a shell.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::drain::NodeName;
use crate::nodeprep::shell::quote;

/// k3s's etcd client certificates on a server.
pub const ETCD_TLS_DIR: &str = "/var/lib/rancher/k3s/server/tls/etcd";
/// The annotation that asks k3s's managed-etcd controller to remove a node's member.
pub const REMOVE_ANNOTATION: &str = "etcd.k3s.cattle.io/remove";
/// The annotation the controller sets once the member is gone.
pub const REMOVED_ANNOTATION: &str = "etcd.k3s.cattle.io/removed-node-name";
/// The Debian package that brings `etcdctl` to server nodes.
pub const ETCD_CLIENT_PACKAGE: &str = "etcd-client";

/// Errors of reading etcd's answers.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot read `etcdctl {command}` output: {message}")]
    Parse {
        command: &'static str,
        message: String,
    },
    #[error("{name:?} is not a valid snapshot name (letters, digits and `-`, at most 100)")]
    SnapshotName { name: String },
}

/// The `etcdctl` invocation with k3s's TLS client certificates when they exist, plain HTTP
/// otherwise (the stand-in); `args` are fixed words chosen by this module.
fn etcdctl(args: &str) -> String {
    let tls = ETCD_TLS_DIR;
    format!(
        "if [ -f {tls}/server-client.crt ]; then \
         ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert={tls}/server-ca.crt \
         --cert={tls}/server-client.crt --key={tls}/server-client.key --command-timeout=10s {args}; \
         else ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 --command-timeout=10s {args}; fi"
    )
}

/// `etcdctl member list -w json`, run on a server.
pub fn member_list_command() -> String {
    etcdctl("member list -w json")
}

/// `etcdctl endpoint health --cluster -w json`: every member's client URL is asked. It exits
/// non-zero when one is unhealthy but still prints every answer: read stdout either way.
pub fn endpoint_health_command() -> String {
    etcdctl("endpoint health --cluster -w json")
}

/// `etcdctl member remove <hex id>`: the fallback when a member outlived its Node (the
/// managed-etcd controller only acts on Nodes).
pub fn member_remove_command(id: u64) -> String {
    etcdctl(&format!("member remove {id:x}"))
}

/// One etcd member as `etcdctl member list -w json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    pub id: u64,
    /// k3s names members `<node>-<8 hex digits>`; empty while a member has not started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl EtcdMember {
    /// The Kubernetes node this member belongs to (k3s's `<node>-<8 hex>` naming).
    pub fn node_name(&self) -> &str {
        member_node_name(&self.name)
    }
}

/// `lab-cp-1-1a2b3c4d` → `lab-cp-1`; a name without the suffix is returned as it is.
pub fn member_node_name(member: &str) -> &str {
    match member.rsplit_once('-') {
        Some((node, suffix))
            if suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            node
        }
        _ => member,
    }
}

#[derive(Deserialize)]
struct MemberListJson {
    #[serde(default)]
    members: Vec<MemberJson>,
}

#[derive(Deserialize)]
struct MemberJson {
    #[serde(rename = "ID")]
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    is_learner: bool,
}

/// Parse `etcdctl member list -w json` (member IDs are JSON numbers, full u64).
pub fn parse_member_list(stdout: &str) -> Result<Vec<EtcdMember>, EtcdError> {
    let list: MemberListJson = serde_json::from_str(stdout).map_err(|error| EtcdError::Parse {
        command: "member list -w json",
        message: error.to_string(),
    })?;
    Ok(list
        .members
        .into_iter()
        .map(|member| EtcdMember {
            id: member.id,
            name: member.name,
            peer_urls: member.peer_urls,
            client_urls: member.client_urls,
            is_learner: member.is_learner,
        })
        .collect())
}

#[derive(Deserialize)]
struct HealthJson {
    endpoint: String,
    #[serde(default)]
    health: bool,
}

/// Parse `etcdctl endpoint health --cluster -w json`: the client URLs that answered healthy.
pub fn parse_endpoint_health(stdout: &str) -> Result<BTreeSet<String>, EtcdError> {
    let trimmed = stdout.trim();
    if trimmed.is_empty() {
        return Ok(BTreeSet::new());
    }
    let list: Vec<HealthJson> =
        serde_json::from_str(trimmed).map_err(|error| EtcdError::Parse {
            command: "endpoint health --cluster -w json",
            message: error.to_string(),
        })?;
    Ok(list
        .into_iter()
        .filter(|entry| entry.health)
        .map(|entry| entry.endpoint)
        .collect())
}

/// A member is healthy when one of its client URLs answered.
pub fn member_healthy(member: &EtcdMember, healthy_endpoints: &BTreeSet<String>) -> bool {
    member
        .client_urls
        .iter()
        .any(|url| healthy_endpoints.contains(url))
}

/// Why a server cannot be taken out of etcd now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumRefusal {
    /// A learner is still catching up: another server is joining.
    LearnerPending { learners: Vec<String> },
    /// Without the node, fewer than a majority of the remaining voters would be healthy.
    QuorumLost {
        voters: usize,
        healthy: usize,
        unhealthy: Vec<String>,
    },
    /// Quorum would hold, but an unhealthy member makes etcd refuse the replacement's join
    /// ("etcdserver: unhealthy cluster").
    UnhealthyMember { unhealthy: Vec<String> },
    /// No voting member would remain.
    LastMember,
}

impl std::fmt::Display for QuorumRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuorumRefusal::LearnerPending { learners } => write!(
                f,
                "etcd member(s) {} are learners: another server is still joining; let it finish \
                 (or remove the learner with `etcdctl member remove`) and try again",
                learners.join(", ")
            ),
            QuorumRefusal::QuorumLost {
                voters,
                healthy,
                unhealthy,
            } => write!(
                f,
                "without it only {healthy} of the {voters} remaining voting etcd members would be \
                 healthy ({} down), fewer than a quorum of {}: bring {} back first",
                unhealthy.join(", "),
                voters / 2 + 1,
                unhealthy.join(", ")
            ),
            QuorumRefusal::UnhealthyMember { unhealthy } => write!(
                f,
                "etcd member(s) of {} are unhealthy: etcd would refuse the replacement's join \
                 (\"unhealthy cluster\"); bring them back (or replace them) first",
                unhealthy.join(", ")
            ),
            QuorumRefusal::LastMember => f.write_str(
                "it is the only voting etcd member: replacing it would lose the cluster; \
                 add a server first, or restore from a snapshot",
            ),
        }
    }
}

/// Whether etcd stays healthy when `node`'s member leaves: no learner pending, and every other
/// voting member healthy (which implies a quorum of the remaining voters). `node`'s own
/// member may be dead: that is what replacing a dead server is for.
pub fn healthy_without(
    members: &[EtcdMember],
    healthy_endpoints: &BTreeSet<String>,
    node: &str,
) -> Result<(), QuorumRefusal> {
    let learners: Vec<String> = members
        .iter()
        .filter(|member| member.is_learner)
        .map(display_member)
        .collect();
    if !learners.is_empty() {
        return Err(QuorumRefusal::LearnerPending { learners });
    }
    let remaining: Vec<&EtcdMember> = members
        .iter()
        .filter(|member| member.node_name() != node)
        .collect();
    if remaining.is_empty() {
        return Err(QuorumRefusal::LastMember);
    }
    let unhealthy: Vec<String> = remaining
        .iter()
        .filter(|member| !member_healthy(member, healthy_endpoints))
        .map(|member| display_member(member))
        .collect();
    let healthy = remaining.len() - unhealthy.len();
    if healthy < remaining.len() / 2 + 1 {
        return Err(QuorumRefusal::QuorumLost {
            voters: remaining.len(),
            healthy,
            unhealthy,
        });
    }
    if !unhealthy.is_empty() {
        return Err(QuorumRefusal::UnhealthyMember { unhealthy });
    }
    Ok(())
}

fn display_member(member: &EtcdMember) -> String {
    if member.name.is_empty() {
        format!("{:x} (not started)", member.id)
    } else {
        member.node_name().to_owned()
    }
}

/// The members that belong to `node`.
pub fn members_of<'a>(members: &'a [EtcdMember], node: &str) -> Vec<&'a EtcdMember> {
    members
        .iter()
        .filter(|member| member.node_name() == node)
        .collect()
}

/// `k3s kubectl annotate node NODE etcd.k3s.cattle.io/remove=true --overwrite`: k3s's
/// managed-etcd controller removes the member and sets [`REMOVED_ANNOTATION`].
pub fn annotate_remove_command(node: &NodeName) -> String {
    format!(
        "k3s kubectl annotate node {} {REMOVE_ANNOTATION}=true --overwrite",
        quote(node.as_str())
    )
}

/// `k3s kubectl get node NODE -o json` (the annotations are read from it).
pub fn get_node_command(node: &NodeName) -> String {
    format!("k3s kubectl get node {} -o json", quote(node.as_str()))
}

/// Whether `k3s kubectl get node -o json` shows the member removal done.
pub fn member_removed(node_json: &str, node: &str) -> Result<bool, EtcdError> {
    let value: serde_json::Value =
        serde_json::from_str(node_json).map_err(|error| EtcdError::Parse {
            command: "k3s kubectl get node -o json",
            message: error.to_string(),
        })?;
    Ok(value
        .pointer("/metadata/annotations")
        .and_then(|annotations| annotations.get(REMOVED_ANNOTATION))
        .and_then(serde_json::Value::as_str)
        == Some(node))
}

/// `k3s kubectl delete node NODE --ignore-not-found`.
pub fn delete_node_command(node: &NodeName) -> String {
    format!(
        "k3s kubectl delete node {} --ignore-not-found",
        quote(node.as_str())
    )
}

/// The Secret k3s keeps the node's password hash in.
pub fn node_password_secret(node: &NodeName) -> String {
    format!("{node}.node-password.k3s")
}

/// `k3s kubectl delete secret -n kube-system NODE.node-password.k3s --ignore-not-found`: a
/// new machine under the same name is refused ("Node password rejected") while it exists.
pub fn delete_node_password_command(node: &NodeName) -> String {
    format!(
        "k3s kubectl delete secret -n kube-system {} --ignore-not-found",
        quote(&node_password_secret(node))
    )
}

/// Stop k3s on a node (the unit of its role) and keep it from starting at boot.
pub fn stop_k3s_command(unit: &str) -> String {
    format!(
        "systemctl disable --now {} 2>/dev/null || systemctl stop {}",
        quote(unit),
        quote(unit)
    )
}

/// A snapshot name provision may pass to `k3s etcd-snapshot save --name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotName(String);

impl SnapshotName {
    pub fn new(name: &str) -> Result<Self, EtcdError> {
        let valid = !name.is_empty()
            && name.len() <= 100
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(EtcdError::SnapshotName {
                name: name.to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `k3s etcd-snapshot save --name NAME`: k3s names the file `NAME-<node>-<unix time>`.
pub fn snapshot_save_command(name: &SnapshotName) -> String {
    format!("k3s etcd-snapshot save --name {}", quote(name.as_str()))
}

/// `k3s etcd-snapshot ls`.
pub const SNAPSHOT_LS_COMMAND: &str = "k3s etcd-snapshot ls";

/// One row of `k3s etcd-snapshot ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub location: String,
    pub size: u64,
}

/// Parse `k3s etcd-snapshot ls` (a table `Name Location Size Created`; log lines on stderr).
pub fn parse_snapshot_list(stdout: &str) -> Vec<Snapshot> {
    stdout
        .lines()
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let [name, location, size, ..] = columns.as_slice() else {
                return None;
            };
            let size = size.parse().ok()?;
            Some(Snapshot {
                name: (*name).to_owned(),
                location: (*location).to_owned(),
                size,
            })
        })
        .collect()
}

/// The non-empty snapshot `save --name name` made (`NAME-<node>-<unix time>`), if `ls` lists
/// one. Names provision chooses are unique per operation, so the prefix identifies it.
pub fn find_snapshot<'a>(snapshots: &'a [Snapshot], name: &SnapshotName) -> Option<&'a Snapshot> {
    let prefix = format!("{}-", name.as_str());
    snapshots.iter().find(|snapshot| {
        snapshot.size > 0
            && snapshot.name.strip_prefix(&prefix).is_some_and(|rest| {
                rest.rsplit_once('-').is_some_and(|(_, time)| {
                    !time.is_empty() && time.bytes().all(|b| b.is_ascii_digit())
                })
            })
    })
}

#[cfg(test)]
#[path = "etcd_tests.rs"]
mod tests;
