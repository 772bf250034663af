//! Phase 2 runner: from running VMs to a converged K3s cluster over SSH.
//!
//! Order: every node connected; then each node on its own, in parallel (bounded): cloud-init
//! finished, its k3s state probed, node preparation and binary upload. Beside them: the join plan
//! once every node's k3s state is known → the bootstrap server (with `cluster-init` only when no
//! cluster exists, and the bare token secret) installed and Ready as soon as it is prepared → the
//! cluster CA's hash read from it → with an API VIP, a bounded wait until the VIP answers
//! (kube-vip runs only once the bootstrap server is up) → further servers one at a time through
//! the VIP (else the bootstrap server), each prepared, then Ready and an etcd member before the
//! next → agents in parallel → labels/taints → kubeconfig. Joining nodes get the secure token
//! `K10<CA hash>::server:<secret>`, so they only talk to a server presenting this cluster's CA.
//! Every remote change is reported per node, and every node's steps are timed
//! ([`StepTiming`]); a re-run on a converged cluster writes no file and restarts no service.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use futures::channel::oneshot;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::k3s::KUBECONFIG_PATH;
use crate::k3s::cluster::{
    ClusterNode, GET_NODES_COMMAND, JoinCandidate, label_taint_commands, parse_nodes, plan_joins,
};
use crate::k3s::config::{JoinMode, NodeSettings, server_url};
use crate::k3s::install::{images_path, manifest_steps};
use crate::k3s::kubeconfig::rewrite_kubeconfig;
use crate::k3s::manifests::render_manifests;
use crate::k3s::release::{Artifact, BinarySource, fetch_binary, images_artifact};
use crate::k3s::templates::Templates;
use crate::k3s::token::{CaHash, K3sToken, parse_ca_output, read_ca_command};
use crate::nodeprep::StepReport;
use crate::profile::Profile;
use crate::profile::model::{NodeGroup, Role};
use crate::ssh::{RemoteExec, SshError};

mod gate;
mod node;
mod timeline;
mod upgrade;
mod waits;
pub use gate::K3sGate;
use node::{InstallResult, Prepared, install_node, prepare_node, reach_node};
pub use timeline::{Clock, StepTiming};
pub use upgrade::{UpgradeOptions, UpgradeReport, rolling_upgrade};
use waits::{wait_for_api, wait_until};

/// A guest VM phase 2 works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNode {
    /// VM name; also the Kubernetes node name.
    pub name: String,
    pub address: IpAddr,
    pub role: Role,
    /// The profile's node group.
    pub group: String,
    /// OpenSSH public keys provision generated for the guest; empty = use known_hosts.
    pub expected_host_keys: Vec<String>,
}

/// Opens a [`RemoteExec`] per node (the russh executor in production, fakes in tests).
#[async_trait]
pub trait Connector: Send + Sync {
    async fn connect(&self, node: &GuestNode) -> Result<Box<dyn RemoteExec>, SshError>;
}

/// A borrowed connector connects as the one it borrows (a gate over `&dyn Connector`).
#[async_trait]
impl<T: Connector + ?Sized> Connector for &T {
    async fn connect(&self, node: &GuestNode) -> Result<Box<dyn RemoteExec>, SshError> {
        (**self).connect(node).await
    }
}

/// Knobs of a phase 2 run.
#[derive(Debug, Clone)]
pub struct Phase2Options {
    /// Workspace root: the kubeconfig is written to `<workspace>/kubeconfig`.
    pub workspace: PathBuf,
    /// Where the k3s token lives (`.provision/secrets`).
    pub secrets_dir: PathBuf,
    /// Where release binaries are cached (`.provision/cache`).
    pub cache_dir: PathBuf,
    pub templates: Templates,
    /// A verified k3s binary; `None` = resolve from the profile (release download or air-gap file).
    pub binary: Option<Artifact>,
    /// Nodes worked on at once.
    pub parallelism: usize,
    pub cloud_init_timeout: Duration,
    /// Per node: how long to wait for Ready (and etcd membership for servers).
    pub ready_timeout: Duration,
    /// Pause between two looks at a condition (Ready, an etcd member, the VIP answering). A look is
    /// one `kubectl get nodes` (or `/readyz`) on a server, a fraction of a second there, while a
    /// look that comes late delays every server that joins after it (they join one at a time).
    pub poll_interval: Duration,
    /// Per node: the step it is in (the progress display), then done.
    pub events: super::Events,
}

impl Phase2Options {
    /// Defaults for a workspace: `.provision/secrets`, `.provision/cache`, templates overridable from
    /// `<workspace>/templates`.
    pub fn new(workspace: &Path) -> Self {
        Self {
            workspace: workspace.to_path_buf(),
            secrets_dir: workspace.join(".provision").join("secrets"),
            cache_dir: workspace.join(".provision").join("cache"),
            templates: Templates::with_overrides(&workspace.join("templates")),
            binary: None,
            parallelism: 8,
            cloud_init_timeout: Duration::from_secs(600),
            ready_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_millis(500),
            events: super::Events::default(),
        }
    }
}

/// What phase 2 did on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReport {
    pub name: String,
    pub steps: Vec<StepReport>,
    /// The k3s service was started for the first time (or after being stopped).
    pub started: bool,
    /// The k3s service was restarted because its config, unit or binary changed.
    pub restarted: bool,
    /// Labels the node should carry (profile + detected hardware).
    pub labels: BTreeMap<String, String>,
    /// Its steps in phase 2 (connect … ready), timed from the start of phase 2.
    pub timeline: Vec<StepTiming>,
}

impl NodeReport {
    pub fn changed(&self) -> bool {
        self.started || self.restarted || self.steps.iter().any(|s| s.outcome.is_change())
    }
}

/// What phase 2 did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Phase2Report {
    pub nodes: Vec<NodeReport>,
    /// The server the cluster was built (or found) around.
    pub bootstrap: String,
    /// A cluster existed before this run.
    pub existing_cluster: bool,
    /// `kubectl label/taint` commands run on the bootstrap server.
    pub api_commands: Vec<String>,
    pub kubeconfig: PathBuf,
    pub kubeconfig_changed: bool,
    /// The rolling k3s upgrade run before the install ([`rolling_upgrade`]).
    pub upgrade: UpgradeReport,
    /// Cluster-wide steps (inputs, labels and taints, kubeconfig), timed like the nodes' own.
    pub timeline: Vec<StepTiming>,
    /// The install run from its start (every timeline's origin) to the kubeconfig.
    pub elapsed: Duration,
}

impl Phase2Report {
    /// Whether anything on any node (or the workspace kubeconfig) changed.
    pub fn changed(&self) -> bool {
        self.kubeconfig_changed
            || !self.upgrade.upgraded.is_empty()
            || !self.api_commands.is_empty()
            || self.nodes.iter().any(NodeReport::changed)
    }

    /// Nodes whose k3s service was restarted.
    pub fn restarted(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.restarted)
            .map(|n| n.name.as_str())
            .collect()
    }
}

/// Converge the cluster described by `profile` on `nodes`.
// Long by design: it reads as the phase-2 order from top to bottom, and the server and agent
// phases share the nodes, their connections and reports, and the join plan.
pub async fn run(
    profile: &Profile,
    nodes: &[GuestNode],
    connector: &dyn Connector,
    opts: &Phase2Options,
) -> anyhow::Result<Phase2Report> {
    let clock = Clock::start();
    let groups: BTreeMap<&str, &NodeGroup> = profile
        .node_groups
        .iter()
        .map(|g| (g.name.as_str(), g))
        .collect();
    for node in nodes {
        if !groups.contains_key(node.group.as_str()) {
            bail!(
                "node {} belongs to group {}, which the profile does not define",
                node.name,
                node.group
            );
        }
    }
    let servers: Vec<usize> = (0..nodes.len())
        .filter(|i| nodes[*i].role == Role::Server)
        .collect();
    let agents: Vec<usize> = (0..nodes.len())
        .filter(|i| nodes[*i].role == Role::Agent)
        .collect();
    if servers.is_empty() {
        bail!("phase 2 needs at least one server node");
    }

    let started = announce(nodes, opts);
    let mut timeline = Vec::new();
    let inputs = clock
        .time(&mut timeline, "inputs", load_inputs(profile, opts))
        .await?;
    let parallelism = opts.parallelism.max(1);

    let credentials = gitops_credentials(profile, &opts.workspace)?;
    let manifests = render_manifests(&opts.templates, profile, credentials.as_ref())?;
    let manifest_files = manifest_steps(&manifests);

    let connected: Vec<(Box<dyn RemoteExec>, Vec<StepTiming>)> = stream::iter(nodes)
        .map(|node| {
            let clock = &clock;
            async move {
                let mut timeline = Vec::new();
                let exec = clock
                    .time(&mut timeline, "connect", connector.connect(node))
                    .await
                    .with_context(|| {
                        format!("node {} ({}): cannot connect", node.name, node.address)
                    })?;
                anyhow::Ok((exec, timeline))
            }
        })
        .buffered(parallelism)
        .try_collect()
        .await?;
    let execs: Vec<&dyn RemoteExec> = connected.iter().map(|(exec, _)| exec.as_ref()).collect();

    // Each node on its own, in parallel: cloud-init finished, its k3s state probed (sent to the
    // join plan, which needs every node's), then node preparation and the k3s binary (sent to the
    // install). Beside them, the join plan, then the bootstrap server's install as soon as it is
    // prepared, then further servers one at a time, each as soon as it is prepared and the server
    // before it Ready.
    let mut probes = Vec::with_capacity(nodes.len());
    let mut preparations = Vec::with_capacity(nodes.len());
    let mut pipelines = Vec::with_capacity(nodes.len());
    for (index, node) in nodes.iter().enumerate() {
        let (probe_sender, probe_receiver) = oneshot::channel();
        let (prepared_sender, prepared_receiver) = oneshot::channel();
        probes.push(probe_receiver);
        preparations.push(Some(prepared_receiver));
        let exec = execs[index];
        let group = groups[node.group.as_str()];
        let mut timeline = connected[index].1.clone();
        let (inputs, clock) = (&inputs, &clock);
        pipelines.push(async move {
            let work = async {
                let probe =
                    reach_node(node, exec, &inputs.token, clock, opts, &mut timeline).await?;
                if probe_sender.send(probe).is_err() {
                    // The run stopped (with its own error): nothing waits for this node.
                    return Ok(());
                }
                let mut prepared =
                    prepare_node(profile, node, group, exec, inputs, clock, opts).await?;
                prepared.report.timeline.splice(0..0, timeline);
                // A closed receiver: the run stopped with its own error.
                drop(prepared_sender.send(prepared));
                anyhow::Ok(())
            };
            work.await
                .with_context(|| format!("node {} ({})", node.name, node.address))
        });
    }
    let pipelines = stream::iter(pipelines)
        .buffer_unordered(parallelism)
        .try_collect::<Vec<()>>();
    let mut joining = JoinContext::default();
    // The cluster as the joins and the steps after them see it, once the join plan chose its
    // bootstrap server.
    let cluster_with = |bootstrap_index| Cluster {
        profile,
        nodes,
        groups: &groups,
        execs: &execs,
        bootstrap_index,
        manifest_files: &manifest_files,
        token: &inputs.token,
        clock: &clock,
        opts,
    };
    let servers_joined = async {
        let mut seen = Vec::with_capacity(nodes.len());
        for (index, probe) in probes.into_iter().enumerate() {
            seen.push(probe.await.map_err(|_| stopped(&nodes[index]))?);
        }
        let candidate = |index: &usize| JoinCandidate {
            name: nodes[*index].name.clone(),
            address: nodes[*index].address,
            probe: seen[*index].clone(),
        };
        let server_candidates: Vec<JoinCandidate> = servers.iter().map(candidate).collect();
        let agent_candidates: Vec<JoinCandidate> = agents.iter().map(candidate).collect();
        let plan = plan_joins(
            &server_candidates,
            &agent_candidates,
            profile.cluster.api_vip,
        )?;
        let cluster = cluster_with(servers[plan.bootstrap]);
        let mut reports: Vec<Option<NodeReport>> = (0..nodes.len()).map(|_| None).collect();
        let mut binary_changed = vec![false; nodes.len()];
        // Bootstrap first, then one at a time. The bootstrap server's CA (and, with a VIP, the VIP
        // answering) is needed before the first node that joins.
        let mut server_order: Vec<usize> = vec![plan.bootstrap];
        server_order.extend((0..servers.len()).filter(|i| *i != plan.bootstrap));
        for position in server_order {
            let index = servers[position];
            let prepared = receive(&mut preparations[index], &nodes[index]).await?;
            binary_changed[index] = prepared.binary_changed;
            let mut report = prepared.report;
            let joined = cluster
                .join_server(
                    &mut joining,
                    index,
                    plan.server_modes[position].clone(),
                    &report.labels,
                    binary_changed[index],
                )
                .await?;
            merge_install(&mut report, joined);
            reports[index] = Some(report);
            node_done(opts, &nodes[index].name, started);
        }
        anyhow::Ok((plan, reports, binary_changed))
    };
    let (_, (plan, mut reports, mut binary_changed)) =
        futures::try_join!(pipelines, servers_joined)?;
    // Every node is prepared by now: the agents' preparations are waiting.
    for index in &agents {
        let prepared = receive(&mut preparations[*index], &nodes[*index]).await?;
        binary_changed[*index] = prepared.binary_changed;
        reports[*index] = Some(prepared.report);
    }
    let bootstrap_index = servers[plan.bootstrap];
    let cluster = cluster_with(bootstrap_index);
    let bootstrap_exec = execs[bootstrap_index];
    let mut report = Phase2Report {
        nodes: reports.into_iter().flatten().collect(),
        bootstrap: nodes[bootstrap_index].name.clone(),
        existing_cluster: plan.existing_cluster,
        ..Phase2Report::default()
    };
    if report.nodes.len() != nodes.len() {
        bail!("phase 2 lost track of a node's report");
    }

    // Agents in parallel (the CA hash and the VIP check are done once, before any of them).
    let mut agent_tokens = Vec::with_capacity(agents.len());
    for position in 0..agents.len() {
        let mut token_timeline = Vec::new();
        let token = clock
            .time(
                &mut token_timeline,
                "join token",
                joining.token_for(
                    &plan.agent_modes[position],
                    false,
                    bootstrap_exec,
                    &inputs.token,
                    profile,
                    opts,
                ),
            )
            .await?;
        agent_tokens.push((token, token_timeline));
    }
    let installed: Vec<(usize, Joined)> = stream::iter(agents.iter().enumerate())
        .map(|(position, index)| {
            let node = &nodes[*index];
            let settings = cluster.settings(
                *index,
                plan.agent_modes[position].clone(),
                &report.nodes[*index].labels,
            );
            let exec = execs[*index];
            let binary_changed = binary_changed[*index];
            let (token, token_timeline) = &agent_tokens[position];
            let clock = &clock;
            async move {
                let mut timeline = token_timeline.clone();
                let install =
                    install_node(profile, &settings, exec, binary_changed, &[], token, opts);
                let result = clock
                    .time(&mut timeline, "install", install)
                    .await
                    .with_context(|| {
                        format!("node {} ({}): k3s agent install", node.name, node.address)
                    })?;
                anyhow::Ok((*index, Joined { result, timeline }))
            }
        })
        .buffer_unordered(parallelism)
        .try_collect()
        .await?;
    for (index, joined) in installed {
        merge_install(&mut report.nodes[index], joined);
    }
    let agent_names: Vec<&str> = agents.iter().map(|i| nodes[*i].name.as_str()).collect();
    if !agent_names.is_empty() {
        for name in &agent_names {
            opts.events.step(name, "ready");
        }
        // One wait for all of them: each agent's timeline gets it.
        let mut ready = Vec::new();
        clock
            .time(
                &mut ready,
                "ready",
                wait_until(bootstrap_exec, &agent_names, false, opts),
            )
            .await?;
        for index in &agents {
            report.nodes[*index].timeline.extend(ready.iter().cloned());
            node_done(opts, &nodes[*index].name, started);
        }
    }

    // Labels and taints changed after registration go through the API.
    let labels_and_taints = update_labels_and_taints(bootstrap_exec, nodes, &groups, &mut report);
    clock
        .time(&mut timeline, "labels and taints", labels_and_taints)
        .await?;

    // Kubeconfig.
    let api_address = profile.cluster.api_vip.unwrap_or(nodes[servers[0]].address);
    let kubeconfig = write_kubeconfig(profile, bootstrap_exec, api_address, opts, &mut report);
    clock.time(&mut timeline, "kubeconfig", kubeconfig).await?;
    report.timeline = timeline;
    report.elapsed = clock.elapsed();
    Ok(report)
}

/// What every step of a run shares: the nodes, their connections, the bootstrap server, the
/// cluster token and the clock of the timelines.
struct Cluster<'a> {
    profile: &'a Profile,
    nodes: &'a [GuestNode],
    groups: &'a BTreeMap<&'a str, &'a NodeGroup>,
    execs: &'a [&'a dyn RemoteExec],
    bootstrap_index: usize,
    /// Written on the bootstrap server only.
    manifest_files: &'a [crate::nodeprep::Step],
    token: &'a K3sToken,
    clock: &'a Clock,
    opts: &'a Phase2Options,
}

impl Cluster<'_> {
    fn group(&self, index: usize) -> &NodeGroup {
        self.groups[self.nodes[index].group.as_str()]
    }

    fn settings(
        &self,
        index: usize,
        join: JoinMode,
        labels: &BTreeMap<String, String>,
    ) -> NodeSettings {
        let node = &self.nodes[index];
        NodeSettings {
            name: node.name.clone(),
            address: node.address,
            role: node.role,
            join,
            labels: labels.clone(),
            taints: self.group(index).taints.clone(),
        }
    }

    /// Server `index` installed with `join` and waited for until it is Ready and an etcd member.
    async fn join_server(
        &self,
        joining: &mut JoinContext,
        index: usize,
        join: JoinMode,
        labels: &BTreeMap<String, String>,
        binary_changed: bool,
    ) -> anyhow::Result<Joined> {
        let node = &self.nodes[index];
        let is_bootstrap = index == self.bootstrap_index;
        let bootstrap_exec = self.execs[self.bootstrap_index];
        let mut timeline = Vec::new();
        let token = joining.token_for(
            &join,
            is_bootstrap,
            bootstrap_exec,
            self.token,
            self.profile,
            self.opts,
        );
        let token = self.clock.time(&mut timeline, "join token", token).await?;
        let extra = if is_bootstrap {
            self.manifest_files
        } else {
            &[]
        };
        let settings = self.settings(index, join, labels);
        let install = install_node(
            self.profile,
            &settings,
            self.execs[index],
            binary_changed,
            extra,
            &token,
            self.opts,
        );
        let result = self
            .clock
            .time(&mut timeline, "install", install)
            .await
            .with_context(|| {
                format!("node {} ({}): k3s server install", node.name, node.address)
            })?;
        self.opts.events.step(&node.name, "ready");
        let names = [node.name.as_str()];
        let ready = wait_until(bootstrap_exec, &names, true, self.opts);
        self.clock
            .time(&mut timeline, "ready", ready)
            .await
            .with_context(|| format!("node {} ({})", node.name, node.address))?;
        Ok(Joined { result, timeline })
    }
}

/// The run stopped before `node` sent what it was waiting for (its error is the run's).
fn stopped(node: &GuestNode) -> anyhow::Error {
    anyhow!(
        "node {} ({}): its preparation stopped",
        node.name,
        node.address
    )
}

/// The preparation `node`'s pipeline sends, once.
async fn receive(
    receiver: &mut Option<oneshot::Receiver<Prepared>>,
    node: &GuestNode,
) -> anyhow::Result<Prepared> {
    match receiver.take() {
        Some(receiver) => receiver.await.map_err(|_| stopped(node)),
        None => Err(stopped(node)),
    }
}

/// A node's k3s install and its timeline (join token, install, ready).
struct Joined {
    result: InstallResult,
    timeline: Vec<StepTiming>,
}

fn merge_install(node: &mut NodeReport, joined: Joined) {
    node.steps.extend(joined.result.steps);
    node.started |= joined.result.started;
    node.restarted |= joined.result.restarted;
    node.timeline.extend(joined.timeline);
}

/// What every node receives, read and checked once before any node is touched.
struct Inputs {
    token: K3sToken,
    binary_bytes: Vec<u8>,
    /// Air-gap images: remote path and bytes.
    images: Option<(String, Vec<u8>)>,
    nvidia_repo_key: Option<Vec<u8>>,
}

/// The cluster token, the verified k3s binary, the air-gap images and NVIDIA's apt key.
async fn load_inputs(profile: &Profile, opts: &Phase2Options) -> anyhow::Result<Inputs> {
    let token = K3sToken::load_or_create(&opts.secrets_dir)
        .context("cannot read or create the cluster token")?;
    let binary = match &opts.binary {
        Some(artifact) => artifact.clone(),
        None => fetch_binary(&BinarySource::from_profile(profile)?, &opts.cache_dir)
            .await
            .context("cannot obtain the k3s binary")?,
    };
    let binary_bytes = std::fs::read(&binary.path)
        .with_context(|| format!("cannot read {}", binary.path.display()))?;
    if crate::nodeprep::sha256_hex(&binary_bytes) != binary.sha256 {
        bail!("{} changed since it was verified", binary.path.display());
    }
    let images = match images_artifact(profile)? {
        Some(artifact) => {
            let name = artifact
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| anyhow!("air-gap images path has no file name"))?;
            let bytes = std::fs::read(&artifact.path)
                .with_context(|| format!("cannot read {}", artifact.path.display()))?;
            Some((images_path(&name), bytes))
        }
        None => None,
    };
    // NVIDIA's apt key (host mode): read here, pushed to the GPU nodes as a file.
    let nvidia_repo_key = match &profile.nvidia.repo_key {
        Some(path) => Some(
            std::fs::read(path).with_context(|| format!("cannot read nvidia.repo_key {path}"))?,
        ),
        None => None,
    };
    Ok(Inputs {
        token,
        binary_bytes,
        images,
        nvidia_repo_key,
    })
}

/// Labels and taints changed after registration, applied through the API on the bootstrap
/// server; every command run is recorded in the report.
async fn update_labels_and_taints(
    bootstrap_exec: &dyn RemoteExec,
    nodes: &[GuestNode],
    groups: &BTreeMap<&str, &NodeGroup>,
    report: &mut Phase2Report,
) -> anyhow::Result<()> {
    let cluster_nodes = get_nodes(bootstrap_exec).await?;
    for (index, node) in nodes.iter().enumerate() {
        let Some(current) = cluster_nodes.iter().find(|n| n.name == node.name) else {
            bail!("node {} is not registered in the cluster", node.name);
        };
        let group = groups[node.group.as_str()];
        let commands = label_taint_commands(current, &report.nodes[index].labels, &group.taints)
            .with_context(|| format!("node {}: updating labels/taints", node.name))?;
        for command in commands {
            run_checked(bootstrap_exec, &command)
                .await
                .with_context(|| format!("node {}: updating labels/taints", node.name))?;
            report.api_commands.push(command);
        }
    }
    Ok(())
}

/// The bootstrap server's kubeconfig, pointed at `api_address`, written to the workspace.
async fn write_kubeconfig(
    profile: &Profile,
    bootstrap_exec: &dyn RemoteExec,
    api_address: IpAddr,
    opts: &Phase2Options,
    report: &mut Phase2Report,
) -> anyhow::Result<()> {
    let k3s_yaml = bootstrap_exec
        .read_file(KUBECONFIG_PATH)
        .await
        .with_context(|| format!("node {}: reading {KUBECONFIG_PATH}", report.bootstrap))?;
    let kubeconfig = rewrite_kubeconfig(
        &String::from_utf8_lossy(&k3s_yaml),
        &server_url(api_address),
        &profile.cluster.name,
    )?;
    report.kubeconfig = opts.workspace.join("kubeconfig");
    report.kubeconfig_changed =
        crate::files::write_private_if_changed(&report.kubeconfig, kubeconfig.as_bytes())?;
    Ok(())
}

/// What joining nodes need from the bootstrap server, fetched once: the CA hash for the secure token,
/// and (with an API VIP) the knowledge that the VIP answers.
#[derive(Default)]
struct JoinContext {
    ca_hash: Option<CaHash>,
    vip_answers: bool,
}

impl JoinContext {
    /// The token `join` needs in config.yaml: the bare secret for the bootstrap server's own
    /// `cluster-init`, the secure form pinning the cluster CA for every node that joins. Before handing
    /// out the first join through the VIP, waits (bounded) until the VIP answers.
    async fn token_for(
        &mut self,
        join: &JoinMode,
        is_bootstrap: bool,
        bootstrap: &dyn RemoteExec,
        token: &K3sToken,
        profile: &Profile,
        opts: &Phase2Options,
    ) -> anyhow::Result<K3sToken> {
        let server_url_in_use = match join {
            JoinMode::Init => return Ok(token.clone()),
            JoinMode::Join { server_url } => server_url,
        };
        let ca_hash = match &self.ca_hash {
            Some(hash) => hash.clone(),
            None => {
                let output = run_checked(bootstrap, &read_ca_command())
                    .await
                    .with_context(|| format!("{}: reading the cluster CA", bootstrap.host()))?;
                let hash = parse_ca_output(output.as_bytes())
                    .with_context(|| format!("{}: reading the cluster CA", bootstrap.host()))?;
                self.ca_hash = Some(hash.clone());
                hash
            }
        };
        if let Some(vip) = profile.cluster.api_vip
            && !is_bootstrap
            && !self.vip_answers
            && *server_url_in_use == server_url(vip)
        {
            wait_for_api(bootstrap, vip, opts).await?;
            self.vip_answers = true;
        }
        Ok(token.secure_form(&ca_hash))
    }
}

/// Phase 2 starts on `nodes`: each takes cloud-init, prepare, k3s install and ready.
fn announce(nodes: &[GuestNode], opts: &Phase2Options) -> std::time::Instant {
    let names: Vec<String> = nodes.iter().map(|node| node.name.clone()).collect();
    opts.events
        .event(super::ExecEvent::Started { vms: names.clone() });
    opts.events.event(super::ExecEvent::Planned {
        steps: names.into_iter().map(|name| (name, 4)).collect(),
    });
    std::time::Instant::now()
}

fn node_done(opts: &Phase2Options, name: &str, started: std::time::Instant) {
    opts.events.event(super::ExecEvent::VmDone {
        vm: name.to_owned(),
        elapsed: started.elapsed(),
    });
}

/// The GitOps repository's credentials, read again from the files the profile names (they were checked
/// when the profile was loaded, but may have changed since); `None` for a public repository.
fn gitops_credentials(
    profile: &Profile,
    workspace: &Path,
) -> anyhow::Result<Option<crate::profile::credentials::GitCredentials>> {
    match &profile.gitops.credentials {
        Some(reference) if profile.gitops.engine != crate::profile::model::GitOpsEngine::None => {
            crate::profile::credentials::read(reference, workspace)
                .map(Some)
                .map_err(|error| anyhow!("{error} (hint: {})", error.hint))
        }
        Some(_) | None => Ok(None),
    }
}

async fn run_checked(exec: &dyn RemoteExec, command: &str) -> anyhow::Result<String> {
    let output = exec.run(command, None).await?;
    if output.exit_status != 0 {
        bail!(
            "{}: `{}` failed with exit status {}: {}",
            exec.host(),
            command.lines().next().unwrap_or_default(),
            output.exit_status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn get_nodes(bootstrap: &dyn RemoteExec) -> anyhow::Result<Vec<ClusterNode>> {
    let stdout = run_checked(bootstrap, GET_NODES_COMMAND).await?;
    Ok(parse_nodes(&stdout)?)
}
