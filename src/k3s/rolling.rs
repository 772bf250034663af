//! Commands around a rolling disruption of one node: drain before (kubectl's own semantics:
//! cordon, evict through the Eviction API, DaemonSet pods left alone, emptyDir data deleted),
//! uncordon after, and which servers stand in the way of taking one down.

use std::time::Duration;

use crate::nodeprep::shell::quote;

use super::K3sError;
use super::cluster::ClusterNode;

/// `k3s kubectl drain NODE --ignore-daemonsets --delete-emptydir-data --timeout=Ns`, run on
/// another server.
pub fn drain_command(node: &str, timeout: Duration) -> Result<String, K3sError> {
    refuse_option_like(node)?;
    Ok(format!(
        "k3s kubectl drain {} --ignore-daemonsets --delete-emptydir-data --timeout={}s",
        quote(node),
        timeout.as_secs().max(1)
    ))
}

/// `k3s kubectl uncordon NODE`.
pub fn uncordon_command(node: &str) -> Result<String, K3sError> {
    refuse_option_like(node)?;
    Ok(format!("k3s kubectl uncordon {}", quote(node)))
}

fn refuse_option_like(node: &str) -> Result<(), K3sError> {
    if node.starts_with('-') {
        return Err(K3sError::OptionLikeValue {
            what: "node name".to_owned(),
            value: node.to_owned(),
        });
    }
    Ok(())
}

/// The servers other than `node` that are not Ready (or not registered): taking `node` down
/// while any of them is would cost etcd its quorum.
pub fn other_servers_not_ready(
    cluster: &[ClusterNode],
    servers: &[&str],
    node: &str,
) -> Vec<String> {
    servers
        .iter()
        .filter(|name| **name != node)
        .filter(|name| {
            !cluster
                .iter()
                .any(|member| member.name == **name && member.ready)
        })
        .map(|name| (*name).to_owned())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn drain_and_uncordon_quote_the_node_and_refuse_options() {
        assert_eq!(
            drain_command("lab-cp-1", Duration::from_secs(300)).unwrap(),
            "k3s kubectl drain lab-cp-1 --ignore-daemonsets --delete-emptydir-data --timeout=300s"
        );
        assert_eq!(
            uncordon_command("lab-cp-1").unwrap(),
            "k3s kubectl uncordon lab-cp-1"
        );
        assert!(drain_command("--all", Duration::from_secs(1)).is_err());
        assert!(uncordon_command("-A").is_err());
    }

    #[test]
    fn the_servers_in_the_way_are_named() {
        let node = |name: &str, ready: bool| ClusterNode {
            name: name.to_owned(),
            ready,
            etcd_member: true,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        };
        let cluster = [node("s1", true), node("s2", false)];
        assert_eq!(
            other_servers_not_ready(&cluster, &["s1", "s2", "s3"], "s1"),
            ["s2", "s3"]
        );
        assert!(other_servers_not_ready(&cluster, &["s1", "s2"], "s2").is_empty());
    }
}
