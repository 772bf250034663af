//! Observing the cluster: node list parsing, readiness conditions, existing-cluster probes, the choice of
//! bootstrap server and join targets, and label/taint reconciliation commands.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::nodeprep::shell::quote;

use super::config::{JoinMode, server_url};
use super::{CONFIG_PATH, K3sError, SERVER_DB_DIR, SERVER_TOKEN_PATH};

/// Lists nodes as JSON (run on a server).
pub const GET_NODES_COMMAND: &str = "k3s kubectl get nodes -o json";
/// The label k3s puts on embedded-etcd members.
pub const ETCD_ROLE_LABEL: &str = "node-role.kubernetes.io/etcd";

/// One node as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    pub ready: bool,
    pub etcd_member: bool,
    pub labels: BTreeMap<String, String>,
    /// `key[=value]:Effect`, as written in profiles.
    pub taints: Vec<String>,
}

#[derive(Deserialize)]
struct NodeList {
    #[serde(default)]
    items: Vec<NodeItem>,
}

#[derive(Deserialize)]
struct NodeItem {
    metadata: NodeMetadata,
    #[serde(default)]
    spec: NodeSpec,
    #[serde(default)]
    status: NodeStatus,
}

#[derive(Deserialize)]
struct NodeMetadata {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct NodeSpec {
    #[serde(default)]
    taints: Vec<Taint>,
}

#[derive(Deserialize)]
struct Taint {
    key: String,
    #[serde(default)]
    value: Option<String>,
    effect: String,
}

#[derive(Deserialize, Default)]
struct NodeStatus {
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

/// Parse `k3s kubectl get nodes -o json`.
pub fn parse_nodes(json: &str) -> Result<Vec<ClusterNode>, K3sError> {
    let list: NodeList = serde_json::from_str(json).map_err(|error| K3sError::NodeList {
        message: error.to_string(),
    })?;
    Ok(list
        .items
        .into_iter()
        .map(|item| ClusterNode {
            ready: item
                .status
                .conditions
                .iter()
                .any(|c| c.kind == "Ready" && c.status == "True"),
            etcd_member: item
                .metadata
                .labels
                .get(ETCD_ROLE_LABEL)
                .is_some_and(|v| v == "true"),
            taints: item
                .spec
                .taints
                .iter()
                .map(|t| match t.value.as_deref() {
                    Some(value) if !value.is_empty() => format!("{}={}:{}", t.key, value, t.effect),
                    _ => format!("{}:{}", t.key, t.effect),
                })
                .collect(),
            labels: item.metadata.labels,
            name: item.metadata.name,
        })
        .collect())
}

/// Commands that bring a node's labels and taints to what the profile says (config.yaml's `node-label`
/// and `node-taint` only apply at first registration). Labels and taints provision does not manage are left
/// alone. Empty when nothing differs. Every value is one quoted word; one starting with `-` (a node name
/// the guest reports, a label or taint) would be taken for a kubectl option and is refused (Kubernetes
/// names, label keys and taint keys never start with `-`).
pub fn label_taint_commands(
    node: &ClusterNode,
    labels: &BTreeMap<String, String>,
    taints: &[String],
) -> Result<Vec<String>, K3sError> {
    let option_like = |what: &str, value: &str| {
        if value.starts_with('-') {
            Err(K3sError::OptionLikeValue {
                what: what.to_owned(),
                value: value.to_owned(),
            })
        } else {
            Ok(())
        }
    };
    option_like("node name", &node.name)?;
    for (key, value) in labels {
        option_like("label", &format!("{key}={value}"))?;
    }
    for taint in taints {
        option_like("taint", taint)?;
    }
    let mut commands = Vec::new();
    let changed_labels: Vec<String> = labels
        .iter()
        .filter(|(key, value)| node.labels.get(*key) != Some(*value))
        .map(|(key, value)| quote(&format!("{key}={value}")))
        .collect();
    if !changed_labels.is_empty() {
        commands.push(format!(
            "k3s kubectl label node {} --overwrite {}",
            quote(&node.name),
            changed_labels.join(" ")
        ));
    }
    let missing_taints: Vec<String> = taints
        .iter()
        .filter(|taint| !node.taints.contains(taint))
        .map(|taint| quote(taint))
        .collect();
    if !missing_taints.is_empty() {
        commands.push(format!(
            "k3s kubectl taint node {} --overwrite {}",
            quote(&node.name),
            missing_taints.join(" ")
        ));
    }
    Ok(commands)
}

/// What a node already has of k3s (read with [`probe_script`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeProbe {
    /// A server's datastore holds data (it belongs to a cluster).
    pub has_data: bool,
    /// The k3s unit is active.
    pub active: bool,
    /// The server token file exists and carries our secret (`None`: no token file).
    pub token_matches: Option<bool>,
    /// `cluster-init` / `server` of the existing config.yaml, if any.
    pub existing_join: Option<JoinMode>,
}

impl NodeProbe {
    /// A server the cluster can be built around.
    pub fn healthy_server(&self) -> bool {
        self.has_data && self.active && self.token_matches == Some(true)
    }
}

/// Probe a node; reads the secret on stdin so it never appears on a command line.
pub fn probe_script(unit: &str) -> String {
    format!(
        r#"read -r want || true
if [ -d {db} ] && [ -n "$(ls -A {db} 2>/dev/null | grep -vx snapshots)" ]; then echo 'data yes'; else echo 'data no'; fi
if systemctl is-active --quiet {unit}; then echo 'active yes'; else echo 'active no'; fi
if [ -r {token} ]; then
  have="$(cat {token})"
  case "$have" in *"::server:$want"|"$want") echo 'token match' ;; *) echo 'token mismatch' ;; esac
else echo 'token none'; fi
if [ -r {config} ]; then grep -E '^(cluster-init|server):' {config} | sed 's/^/config /'; fi
true"#,
        db = quote(SERVER_DB_DIR),
        token = quote(SERVER_TOKEN_PATH),
        config = quote(CONFIG_PATH),
        unit = quote(unit),
    )
}

/// Parse [`probe_script`]'s output.
pub fn parse_probe(stdout: &str) -> NodeProbe {
    let mut probe = NodeProbe::default();
    let mut init = false;
    let mut server = None;
    for line in stdout.lines().map(str::trim) {
        match line {
            "data yes" => probe.has_data = true,
            "active yes" => probe.active = true,
            "token match" => probe.token_matches = Some(true),
            "token mismatch" => probe.token_matches = Some(false),
            _ => {
                if let Some(rest) = line.strip_prefix("config cluster-init:") {
                    init = rest.trim() == "true";
                } else if let Some(rest) = line.strip_prefix("config server:") {
                    let url = rest.trim().trim_matches('"').trim_matches('\'');
                    if !url.is_empty() {
                        server = Some(url.to_owned());
                    }
                }
            }
        }
    }
    probe.existing_join = match (init, server) {
        (_, Some(server_url)) => Some(JoinMode::Join { server_url }),
        (true, None) => Some(JoinMode::Init),
        (false, None) => None,
    };
    probe
}

/// Asks, on the bootstrap server, whether the API answers at `address` (the VIP): kubectl with the
/// server's admin kubeconfig, pointed at `https://<address>:6443`, so the answer also proves that the
/// address presents this cluster's CA and a certificate valid for it (the VIP is in `tls-san`).
pub fn api_ready_command(address: IpAddr) -> String {
    format!(
        "k3s kubectl --server {} --request-timeout 5s get --raw /readyz",
        quote(&server_url(address))
    )
}

/// Whether [`api_ready_command`] succeeded: exit 0 and `ok`.
pub fn parse_api_ready(exit_status: u32, stdout: &str) -> bool {
    exit_status == 0 && stdout.trim() == "ok"
}

/// A node as the join decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinCandidate {
    pub name: String,
    pub address: IpAddr,
    pub probe: NodeProbe,
}

/// The decision: which server bootstraps and how every node joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPlan {
    /// Index into the servers slice.
    pub bootstrap: usize,
    /// Whether a cluster already existed (then nobody gets a fresh `cluster-init`).
    pub existing_cluster: bool,
    pub server_modes: Vec<JoinMode>,
    pub agent_modes: Vec<JoinMode>,
}

/// Decide the bootstrap server and join modes.
///
/// - No server holds data: the first server bootstraps with `cluster-init`, the others join it.
/// - Otherwise the bootstrap is the first *healthy* server (data, running, our token): never
///   `cluster-init` on a new node when a cluster exists — a rebuilt first server joins the others.
/// - New nodes join through the API VIP when there is one (`api_vip`: a fixed registration address that
///   survives the loss of any server; the caller waits until the VIP answers before the first join),
///   else through the bootstrap server.
/// - Nodes already in the cluster keep their join settings while they stay valid — a server's address
///   or the VIP — (no config change, no restart on re-runs).
pub fn plan_joins(
    servers: &[JoinCandidate],
    agents: &[JoinCandidate],
    api_vip: Option<IpAddr>,
) -> Result<JoinPlan, K3sError> {
    if servers.is_empty() {
        return Err(K3sError::NoServers);
    }
    if let Some(foreign) = servers
        .iter()
        .find(|s| s.probe.has_data && s.probe.token_matches == Some(false))
    {
        return Err(K3sError::ForeignCluster {
            server: foreign.name.clone(),
        });
    }
    let with_data: Vec<&JoinCandidate> = servers.iter().filter(|s| s.probe.has_data).collect();
    let existing_cluster = !with_data.is_empty();
    let bootstrap = if existing_cluster {
        servers
            .iter()
            .position(|s| s.probe.healthy_server())
            .ok_or_else(|| K3sError::NoHealthyServer {
                servers: with_data
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?
    } else {
        0
    };
    let join_url = server_url(api_vip.unwrap_or(servers[bootstrap].address));
    let valid_urls: Vec<String> = servers
        .iter()
        .map(|s| s.address)
        .chain(api_vip)
        .map(server_url)
        .collect();
    let keep = |candidate: &JoinCandidate, is_server: bool| -> Option<JoinMode> {
        match candidate.probe.existing_join.as_ref()? {
            JoinMode::Init if is_server && candidate.probe.has_data => Some(JoinMode::Init),
            JoinMode::Init => None,
            JoinMode::Join { server_url } => {
                let in_cluster = if is_server {
                    candidate.probe.has_data
                } else {
                    existing_cluster
                };
                (in_cluster && valid_urls.contains(server_url)).then(|| JoinMode::Join {
                    server_url: server_url.clone(),
                })
            }
        }
    };
    let join_bootstrap = || JoinMode::Join {
        server_url: join_url.clone(),
    };
    let server_modes = servers
        .iter()
        .enumerate()
        .map(|(index, server)| {
            if index == bootstrap && !existing_cluster {
                JoinMode::Init
            } else {
                keep(server, true).unwrap_or_else(join_bootstrap)
            }
        })
        .collect();
    let agent_modes = agents
        .iter()
        .map(|agent| keep(agent, false).unwrap_or_else(join_bootstrap))
        .collect();
    Ok(JoinPlan {
        bootstrap,
        existing_cluster,
        server_modes,
        agent_modes,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn candidate(name: &str, last: u8, probe: NodeProbe) -> JoinCandidate {
        JoinCandidate {
            name: name.into(),
            address: IpAddr::from([10, 0, 0, last]),
            probe,
        }
    }

    fn healthy(join: Option<JoinMode>) -> NodeProbe {
        NodeProbe {
            has_data: true,
            active: true,
            token_matches: Some(true),
            existing_join: join,
        }
    }

    #[test]
    fn fresh_cluster_bootstraps_first_server() {
        let servers = [
            candidate("s1", 11, NodeProbe::default()),
            candidate("s2", 12, NodeProbe::default()),
        ];
        let agents = [candidate("a1", 21, NodeProbe::default())];
        let plan = plan_joins(&servers, &agents, None).unwrap();
        assert_eq!(plan.bootstrap, 0);
        assert!(!plan.existing_cluster);
        assert_eq!(plan.server_modes[0], JoinMode::Init);
        let join = JoinMode::Join {
            server_url: "https://10.0.0.11:6443".into(),
        };
        assert_eq!(plan.server_modes[1], join);
        assert_eq!(plan.agent_modes[0], join);
    }

    #[test]
    #[allow(clippy::unnecessary_literal_unwrap)]
    fn rebuilt_first_server_joins_the_healthy_ones() {
        let to_s1 = Some(JoinMode::Join {
            server_url: "https://10.0.0.11:6443".into(),
        });
        let servers = [
            candidate("s1", 11, NodeProbe::default()),
            candidate("s2", 12, healthy(to_s1.clone())),
            candidate("s3", 13, healthy(to_s1.clone())),
        ];
        let plan = plan_joins(&servers, &[], None).unwrap();
        assert_eq!(plan.bootstrap, 1);
        assert!(plan.existing_cluster);
        assert_eq!(
            plan.server_modes[0],
            JoinMode::Join {
                server_url: "https://10.0.0.12:6443".into()
            }
        );
        // Existing members keep their settings: no config change, no restart.
        assert_eq!(plan.server_modes[1], to_s1.clone().unwrap());
        assert_eq!(plan.server_modes[2], to_s1.unwrap());
        assert!(!plan.server_modes.contains(&JoinMode::Init));
    }

    #[test]
    fn rerun_keeps_every_mode() {
        let to_s1 = JoinMode::Join {
            server_url: "https://10.0.0.11:6443".into(),
        };
        let servers = [
            candidate("s1", 11, healthy(Some(JoinMode::Init))),
            candidate("s2", 12, healthy(Some(to_s1.clone()))),
        ];
        let agent_probe = NodeProbe {
            active: true,
            existing_join: Some(to_s1.clone()),
            ..NodeProbe::default()
        };
        let plan = plan_joins(&servers, &[candidate("a1", 21, agent_probe)], None).unwrap();
        assert_eq!(plan.server_modes, [JoinMode::Init, to_s1.clone()]);
        assert_eq!(plan.agent_modes, [to_s1]);
    }

    #[test]
    fn with_a_vip_new_nodes_join_through_it_and_nobody_else_inits() {
        let vip = IpAddr::from([10, 0, 0, 100]);
        let servers = [
            candidate("s1", 11, NodeProbe::default()),
            candidate("s2", 12, NodeProbe::default()),
            candidate("s3", 13, NodeProbe::default()),
        ];
        let agents = [candidate("a1", 21, NodeProbe::default())];
        let plan = plan_joins(&servers, &agents, Some(vip)).unwrap();
        let via_vip = JoinMode::Join {
            server_url: "https://10.0.0.100:6443".into(),
        };
        assert_eq!(
            plan.server_modes,
            [JoinMode::Init, via_vip.clone(), via_vip.clone()]
        );
        assert_eq!(plan.agent_modes, std::slice::from_ref(&via_vip));
        // A member that joined through the first server keeps that (still valid) URL; one that
        // joined through the VIP keeps the VIP.
        let to_s1 = JoinMode::Join {
            server_url: "https://10.0.0.11:6443".into(),
        };
        let servers = [
            candidate("s1", 11, healthy(Some(JoinMode::Init))),
            candidate("s2", 12, healthy(Some(to_s1.clone()))),
            candidate("s3", 13, healthy(Some(via_vip.clone()))),
        ];
        let plan = plan_joins(&servers, &[], Some(vip)).unwrap();
        assert_eq!(plan.server_modes, [JoinMode::Init, to_s1, via_vip]);
    }

    #[test]
    fn api_ready_check_is_one_quoted_url() {
        assert_eq!(
            api_ready_command(IpAddr::from([10, 0, 0, 100])),
            "k3s kubectl --server https://10.0.0.100:6443 --request-timeout 5s get --raw /readyz"
        );
        assert!(parse_api_ready(0, "ok\n"));
        assert!(!parse_api_ready(1, "ok"));
        assert!(!parse_api_ready(0, "[-]etcd failed\nreadyz check failed"));
    }

    #[test]
    fn data_without_a_healthy_server_is_refused() {
        let stopped = NodeProbe {
            has_data: true,
            token_matches: Some(true),
            ..NodeProbe::default()
        };
        let servers = [
            candidate("s1", 11, NodeProbe::default()),
            candidate("s2", 12, stopped),
        ];
        let error = plan_joins(&servers, &[], None).unwrap_err();
        assert!(error.to_string().contains("s2"), "{error}");
        assert!(matches!(error, K3sError::NoHealthyServer { .. }));
    }

    #[test]
    fn foreign_cluster_data_is_refused() {
        let foreign = NodeProbe {
            has_data: true,
            active: true,
            token_matches: Some(false),
            existing_join: None,
        };
        let error = plan_joins(&[candidate("s1", 11, foreign)], &[], None).unwrap_err();
        assert!(matches!(error, K3sError::ForeignCluster { ref server } if server == "s1"));
    }

    #[test]
    fn probe_output_is_parsed() {
        let probe = parse_probe(
            "data yes\nactive yes\ntoken match\nconfig server: \"https://10.0.0.11:6443\"\n",
        );
        assert!(probe.healthy_server());
        assert_eq!(
            probe.existing_join,
            Some(JoinMode::Join {
                server_url: "https://10.0.0.11:6443".into()
            })
        );
        let probe = parse_probe("data no\nactive no\ntoken none\nconfig cluster-init: true\n");
        assert_eq!(probe.token_matches, None);
        assert_eq!(probe.existing_join, Some(JoinMode::Init));
        assert!(probe_script("k3s.service").contains("read -r want"));
    }

    #[test]
    fn nodes_json_and_reconciliation() {
        let json = r#"{"items":[{"metadata":{"name":"s1","labels":{"node-role.kubernetes.io/etcd":"true","tier":"gpu"}},
            "spec":{"taints":[{"key":"gpu","value":"true","effect":"NoSchedule"}]},
            "status":{"conditions":[{"type":"Ready","status":"True"}]}},
            {"metadata":{"name":"a1"},"status":{"conditions":[{"type":"Ready","status":"Unknown"}]}}]}"#;
        let nodes = parse_nodes(json).unwrap();
        assert!(nodes[0].ready && nodes[0].etcd_member);
        assert_eq!(nodes[0].taints, ["gpu=true:NoSchedule"]);
        assert!(!nodes[1].ready && !nodes[1].etcd_member);
        let labels = BTreeMap::from([("tier".to_owned(), "gpu".to_owned())]);
        assert!(
            label_taint_commands(&nodes[0], &labels, &["gpu=true:NoSchedule".into()])
                .unwrap()
                .is_empty()
        );
        let labels = BTreeMap::from([("tier".to_owned(), "cpu".to_owned())]);
        assert_eq!(
            label_taint_commands(&nodes[0], &labels, &["dedicated:NoExecute".into()]).unwrap(),
            [
                "k3s kubectl label node s1 --overwrite tier=cpu",
                "k3s kubectl taint node s1 --overwrite dedicated:NoExecute"
            ]
        );
        assert!(parse_nodes("not json").is_err());
    }
}
