//! The cluster view of `provision status`: what `k3s kubectl get nodes -o json` and
//! `k3s kubectl get --raw '/readyz?verbose'` say, turned into typed node states and findings.
//!
//! Pure: the commands are built here, run elsewhere, and their output parsed here. A finding is
//! either *unhealthy* (the cluster is not what the profile asks for: `status` exits 3) or
//! *degraded* (worth a look but deliberate or harmless on its own: a cordoned node, an unknown
//! node, mixed minor versions during an upgrade; `status` exits 0).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::nodeprep::shell::quote;
use crate::profile::model::Role;

use super::K3sError;
use super::cluster::ETCD_ROLE_LABEL;

/// The annotation k3s's managed-etcd controller puts on a server that is an etcd member.
pub const ETCD_NAME_ANNOTATION: &str = "etcd.k3s.cattle.io/node-name";
/// The member's peer address, beside [`ETCD_NAME_ANNOTATION`].
pub const ETCD_ADDRESS_ANNOTATION: &str = "etcd.k3s.cattle.io/node-address";
/// Prefix of the role labels kubectl shows in its ROLES column.
const ROLE_LABEL_PREFIX: &str = "node-role.kubernetes.io/";

/// The API server's readiness checks, one `[+]name ok` / `[-]name failed: …` line each.
pub fn readyz_command() -> String {
    format!("k3s kubectl get --raw {}", quote("/readyz?verbose"))
}

/// A node the workspace expects in the cluster (a VM of the state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedNode {
    pub name: String,
    pub role: Role,
}

/// One node as Kubernetes reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeState {
    pub name: String,
    pub ready: bool,
    /// `spec.unschedulable` (`kubectl cordon`).
    pub cordoned: bool,
    /// `status.nodeInfo.kubeletVersion`, e.g. `v1.31.4+k3s1`.
    pub kubelet_version: String,
    /// From the `node-role.kubernetes.io/<role>` labels, sorted (`control-plane`, `etcd`, …).
    pub roles: Vec<String>,
    /// The etcd member it carries (label and k3s's annotations), if any.
    pub etcd: Option<EtcdMember>,
}

/// What k3s says about a server's embedded-etcd member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdMember {
    /// The member name (`<node>-<hash>`).
    pub name: String,
    pub address: Option<String>,
}

/// The `etcd` check of `/readyz?verbose`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "detail")]
pub enum EtcdHealth {
    Ok,
    /// `[-]etcd failed: …`, with what follows `failed`.
    Failed(String),
    /// The answer has no etcd line.
    Unknown,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Degraded,
    Unhealthy,
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    NotReady,
    Cordoned,
    NotEtcdMember,
    EtcdNotOk,
    MissingNode,
    UnknownNode,
    KubeletNewerThanServer,
    MixedMinorVersions,
}

impl FindingKind {
    pub fn severity(self) -> Severity {
        match self {
            FindingKind::NotReady
            | FindingKind::NotEtcdMember
            | FindingKind::EtcdNotOk
            | FindingKind::MissingNode
            | FindingKind::KubeletNewerThanServer => Severity::Unhealthy,
            FindingKind::Cordoned | FindingKind::UnknownNode | FindingKind::MixedMinorVersions => {
                Severity::Degraded
            }
        }
    }
}

/// One thing wrong with the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub kind: FindingKind,
    /// The node it is about, when it is about one.
    pub node: Option<String>,
    pub message: String,
}

/// The cluster as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

/// Nodes, etcd and findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    pub health: Health,
    pub nodes: Vec<NodeState>,
    pub etcd: EtcdHealth,
    pub findings: Vec<Finding>,
}

#[derive(Deserialize)]
struct NodeList {
    #[serde(default)]
    items: Vec<NodeItem>,
}

#[derive(Deserialize)]
struct NodeItem {
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Spec {
    #[serde(default)]
    unschedulable: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default)]
    node_info: NodeInfo,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NodeInfo {
    #[serde(default)]
    kubelet_version: String,
}

/// Parse `k3s kubectl get nodes -o json` into node states, sorted by name.
pub fn parse_node_states(json: &str) -> Result<Vec<NodeState>, K3sError> {
    let list: NodeList = serde_json::from_str(json).map_err(|error| K3sError::NodeList {
        message: error.to_string(),
    })?;
    let mut nodes: Vec<NodeState> = list.items.into_iter().map(node_state).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

fn node_state(item: NodeItem) -> NodeState {
    let Metadata {
        name,
        labels,
        annotations,
    } = item.metadata;
    let labelled_etcd = labels.get(ETCD_ROLE_LABEL).is_some_and(|v| v == "true");
    let etcd = match annotations.get(ETCD_NAME_ANNOTATION) {
        Some(member) if labelled_etcd && !member.is_empty() => Some(EtcdMember {
            name: member.clone(),
            address: annotations.get(ETCD_ADDRESS_ANNOTATION).cloned(),
        }),
        Some(_) | None => None,
    };
    NodeState {
        ready: item
            .status
            .conditions
            .iter()
            .any(|c| c.kind == "Ready" && c.status == "True"),
        cordoned: item.spec.unschedulable,
        kubelet_version: item.status.node_info.kubelet_version,
        roles: labels
            .keys()
            .filter_map(|key| key.strip_prefix(ROLE_LABEL_PREFIX))
            .filter(|role| !role.is_empty())
            .map(str::to_owned)
            .collect(),
        etcd,
        name,
    }
}

/// The etcd line of `/readyz?verbose`. kubectl prints the body on stdout when the API is ready;
/// when a check fails it exits 1 and quotes the body in its error (with `\n` escaped), so both
/// streams are read.
pub fn parse_readyz(output: &str) -> EtcdHealth {
    let lines = output.split('\n').flat_map(|line| line.split("\\n"));
    for line in lines {
        let line = line.trim().trim_matches('"');
        if line == "[+]etcd ok" {
            return EtcdHealth::Ok;
        }
        if let Some(rest) = line.strip_prefix("[-]etcd ") {
            let detail = rest.strip_prefix("failed:").unwrap_or(rest).trim();
            return EtcdHealth::Failed(detail.to_owned());
        }
    }
    EtcdHealth::Unknown
}

/// `v1.31.4+k3s1` → (1, 31, 4); `None` for anything else.
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.strip_prefix('v').unwrap_or(version);
    let core = core.split(['+', '-']).next()?;
    let mut parts = core.split('.').map(|part| part.parse::<u64>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

/// The findings about `nodes` and `etcd`, against the nodes the workspace expects.
pub fn cluster_view(
    nodes: Vec<NodeState>,
    etcd: EtcdHealth,
    expected: &[ExpectedNode],
) -> ClusterView {
    let mut findings = Vec::new();
    let mut add = |kind: FindingKind, node: Option<&str>, message: String| {
        findings.push(Finding {
            severity: kind.severity(),
            kind,
            node: node.map(str::to_owned),
            message,
        });
    };
    for want in expected {
        match nodes.iter().find(|node| node.name == want.name) {
            None => add(
                FindingKind::MissingNode,
                Some(&want.name),
                format!(
                    "{} ({}) is not a Kubernetes node: k3s is not running there or never joined; run `provision up`",
                    want.name,
                    want.role.as_str()
                ),
            ),
            Some(node) if want.role == Role::Server && node.etcd.is_none() => add(
                FindingKind::NotEtcdMember,
                Some(&node.name),
                format!(
                    "server {} is not an etcd member (no {ETCD_ROLE_LABEL}=true label with {ETCD_NAME_ANNOTATION})",
                    node.name
                ),
            ),
            Some(_) => {}
        }
    }
    for node in &nodes {
        if !node.ready {
            add(
                FindingKind::NotReady,
                Some(&node.name),
                format!("{} is NotReady", node.name),
            );
        }
        if node.cordoned {
            add(
                FindingKind::Cordoned,
                Some(&node.name),
                format!(
                    "{} is cordoned (unschedulable): `k3s kubectl uncordon {}` when its maintenance is done",
                    node.name, node.name
                ),
            );
        }
        if !expected.iter().any(|want| want.name == node.name) {
            add(
                FindingKind::UnknownNode,
                Some(&node.name),
                format!(
                    "{} is a Kubernetes node but not a VM of this workspace",
                    node.name
                ),
            );
        }
    }
    match &etcd {
        EtcdHealth::Ok => {}
        EtcdHealth::Failed(detail) => add(
            FindingKind::EtcdNotOk,
            None,
            format!("the API server's etcd check failed: {detail}"),
        ),
        EtcdHealth::Unknown => add(
            FindingKind::EtcdNotOk,
            None,
            "the API server's readiness checks do not list etcd".to_owned(),
        ),
    }
    version_findings(&nodes, &mut add);
    let health = match findings.iter().map(|f| f.severity).max() {
        None => Health::Healthy,
        Some(Severity::Degraded) => Health::Degraded,
        Some(Severity::Unhealthy) => Health::Unhealthy,
    };
    ClusterView {
        health,
        nodes,
        etcd,
        findings,
    }
}

/// Kubelets may be older than the API server, never newer; mixed minor versions mean an upgrade
/// in progress. A server's kubelet runs the server's own version (one k3s binary).
fn version_findings(nodes: &[NodeState], add: &mut impl FnMut(FindingKind, Option<&str>, String)) {
    let versions: Vec<(&NodeState, (u64, u64, u64))> = nodes
        .iter()
        .filter_map(|node| parse_version(&node.kubelet_version).map(|v| (node, v)))
        .collect();
    let oldest_server = versions
        .iter()
        .filter(|(node, _)| node.etcd.is_some() || node.roles.iter().any(|r| r == "control-plane"))
        .min_by_key(|(_, version)| *version);
    if let Some((server, server_version)) = oldest_server {
        for (node, version) in &versions {
            if version > server_version {
                add(
                    FindingKind::KubeletNewerThanServer,
                    Some(&node.name),
                    format!(
                        "{} runs kubelet {}, newer than server {} ({}): upgrade the servers first",
                        node.name, node.kubelet_version, server.name, server.kubelet_version
                    ),
                );
            }
        }
    }
    let minors: std::collections::BTreeSet<(u64, u64)> = versions
        .iter()
        .map(|(_, (major, minor, _))| (*major, *minor))
        .collect();
    if minors.len() > 1 {
        let listed: Vec<String> = minors
            .iter()
            .map(|(major, minor)| format!("v{major}.{minor}"))
            .collect();
        add(
            FindingKind::MixedMinorVersions,
            None,
            format!(
                "nodes run different minor versions ({}): finish the upgrade",
                listed.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One item of `kubectl get nodes -o json`, shaped like k3s v1.31 writes it (trimmed).
    fn item(
        name: &str,
        server: bool,
        ready: &str,
        unschedulable: bool,
        version: &str,
    ) -> serde_json::Value {
        let mut labels = serde_json::json!({
            "beta.kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
            "node.kubernetes.io/instance-type": "k3s",
        });
        let mut annotations = serde_json::json!({
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "k3s.io/node-args": "[\"server\"]",
            "node.alpha.kubernetes.io/ttl": "0",
        });
        if server {
            labels["node-role.kubernetes.io/control-plane"] = "true".into();
            labels["node-role.kubernetes.io/etcd"] = "true".into();
            labels["node-role.kubernetes.io/master"] = "true".into();
            annotations[ETCD_NAME_ANNOTATION] = format!("{name}-6f0b3c1a").into();
            annotations[ETCD_ADDRESS_ANNOTATION] = "10.0.0.11".into();
        }
        let mut spec =
            serde_json::json!({"podCIDR": "10.42.0.0/24", "providerID": format!("k3s://{name}")});
        if unschedulable {
            spec["unschedulable"] = true.into();
            spec["taints"] = serde_json::json!([{"effect": "NoSchedule", "key": "node.kubernetes.io/unschedulable", "timeAdded": "2026-11-30T10:00:00Z"}]);
        }
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": annotations, "resourceVersion": "1234"},
            "spec": spec,
            "status": {
                "addresses": [{"address": "10.0.0.11", "type": "InternalIP"}, {"address": name, "type": "Hostname"}],
                "conditions": [
                    {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                    {"type": "Ready", "status": ready, "reason": "KubeletReady", "message": "kubelet is posting ready status"}
                ],
                "nodeInfo": {"architecture": "amd64", "containerRuntimeVersion": "containerd://1.7.23-k3s2", "kubeletVersion": version, "kubeProxyVersion": version, "osImage": "Ubuntu 24.04.1 LTS"}
            }
        })
    }

    fn list(items: Vec<serde_json::Value>) -> String {
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}).to_string()
    }

    fn expected() -> Vec<ExpectedNode> {
        vec![
            ExpectedNode {
                name: "s1".into(),
                role: Role::Server,
            },
            ExpectedNode {
                name: "s2".into(),
                role: Role::Server,
            },
            ExpectedNode {
                name: "a1".into(),
                role: Role::Agent,
            },
        ]
    }

    const READYZ_OK: &str = "[+]ping ok\n[+]log ok\n[+]etcd ok\n[+]etcd-readiness ok\n[+]informer-sync ok\n[+]poststarthook/start-apiserver-admission-initializer ok\nreadyz check passed\n";

    fn view(items: Vec<serde_json::Value>, readyz: &str) -> ClusterView {
        cluster_view(
            parse_node_states(&list(items)).unwrap(),
            parse_readyz(readyz),
            &expected(),
        )
    }

    fn kinds(view: &ClusterView) -> Vec<(FindingKind, Option<&str>)> {
        view.findings
            .iter()
            .map(|f| (f.kind, f.node.as_deref()))
            .collect()
    }

    #[test]
    fn a_healthy_cluster_has_no_findings() {
        let v = view(
            vec![
                item("s2", true, "True", false, "v1.31.4+k3s1"),
                item("s1", true, "True", false, "v1.31.4+k3s1"),
                item("a1", false, "True", false, "v1.31.4+k3s1"),
            ],
            READYZ_OK,
        );
        assert_eq!(v.health, Health::Healthy, "{:?}", v.findings);
        assert_eq!(v.etcd, EtcdHealth::Ok);
        let names: Vec<_> = v.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a1", "s1", "s2"]);
        assert_eq!(v.nodes[1].roles, ["control-plane", "etcd", "master"]);
        assert!(v.nodes[0].roles.is_empty());
        assert_eq!(
            v.nodes[1].etcd,
            Some(EtcdMember {
                name: "s1-6f0b3c1a".into(),
                address: Some("10.0.0.11".into())
            })
        );
        assert_eq!(v.nodes[0].kubelet_version, "v1.31.4+k3s1");
    }

    #[test]
    fn not_ready_missing_and_non_member_are_unhealthy() {
        let mut s2 = item("s2", true, "True", false, "v1.31.4+k3s1");
        s2["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(ETCD_NAME_ANNOTATION);
        let v = view(
            vec![item("s1", true, "Unknown", false, "v1.31.4+k3s1"), s2],
            READYZ_OK,
        );
        assert_eq!(v.health, Health::Unhealthy);
        assert_eq!(
            kinds(&v),
            [
                (FindingKind::NotEtcdMember, Some("s2")),
                (FindingKind::MissingNode, Some("a1")),
                (FindingKind::NotReady, Some("s1")),
            ]
        );
        assert_eq!(v.findings[2].message, "s1 is NotReady");
    }

    #[test]
    fn cordoned_and_unknown_nodes_and_mixed_minors_are_degraded() {
        let v = view(
            vec![
                item("s1", true, "True", false, "v1.31.4+k3s1"),
                item("s2", true, "True", false, "v1.31.4+k3s1"),
                item("a1", false, "True", true, "v1.30.6+k3s1"),
                item("stray", false, "True", false, "v1.31.4+k3s1"),
            ],
            READYZ_OK,
        );
        assert_eq!(v.health, Health::Degraded, "{:?}", v.findings);
        assert!(v.nodes[0].cordoned);
        assert_eq!(
            kinds(&v),
            [
                (FindingKind::Cordoned, Some("a1")),
                (FindingKind::UnknownNode, Some("stray")),
                (FindingKind::MixedMinorVersions, None),
            ]
        );
        assert_eq!(
            v.findings[2].message,
            "nodes run different minor versions (v1.30, v1.31): finish the upgrade"
        );
    }

    #[test]
    fn a_kubelet_newer_than_a_server_is_unhealthy() {
        let v = view(
            vec![
                item("s1", true, "True", false, "v1.31.4+k3s1"),
                item("s2", true, "True", false, "v1.31.2+k3s1"),
                item("a1", false, "True", false, "v1.31.4+k3s1"),
            ],
            READYZ_OK,
        );
        assert_eq!(v.health, Health::Unhealthy);
        assert_eq!(
            kinds(&v),
            [
                (FindingKind::KubeletNewerThanServer, Some("a1")),
                (FindingKind::KubeletNewerThanServer, Some("s1")),
            ]
        );
        assert!(
            v.findings[0]
                .message
                .contains("newer than server s2 (v1.31.2+k3s1)")
        );
    }

    #[test]
    fn readyz_etcd_line_from_stdout_or_kubectl_error() {
        assert_eq!(parse_readyz(READYZ_OK), EtcdHealth::Ok);
        let error = r#"Error from server (InternalError): an error on the server ("[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n[+]informer-sync ok\nreadyz check failed") has prevented the request from succeeding"#;
        assert_eq!(
            parse_readyz(error),
            EtcdHealth::Failed("reason withheld".into())
        );
        assert_eq!(
            parse_readyz("[+]ping ok\nreadyz check passed\n"),
            EtcdHealth::Unknown
        );
        let v = view(
            vec![
                item("s1", true, "True", false, "v1.31.4+k3s1"),
                item("s2", true, "True", false, "v1.31.4+k3s1"),
                item("a1", false, "True", false, "v1.31.4+k3s1"),
            ],
            error,
        );
        assert_eq!(v.health, Health::Unhealthy);
        assert_eq!(kinds(&v), [(FindingKind::EtcdNotOk, None)]);
    }

    #[test]
    fn versions_and_commands() {
        assert_eq!(parse_version("v1.31.4+k3s1"), Some((1, 31, 4)));
        assert_eq!(parse_version("v1.30.0-rc1+k3s1"), Some((1, 30, 0)));
        assert_eq!(parse_version("v1.31"), None);
        assert_eq!(parse_version(""), None);
        assert_eq!(readyz_command(), "k3s kubectl get --raw '/readyz?verbose'");
        assert!(parse_node_states("not json").is_err());
    }
}
