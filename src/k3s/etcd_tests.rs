//! Unit tests of [`super`]: command builders quote and refuse, parsers read etcdctl's and
//! k3s's real output shapes, and the quorum rule.

#![allow(clippy::unwrap_used)]

use super::*;

fn member(id: u64, name: &str, ip: &str, learner: bool) -> EtcdMember {
    EtcdMember {
        id,
        name: name.to_owned(),
        peer_urls: vec![format!("https://{ip}:2380")],
        client_urls: vec![format!("https://{ip}:2379")],
        is_learner: learner,
    }
}

fn healthy(ips: &[&str]) -> BTreeSet<String> {
    ips.iter().map(|ip| format!("https://{ip}:2379")).collect()
}

#[test]
fn member_list_json_with_full_u64_ids_and_learners() {
    let stdout = r#"{"header":{"cluster_id":17237436991929493444,"member_id":9372538179322589801,"raft_term":2},
      "members":[{"ID":9372538179322589801,"name":"lab-cp-1-1a2b3c4d","peerURLs":["https://10.0.0.11:2380"],"clientURLs":["https://10.0.0.11:2379"]},
                 {"ID":18446744073709551615,"name":"lab-cp-2-0f0f0f0f","peerURLs":["https://10.0.0.12:2380"],"clientURLs":["https://10.0.0.12:2379"],"isLearner":true},
                 {"ID":5,"peerURLs":["https://10.0.0.99:2380"]}]}"#;
    let members = parse_member_list(stdout).unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(members[0].id, 9_372_538_179_322_589_801);
    assert_eq!(members[0].node_name(), "lab-cp-1");
    assert!(!members[0].is_learner);
    assert_eq!(members[1].id, u64::MAX);
    assert!(members[1].is_learner);
    assert_eq!(members[2].name, "");
    assert!(parse_member_list("Error: context deadline exceeded").is_err());
}

#[test]
fn member_names_map_to_nodes_only_with_k3s_suffix() {
    assert_eq!(member_node_name("lab-cp-1-1a2b3c4d"), "lab-cp-1");
    assert_eq!(member_node_name("lab-cp-1"), "lab-cp-1");
    assert_eq!(member_node_name("a-zzzzzzzz"), "a-zzzzzzzz");
    assert_eq!(member_node_name(""), "");
}

#[test]
fn endpoint_health_reads_healthy_and_unhealthy_entries() {
    let stdout = r#"[{"endpoint":"https://10.0.0.11:2379","health":true,"took":"2ms"},
                     {"endpoint":"https://10.0.0.12:2379","health":false,"error":"context deadline exceeded"}]"#;
    let healthy = parse_endpoint_health(stdout).unwrap();
    assert_eq!(healthy, healthy_set(&["https://10.0.0.11:2379"]));
    assert!(parse_endpoint_health("").unwrap().is_empty());
    assert!(parse_endpoint_health("nope").is_err());
}

fn healthy_set(urls: &[&str]) -> BTreeSet<String> {
    urls.iter().map(|url| (*url).to_owned()).collect()
}

#[test]
fn replacing_one_of_three_healthy_servers_is_allowed_even_when_it_is_dead() {
    let members = [
        member(1, "s1-00000001", "10.0.0.1", false),
        member(2, "s2-00000002", "10.0.0.2", false),
        member(3, "s3-00000003", "10.0.0.3", false),
    ];
    assert_eq!(
        healthy_without(
            &members,
            &healthy(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
            "s1"
        ),
        Ok(())
    );
    assert_eq!(
        healthy_without(&members, &healthy(&["10.0.0.2", "10.0.0.3"]), "s1"),
        Ok(())
    );
}

#[test]
fn a_second_server_down_loses_quorum() {
    let members = [
        member(1, "s1-00000001", "10.0.0.1", false),
        member(2, "s2-00000002", "10.0.0.2", false),
        member(3, "s3-00000003", "10.0.0.3", false),
    ];
    let refusal = healthy_without(&members, &healthy(&["10.0.0.1", "10.0.0.3"]), "s1").unwrap_err();
    assert_eq!(
        refusal,
        QuorumRefusal::QuorumLost {
            voters: 2,
            healthy: 1,
            unhealthy: vec!["s2".to_owned()]
        }
    );
    assert!(refusal.to_string().contains("bring s2 back first"));
}

#[test]
fn five_servers_with_one_other_down_keep_quorum_but_block_the_join() {
    let members: Vec<EtcdMember> = (1..=5)
        .map(|i| {
            member(
                i,
                &format!("s{i}-0000000{i}"),
                &format!("10.0.0.{i}"),
                false,
            )
        })
        .collect();
    let refusal = healthy_without(
        &members,
        &healthy(&["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5"]),
        "s1",
    )
    .unwrap_err();
    assert_eq!(
        refusal,
        QuorumRefusal::UnhealthyMember {
            unhealthy: vec!["s2".to_owned()]
        }
    );
}

#[test]
fn a_learner_or_the_last_member_refuses() {
    let members = [
        member(1, "s1-00000001", "10.0.0.1", false),
        member(2, "s2-00000002", "10.0.0.2", false),
        member(3, "s3-00000003", "10.0.0.3", false),
        member(0xabc, "", "10.0.0.9", true),
    ];
    let all = healthy(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    let refusal = healthy_without(&members, &all, "s1").unwrap_err();
    assert_eq!(
        refusal,
        QuorumRefusal::LearnerPending {
            learners: vec!["abc (not started)".to_owned()]
        }
    );
    assert!(refusal.to_string().contains("learner"));
    let alone = [member(1, "s1-00000001", "10.0.0.1", false)];
    assert_eq!(
        healthy_without(&alone, &healthy(&["10.0.0.1"]), "s1"),
        Err(QuorumRefusal::LastMember)
    );
}

#[test]
fn commands_quote_node_names_and_use_tls_only_when_k3s_has_it() {
    let node = NodeName::new("lab-cp-1").unwrap();
    assert_eq!(
        annotate_remove_command(&node),
        "k3s kubectl annotate node lab-cp-1 etcd.k3s.cattle.io/remove=true --overwrite"
    );
    assert_eq!(
        delete_node_command(&node),
        "k3s kubectl delete node lab-cp-1 --ignore-not-found"
    );
    assert_eq!(
        delete_node_password_command(&node),
        "k3s kubectl delete secret -n kube-system lab-cp-1.node-password.k3s --ignore-not-found"
    );
    assert_eq!(
        get_node_command(&node),
        "k3s kubectl get node lab-cp-1 -o json"
    );
    let list = member_list_command();
    assert!(list.contains("if [ -f /var/lib/rancher/k3s/server/tls/etcd/server-client.crt ]"));
    assert!(list.contains("--endpoints=https://127.0.0.1:2379"));
    assert!(list.contains("--endpoints=http://127.0.0.1:2379"));
    assert!(list.contains("member list -w json"));
    assert!(member_remove_command(0xdead_beef).contains("member remove deadbeef"));
    assert_eq!(
        stop_k3s_command("k3s.service"),
        "systemctl disable --now k3s.service 2>/dev/null || systemctl stop k3s.service"
    );
}

#[test]
fn hostile_names_never_reach_a_command() {
    for hostile in ["--all", "a;rm -rf /", "$(id)", "A", "a b", "", "-x"] {
        assert!(NodeName::new(hostile).is_err(), "{hostile}");
        assert!(SnapshotName::new(hostile).is_err(), "{hostile}");
    }
    assert!(SnapshotName::new(&"a".repeat(101)).is_err());
    let name = SnapshotName::new("provision-replace-lab-cp-1-1700000000").unwrap();
    assert_eq!(
        snapshot_save_command(&name),
        "k3s etcd-snapshot save --name provision-replace-lab-cp-1-1700000000"
    );
}

#[test]
fn the_saved_snapshot_is_found_only_when_listed_and_non_empty() {
    let stdout = "Name                                   Location                         Size      Created\n\
        replace-x-lab-cp-2-1700000001   file:///var/lib/rancher/k3s/server/db/snapshots/replace-x-lab-cp-2-1700000001   4243488   2026-12-01T06:00:00Z\n\
        replace-y-lab-cp-2-1700000002   file:///v/replace-y-lab-cp-2-1700000002   0   2026-12-01T06:00:00Z\n";
    let snapshots = parse_snapshot_list(stdout);
    assert_eq!(snapshots.len(), 2);
    let x = SnapshotName::new("replace-x").unwrap();
    assert_eq!(find_snapshot(&snapshots, &x).unwrap().size, 4_243_488);
    let y = SnapshotName::new("replace-y").unwrap();
    assert!(find_snapshot(&snapshots, &y).is_none(), "empty file");
    let z = SnapshotName::new("replace-z").unwrap();
    assert!(find_snapshot(&snapshots, &z).is_none());
}

#[test]
fn member_removal_is_read_from_the_node_annotation() {
    let done =
        r#"{"metadata":{"name":"s1","annotations":{"etcd.k3s.cattle.io/removed-node-name":"s1"}}}"#;
    let pending =
        r#"{"metadata":{"name":"s1","annotations":{"etcd.k3s.cattle.io/remove":"true"}}}"#;
    assert!(member_removed(done, "s1").unwrap());
    assert!(!member_removed(pending, "s1").unwrap());
    assert!(member_removed("not json", "s1").is_err());
}
