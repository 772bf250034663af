//! The etcd day-2 steps ([`provision::exec::etcd_ops`]) against a scripted server: each looks
//! before it acts, so a second run (or a run after a crash half way) changes nothing more.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use provision::exec::etcd_ops::{delete_node, remove_member, save_snapshot};
use provision::k3s::drain::NodeName;
use provision::k3s::etcd::SnapshotName;
use provision::ssh::{CommandOutput, RemoteExec, SshError};
use serde_json::json;

/// A server whose etcd has members for `members` nodes, whose API has Nodes `nodes`, and whose
/// snapshot directory holds `snapshots`; k3s's controller removes a member once its Node is
/// annotated. Every command is recorded.
#[derive(Default)]
struct Server {
    members: Vec<String>,
    nodes: Vec<String>,
    annotated: Vec<String>,
    snapshots: Vec<(String, u64)>,
    commands: Vec<String>,
}

struct Exec(Mutex<Server>);

fn out(stdout: String, exit_status: u32) -> CommandOutput {
    CommandOutput {
        exit_status,
        stdout: stdout.into_bytes(),
        stderr: Vec::new(),
    }
}

fn node_in(command: &str) -> String {
    command.split_whitespace().nth(4).unwrap().to_owned()
}

#[async_trait]
impl RemoteExec for Exec {
    fn host(&self) -> &str {
        "lab-server-2"
    }

    async fn run(&self, command: &str, _stdin: Option<&[u8]>) -> Result<CommandOutput, SshError> {
        let mut server = self.0.lock().unwrap();
        server.commands.push(command.to_owned());
        Ok(if command.contains("member list -w json") {
            let members: Vec<_> = server
                .members
                .iter()
                .enumerate()
                .map(|(i, node)| json!({"ID": 10 + i, "name": format!("{node}-0000000a")}))
                .collect();
            out(json!({"members": members}).to_string(), 0)
        } else if command.contains("member remove") {
            let id = u64::from_str_radix(
                command
                    .rsplit("member remove ")
                    .next()
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            let index = usize::try_from(id - 10).unwrap();
            server.members.remove(index);
            out(String::new(), 0)
        } else if command.starts_with("k3s kubectl annotate node ") {
            let node = node_in(command);
            server.members.retain(|member| *member != node);
            server.annotated.push(node);
            out(String::new(), 0)
        } else if command.starts_with("k3s kubectl get node ") {
            let node = node_in(command);
            if !server.nodes.contains(&node) {
                return Ok(out(String::new(), 1));
            }
            let mut annotations = json!({});
            if server.annotated.contains(&node) {
                annotations = json!({"etcd.k3s.cattle.io/removed-node-name": node});
            }
            out(
                json!({"metadata": {"name": node, "annotations": annotations}}).to_string(),
                0,
            )
        } else if command.starts_with("k3s kubectl delete node ") {
            let node = node_in(command);
            server.nodes.retain(|n| *n != node);
            out(String::new(), 0)
        } else if command.starts_with("k3s kubectl delete secret") {
            out(String::new(), 0)
        } else if command == "k3s etcd-snapshot ls" {
            let mut table = "Name Location Size Created\n".to_owned();
            for (name, size) in &server.snapshots {
                table.push_str(&format!(
                    "{name} file:///s/{name} {size} 2026-12-01T06:00:00Z\n"
                ));
            }
            out(table, 0)
        } else if let Some(name) = command.strip_prefix("k3s etcd-snapshot save --name ") {
            server
                .snapshots
                .push((format!("{name}-lab-server-2-1796100000"), 4096));
            out(String::new(), 0)
        } else {
            panic!("unexpected command `{command}`")
        })
    }

    async fn write_file(&self, path: &str, _data: &[u8], _mode: u32) -> Result<(), SshError> {
        panic!("unexpected write of {path}")
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SshError> {
        panic!("unexpected read of {path}")
    }
}

fn server(members: &[&str], nodes: &[&str]) -> Exec {
    Exec(Mutex::new(Server {
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        nodes: nodes.iter().map(|m| (*m).to_owned()).collect(),
        ..Server::default()
    }))
}

fn mutations(exec: &Exec) -> Vec<String> {
    exec.0
        .lock()
        .unwrap()
        .commands
        .iter()
        .filter(|c| !c.contains("member list") && !c.contains(" get node ") && !c.ends_with(" ls"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn member_removal_annotates_once_and_a_rerun_changes_nothing() {
    let exec = server(&["s1", "s2", "s3"], &["s1", "s2", "s3"]);
    let node = NodeName::new("s1").unwrap();
    let (timeout, poll) = (Duration::from_secs(5), Duration::from_millis(5));
    remove_member(&exec, &node, timeout, poll).await.unwrap();
    assert_eq!(
        mutations(&exec),
        ["k3s kubectl annotate node s1 etcd.k3s.cattle.io/remove=true --overwrite"]
    );
    assert_eq!(exec.0.lock().unwrap().members, ["s2", "s3"]);
    remove_member(&exec, &node, timeout, poll).await.unwrap();
    assert_eq!(
        mutations(&exec).len(),
        1,
        "the second run changed something"
    );
}

#[tokio::test]
async fn a_member_whose_node_is_gone_is_removed_with_etcdctl() {
    let exec = server(&["s1", "s2", "s3"], &["s2", "s3"]);
    let node = NodeName::new("s1").unwrap();
    remove_member(
        &exec,
        &node,
        Duration::from_secs(5),
        Duration::from_millis(5),
    )
    .await
    .unwrap();
    let done = mutations(&exec);
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].contains("member remove a"), "{done:?}");
    assert_eq!(exec.0.lock().unwrap().members, ["s2", "s3"]);
}

#[tokio::test]
async fn a_listed_snapshot_is_not_taken_again_and_an_empty_one_does_not_count() {
    let exec = server(&["s1"], &["s1"]);
    let name = SnapshotName::new("provision-replace-1").unwrap();
    let first = save_snapshot(&exec, &name).await.unwrap();
    assert_eq!(first.size, 4096);
    let again = save_snapshot(&exec, &name).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(mutations(&exec).len(), 1, "saved twice");

    let empty = server(&["s1"], &["s1"]);
    empty
        .0
        .lock()
        .unwrap()
        .snapshots
        .push(("provision-replace-2-lab-server-2-1".to_owned(), 0));
    let name = SnapshotName::new("provision-replace-2").unwrap();
    save_snapshot(&empty, &name).await.unwrap();
    assert_eq!(
        mutations(&empty).len(),
        1,
        "an empty snapshot is not a backup"
    );
}

#[tokio::test]
async fn deleting_a_node_twice_is_no_error() {
    let exec = server(&[], &["a1"]);
    let node = NodeName::new("a1").unwrap();
    delete_node(&exec, &node).await.unwrap();
    delete_node(&exec, &node).await.unwrap();
    assert_eq!(
        mutations(&exec),
        [
            "k3s kubectl delete node a1 --ignore-not-found",
            "k3s kubectl delete secret -n kube-system a1.node-password.k3s --ignore-not-found",
            "k3s kubectl delete node a1 --ignore-not-found",
            "k3s kubectl delete secret -n kube-system a1.node-password.k3s --ignore-not-found",
        ]
    );
}
