//! `provision status`'s cluster section against the in-memory k3s cluster
//! (`support::fake_cluster`): a converged cluster is healthy (exit 0), a NotReady node makes it
//! unhealthy (exit 3, the node named), servers are asked in order, and a cluster no server
//! answers for is one line with the reasons (exit 2).
#![allow(clippy::unwrap_used)]

use provision::commands::output::{StatusOutput, StatusRow};
use provision::exec::cluster_status::{ClusterObservation, expected_nodes, observe};
use provision::exec::phase2::GuestNode;
use provision::exit::ExitStatus;
use provision::k3s::status::{FindingKind, Health};
use provision::profile::model::Role;
use provision::state::{VmPhase, VmRecord};

use crate::support::fake_cluster::{StatusConnector, World, world};

fn records(world: &World) -> Vec<VmRecord> {
    world
        .nodes
        .iter()
        .enumerate()
        .map(|(index, node)| VmRecord {
            name: node.name.clone(),
            vmid: 9001 + u32::try_from(index).unwrap(),
            node: "pve1".to_owned(),
            group: node.group.clone(),
            role: node.role,
            phase: VmPhase::Ready,
            params_hash: String::new(),
            address: Some(node.address.to_string()),
            gpus: Vec::new(),
            iso: None,
        })
        .collect()
}

fn servers(world: &World) -> Vec<GuestNode> {
    world
        .nodes
        .iter()
        .filter(|node| node.role == Role::Server)
        .cloned()
        .collect()
}

/// `status`'s output with every VM running in Proxmox and `connector` playing the guests.
async fn status(world: &World, connector: &StatusConnector) -> (ExitStatus, String, String) {
    let records = records(world);
    let refs: Vec<&VmRecord> = records.iter().collect();
    let cluster = observe(&servers(world), connector, &expected_nodes(&refs)).await;
    let output = StatusOutput {
        vms: records
            .iter()
            .map(|record| {
                StatusRow::new(
                    record,
                    Some((Some("pve1".to_owned()), Some("running".to_owned()))),
                )
            })
            .collect(),
        cluster,
    };
    (
        output.exit_status(),
        output.to_string(),
        serde_json::to_string(&output).unwrap(),
    )
}

async fn converged() -> (World, StatusConnector) {
    let world = world();
    world.up().await.unwrap();
    let connector = StatusConnector {
        sim: world.sim.clone(),
        version: "v1.31.4+k3s1".to_owned(),
        ..StatusConnector::default()
    };
    (world, connector)
}

#[tokio::test]
async fn a_converged_cluster_is_healthy_and_exits_0() {
    let (world, connector) = converged().await;
    let (exit, text, json) = status(&world, &connector).await;
    assert_eq!(exit, ExitStatus::Success, "{text}");
    assert!(
        text.contains("cluster (asked server-1): healthy\n"),
        "{text}"
    );
    assert!(text.contains("  etcd: ok\n"), "{text}");
    let server = text.lines().find(|l| l.starts_with("  server-2")).unwrap();
    assert!(
        server.contains("Ready")
            && server.contains("v1.31.4+k3s1")
            && server.contains("etcd server-2-0a1b2c3d"),
        "{server}"
    );
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["vms"].as_array().unwrap().len(), 5);
    assert_eq!(json["cluster"]["state"], "reached");
    assert_eq!(json["cluster"]["health"], "healthy");
    assert_eq!(json["cluster"]["etcd"]["state"], "ok");
    assert_eq!(json["cluster"]["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(json["cluster"]["findings"], serde_json::json!([]));
}

#[tokio::test]
async fn a_not_ready_node_is_unhealthy_exits_3_and_is_named() {
    let (world, mut connector) = converged().await;
    connector.not_ready.insert("worker-2".to_owned());
    let (exit, text, json) = status(&world, &connector).await;
    assert_eq!(exit, ExitStatus::Unhealthy, "{text}");
    assert!(
        text.contains("cluster (asked server-1): unhealthy\n"),
        "{text}"
    );
    assert!(
        text.contains("  unhealthy: worker-2 is NotReady\n"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["cluster"]["health"], "unhealthy");
    assert_eq!(
        json["cluster"]["findings"],
        serde_json::json!([{
            "severity": "unhealthy",
            "kind": "not-ready",
            "node": "worker-2",
            "message": "worker-2 is NotReady",
        }])
    );
}

#[tokio::test]
async fn a_cordoned_node_is_degraded_and_exits_0() {
    let (world, mut connector) = converged().await;
    connector.cordoned.insert("worker-1".to_owned());
    let (exit, text, _) = status(&world, &connector).await;
    assert_eq!(exit, ExitStatus::Success, "{text}");
    assert!(
        text.contains("cluster (asked server-1): degraded\n"),
        "{text}"
    );
    assert!(text.contains("  degraded: worker-1 is cordoned"), "{text}");
}

#[tokio::test]
async fn servers_are_asked_in_order_until_one_answers() {
    let (world, mut connector) = converged().await;
    connector.unreachable.insert("server-1".to_owned());
    let records = records(&world);
    let refs: Vec<&VmRecord> = records.iter().collect();
    match observe(&servers(&world), &connector, &expected_nodes(&refs)).await {
        ClusterObservation::Reached { server, view } => {
            assert_eq!(server, "server-2");
            assert_eq!(view.health, Health::Healthy, "{:?}", view.findings);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_server_answering_is_one_line_and_exits_2() {
    let (world, mut connector) = converged().await;
    for server in ["server-1", "server-2", "server-3"] {
        connector.unreachable.insert(server.to_owned());
    }
    let (exit, text, json) = status(&world, &connector).await;
    assert_eq!(exit, ExitStatus::Failure, "{text}");
    let line = text.lines().last().unwrap();
    assert!(
        line.starts_with("cluster: unreachable: server-1: "),
        "{line}"
    );
    assert!(
        line.contains("; server-3: ") && line.contains("connection refused"),
        "{line}"
    );
    // The VM section is still there.
    assert_eq!(
        text.lines().filter(|l| l.contains(" vmid ")).count(),
        5,
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["cluster"]["state"], "unreachable");
}

#[tokio::test]
async fn a_node_missing_from_kubernetes_is_unhealthy() {
    let (world, connector) = converged().await;
    world.sim.lock().unwrap().cluster.remove("worker-1");
    let records = records(&world);
    let refs: Vec<&VmRecord> = records.iter().collect();
    let ClusterObservation::Reached { view, .. } =
        observe(&servers(&world), &connector, &expected_nodes(&refs)).await
    else {
        panic!("not reached");
    };
    assert_eq!(view.health, Health::Unhealthy);
    assert_eq!(view.findings[0].kind, FindingKind::MissingNode);
    assert_eq!(view.findings[0].node.as_deref(), Some("worker-1"));
}

#[test]
fn status_of_a_simulated_workspace_says_why_the_cluster_is_not_checked() {
    let workspace = crate::support::cli::BinaryWorkspace::new();
    let (code, stdout, stderr) =
        workspace.run(&["status", "--profile", "homelab-ha", "--simulate"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "no VMs in the state\ncluster: not checked: no VMs in the state\n"
    );
    let (code, stdout, stderr) = workspace.run(&[
        "status",
        "--profile",
        "homelab-ha",
        "--simulate",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "vms": [],
            "cluster": {"state": "not-checked", "reason": "no VMs in the state"},
        })
    );
    let (code, help, _) = workspace.run(&["status", "--help"]);
    assert_eq!(code, 0);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("3 when a VM is not running or the cluster is unhealthy"),
        "{help}"
    );
}
