//! k3s's embedded etcd for the fake cluster, wrapped around [`FakeExec`] as `provision status`'s
//! view is: `etcdctl member list` / `endpoint health` from the fake cluster's members (a member
//! is healthy unless its node is `down`: k3s stopped on it), `k3s etcd-snapshot save|ls`, the managed-etcd
//! controller's removal through `etcd.k3s.cattle.io/remove=true` (the Node then carries
//! `removed-node-name`), `get node NAME -o json`, `delete node|secret`, and stopping k3s. Every
//! change is logged to the shared events, in order with the drains and restarts.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use provision::exec::phase2::{Connector, GuestNode};
use provision::k3s::drain::NodeName;
use provision::k3s::etcd::{
    SNAPSHOT_LS_COMMAND, annotate_remove_command, delete_node_command,
    delete_node_password_command, endpoint_health_command, get_node_command, member_list_command,
    stop_k3s_command,
};
use provision::nodeprep::sha256_hex;
use provision::ssh::{CommandOutput, RemoteExec, SshError};

use super::fake_cluster::{FakeExec, Shared, ok};

/// What etcd and the API keep beside the fake cluster.
#[derive(Default)]
pub struct EtcdState {
    /// Snapshot file names (`NAME-<node>-<n>`).
    pub snapshots: Vec<String>,
    /// Nodes whose member k3s removed (their Node carries `removed-node-name`).
    pub removed: BTreeSet<String>,
    /// node-password Secrets still present.
    pub secrets: BTreeSet<String>,
    /// Members that are learners.
    pub learners: BTreeSet<String>,
    /// Nodes whose k3s (and so etcd member) is down.
    pub down: BTreeSet<String>,
    /// Every node's kubelet version (absent: `default_version`).
    pub versions: BTreeMap<String, String>,
    pub default_version: String,
    /// The version each k3s binary (by sha256) runs: a node reports it once k3s restarted on it.
    pub binaries: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct EtcdConnector {
    pub sim: Shared,
    pub etcd: Arc<Mutex<EtcdState>>,
}

impl EtcdConnector {
    /// Over `sim`; every node of the fake cluster gets its node-password Secret.
    pub fn new(sim: Shared) -> Self {
        let secrets = sim.lock().unwrap().cluster.keys().cloned().collect();
        Self {
            sim,
            etcd: Arc::new(Mutex::new(EtcdState {
                secrets,
                default_version: "v1.31.4+k3s1".to_owned(),
                ..EtcdState::default()
            })),
        }
    }

    pub fn events(&self) -> Vec<String> {
        std::mem::take(&mut self.sim.lock().unwrap().events)
    }
}

#[async_trait]
impl Connector for EtcdConnector {
    async fn connect(&self, node: &GuestNode) -> Result<Box<dyn RemoteExec>, SshError> {
        Ok(Box::new(EtcdExec {
            inner: FakeExec {
                host: node.name.clone(),
                sim: self.sim.clone(),
            },
            etcd: self.etcd.clone(),
        }))
    }
}

pub struct EtcdExec {
    inner: FakeExec,
    etcd: Arc<Mutex<EtcdState>>,
}

fn not_found(what: &str) -> CommandOutput {
    CommandOutput {
        exit_status: 1,
        stdout: Vec::new(),
        stderr: format!("Error from server (NotFound): {what} not found").into_bytes(),
    }
}

impl EtcdExec {
    fn host(&self) -> &str {
        &self.inner.host
    }

    fn event(&self, event: String) {
        self.inner.sim.lock().unwrap().events.push(event);
    }

    /// The members: servers of the fake cluster not removed.
    fn members(&self) -> Vec<(String, bool)> {
        let sim = self.inner.sim.lock().unwrap();
        let etcd = self.etcd.lock().unwrap();
        sim.cluster
            .iter()
            .filter(|(name, entry)| entry.1 && !etcd.removed.contains(*name))
            .map(|(name, _)| (name.clone(), !etcd.down.contains(name)))
            .collect()
    }

    fn member_list(&self) -> CommandOutput {
        let learners = self.etcd.lock().unwrap().learners.clone();
        let members: Vec<_> = self
            .members()
            .iter()
            .enumerate()
            .map(|(index, (name, _))| {
                serde_json::json!({
                    "ID": 1000 + index as u64, "name": format!("{name}-0a1b2c3d"),
                    "peerURLs": [format!("http://{name}:2380")],
                    "clientURLs": [format!("http://{name}:2379")],
                    "isLearner": learners.contains(name),
                })
            })
            .collect();
        ok(serde_json::json!({ "members": members }).to_string())
    }

    fn endpoint_health(&self) -> CommandOutput {
        let members = self.members();
        let answers: Vec<_> = members
            .iter()
            .map(|(name, healthy)| {
                serde_json::json!({"endpoint": format!("http://{name}:2379"), "health": healthy})
            })
            .collect();
        CommandOutput {
            exit_status: u32::from(members.iter().any(|(_, healthy)| !healthy)),
            stdout: serde_json::to_vec(&answers).unwrap(),
            stderr: Vec::new(),
        }
    }

    fn get_node(&self, node: &str) -> CommandOutput {
        if !self.inner.sim.lock().unwrap().cluster.contains_key(node) {
            return not_found(&format!("nodes \"{node}\""));
        }
        let etcd = self.etcd.lock().unwrap();
        let mut annotations = serde_json::json!({});
        if etcd.removed.contains(node) {
            annotations["etcd.k3s.cattle.io/removed-node-name"] = node.into();
        }
        ok(serde_json::json!({"metadata": {"name": node, "annotations": annotations}}).to_string())
    }

    /// The etcd/API commands this wrapper answers; `None` passes the command to [`FakeExec`].
    fn answer(&self, command: &str) -> Option<CommandOutput> {
        if command == member_list_command() {
            return Some(self.member_list());
        }
        if command == endpoint_health_command() {
            return Some(self.endpoint_health());
        }
        if command == SNAPSHOT_LS_COMMAND {
            let mut table = "Name Location Size Created\n".to_owned();
            for name in &self.etcd.lock().unwrap().snapshots {
                table.push_str(&format!(
                    "{name} file:///snapshots/{name} 4096 2026-01-01T00:00:00Z\n"
                ));
            }
            return Some(ok(table));
        }
        if let Some(name) = command.strip_prefix("k3s etcd-snapshot save --name ") {
            let mut etcd = self.etcd.lock().unwrap();
            let file = format!("{name}-{}-{}", self.host(), etcd.snapshots.len() + 1);
            etcd.snapshots.push(file);
            drop(etcd);
            self.event(format!("snapshot {name} on {}", self.host()));
            return Some(ok(format!("Snapshot {name} saved.\n")));
        }
        let mut names: BTreeSet<String> = self
            .inner
            .sim
            .lock()
            .unwrap()
            .cluster
            .keys()
            .cloned()
            .collect();
        names.extend(self.etcd.lock().unwrap().secrets.iter().cloned());
        for name in &names {
            let Ok(node) = NodeName::new(name) else {
                continue;
            };
            if command == get_node_command(&node) {
                return Some(self.get_node(name));
            }
            if command == annotate_remove_command(&node) {
                self.etcd.lock().unwrap().removed.insert(name.clone());
                self.event(format!("remove etcd member of {name} from {}", self.host()));
                return Some(ok(format!("node/{name} annotated\n")));
            }
            if command == delete_node_command(&node) {
                self.inner.sim.lock().unwrap().cluster.remove(name);
                self.event(format!("delete node {name} from {}", self.host()));
                return Some(ok(format!("node \"{name}\" deleted\n")));
            }
            if command == delete_node_password_command(&node) {
                self.etcd.lock().unwrap().secrets.remove(name);
                self.event(format!("delete secret {name}.node-password.k3s"));
                return Some(ok(""));
            }
        }
        for unit in ["k3s.service", "k3s-agent.service"] {
            if command == stop_k3s_command(unit) {
                let host = self.inner.host.clone();
                self.etcd.lock().unwrap().down.insert(host.clone());
                let mut sim = self.inner.sim.lock().unwrap();
                sim.hosts.entry(host.clone()).or_default().active = false;
                sim.events.push(format!("stop {unit} on {host}"));
                return Some(ok(""));
            }
        }
        None
    }

    /// `get nodes -o json` with each node's kubelet version.
    fn with_versions(&self, list: &[u8]) -> CommandOutput {
        let mut list: serde_json::Value = serde_json::from_slice(list).unwrap();
        let etcd = self.etcd.lock().unwrap();
        for item in list["items"].as_array_mut().unwrap() {
            let name = item["metadata"]["name"].as_str().unwrap().to_owned();
            let version = etcd.versions.get(&name).unwrap_or(&etcd.default_version);
            item["status"]["nodeInfo"] = serde_json::json!({ "kubeletVersion": version });
        }
        ok(list.to_string())
    }
}

#[async_trait]
impl RemoteExec for EtcdExec {
    fn host(&self) -> &str {
        &self.inner.host
    }

    async fn run(&self, command: &str, stdin: Option<&[u8]>) -> Result<CommandOutput, SshError> {
        if let Some(output) = self.answer(command) {
            self.inner
                .sim
                .lock()
                .unwrap()
                .command_lines
                .push(command.to_owned());
            return Ok(output);
        }
        let output = self.inner.run(command, stdin).await?;
        if command.contains("systemctl restart") && output.exit_status == 0 {
            let sim = self.inner.sim.lock().unwrap();
            let binary = sim.hosts[self.host()].files.get("/usr/local/bin/k3s");
            let mut etcd = self.etcd.lock().unwrap();
            if let Some(version) =
                binary.and_then(|(bytes, _)| etcd.binaries.get(&sha256_hex(bytes)))
            {
                let version = version.clone();
                etcd.versions.insert(self.host().to_owned(), version);
            }
        }
        if command == "k3s kubectl get nodes -o json" && output.exit_status == 0 {
            return Ok(self.with_versions(&output.stdout));
        }
        Ok(output)
    }

    async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<(), SshError> {
        self.inner.write_file(path, data, mode).await
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SshError> {
        self.inner.read_file(path).await
    }
}
