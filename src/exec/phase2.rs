//! Phase 2 runner: from running VMs to a converged K3s cluster over SSH.
//!
//! Order: cloud-init finished → node preparation and binary upload on all nodes (parallel, bounded) →
//! join plan from what the servers already hold → bootstrap server (with `cluster-init` only when no
//! cluster exists, and the bare token secret) → the cluster CA's hash read from it → with an API VIP, a
//! bounded wait until the VIP answers (kube-vip runs only once the bootstrap server is up) → further
//! servers one at a time through the VIP (else the bootstrap server), each Ready and an etcd member
//! before the next → agents in parallel → labels/taints → kubeconfig. Joining nodes get the secure
//! token `K10<CA hash>::server:<secret>`, so they only talk to a server presenting this cluster's CA. Every remote change is reported per node; a re-run
//! on a converged cluster writes no file and restarts no service.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::k3s::cluster::{
    ClusterNode, GET_NODES_COMMAND, JoinCandidate, NodeProbe, label_taint_commands, parse_nodes,
    parse_probe, plan_joins, probe_script,
};
use crate::k3s::config::{
    JoinMode, NodeSettings, render_config, render_unit, server_url, unit_name,
};
use crate::k3s::install::{
    ServiceAction, config_steps, images_path, manifest_steps, parse_service_state, service_action,
    service_command, service_state_script,
};
use crate::k3s::kubeconfig::rewrite_kubeconfig;
use crate::k3s::manifests::{render_manifests, storage_labels};
use crate::k3s::release::{Artifact, BinarySource, fetch_binary, images_artifact};
use crate::k3s::templates::Templates;
use crate::k3s::token::{CaHash, K3sToken, parse_ca_output, read_ca_command};
use crate::k3s::{BINARY_PATH, KUBECONFIG_PATH};
use crate::nodeprep::{
    NodePrepInput, StepOutcome, StepReport, apply_step, apply_steps, ensure_file,
    hardware_probe_script, node_labels, parse_hardware, prepare_steps,
};
use crate::profile::Profile;
use crate::profile::model::{NodeGroup, Role};
use crate::ssh::{RemoteExec, SshError};

mod gate;
mod upgrade;
mod waits;
pub use gate::K3sGate;
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
            poll_interval: Duration::from_secs(2),
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

    fn node_mut(&mut self, name: &str) -> Option<&mut NodeReport> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }
}

struct Prepared {
    report: NodeReport,
    binary_changed: bool,
    probe: NodeProbe,
}

/// Converge the cluster described by `profile` on `nodes`.
// Long by design: it reads as the phase-2 order from top to bottom, and the
// server and agent phases share a dozen locals (nodes, connections, preparations, the join
// plan) that a further split would pass around as long argument lists.
pub async fn run(
    profile: &Profile,
    nodes: &[GuestNode],
    connector: &dyn Connector,
    opts: &Phase2Options,
) -> anyhow::Result<Phase2Report> {
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
    let Inputs {
        token,
        binary_bytes,
        images,
        nvidia_repo_key,
    } = load_inputs(profile, opts).await?;
    let parallelism = opts.parallelism.max(1);

    // Connect.
    let execs: Vec<Box<dyn RemoteExec>> = stream::iter(nodes.iter())
        .map(|node| async move {
            connector
                .connect(node)
                .await
                .with_context(|| format!("node {} ({}): cannot connect", node.name, node.address))
        })
        .buffered(parallelism)
        .try_collect()
        .await?;

    // cloud-init, node preparation, binary, probe: all nodes in parallel.
    let prepared: Vec<Prepared> = stream::iter(nodes.iter().zip(execs.iter()))
        .map(|(node, exec)| {
            let group = groups[node.group.as_str()];
            let binary_bytes = &binary_bytes;
            let images = &images;
            let token = &token;
            let nvidia_repo_key = nvidia_repo_key.as_deref();
            async move {
                prepare_node(
                    profile,
                    node,
                    group,
                    exec.as_ref(),
                    binary_bytes,
                    images.as_ref(),
                    nvidia_repo_key,
                    token,
                    opts,
                )
                .await
                .with_context(|| format!("node {} ({})", node.name, node.address))
            }
        })
        .buffered(parallelism)
        .try_collect()
        .await?;

    let candidate = |index: &usize| JoinCandidate {
        name: nodes[*index].name.clone(),
        address: nodes[*index].address,
        probe: prepared[*index].probe.clone(),
    };
    let server_candidates: Vec<JoinCandidate> = servers.iter().map(candidate).collect();
    let agent_candidates: Vec<JoinCandidate> = agents.iter().map(candidate).collect();
    let plan = plan_joins(
        &server_candidates,
        &agent_candidates,
        profile.cluster.api_vip,
    )?;

    let mut report = Phase2Report {
        nodes: prepared.iter().map(|p| p.report.clone()).collect(),
        bootstrap: nodes[servers[plan.bootstrap]].name.clone(),
        existing_cluster: plan.existing_cluster,
        ..Phase2Report::default()
    };
    let bootstrap_index = servers[plan.bootstrap];
    let bootstrap_exec = execs[bootstrap_index].as_ref();
    let credentials = gitops_credentials(profile, &opts.workspace)?;
    let manifests = render_manifests(&opts.templates, profile, credentials.as_ref())?;
    let manifest_files = manifest_steps(&manifests);

    let settings = |index: usize, join: JoinMode| NodeSettings {
        name: nodes[index].name.clone(),
        address: nodes[index].address,
        role: nodes[index].role,
        join,
        labels: prepared[index].report.labels.clone(),
        taints: groups[nodes[index].group.as_str()].taints.clone(),
    };

    // Servers: bootstrap first, then one at a time. The bootstrap server's CA (and, with a VIP, the VIP
    // answering) is needed before the first node that joins.
    let mut joining = JoinContext::default();
    let mut server_order: Vec<usize> = vec![plan.bootstrap];
    server_order.extend((0..servers.len()).filter(|i| *i != plan.bootstrap));
    for position in server_order {
        let index = servers[position];
        let node = &nodes[index];
        let extra = if index == bootstrap_index {
            manifest_files.as_slice()
        } else {
            &[]
        };
        let join = plan.server_modes[position].clone();
        let node_token = joining
            .token_for(
                &join,
                index == bootstrap_index,
                bootstrap_exec,
                &token,
                profile,
                opts,
            )
            .await?;
        let installed = install_node(
            profile,
            &settings(index, join),
            execs[index].as_ref(),
            prepared[index].binary_changed,
            extra,
            &node_token,
            opts,
        )
        .await
        .with_context(|| format!("node {} ({}): k3s server install", node.name, node.address))?;
        merge_install(&mut report, &node.name, installed);
        opts.events.step(&node.name, "ready");
        wait_until(bootstrap_exec, &[node.name.as_str()], true, opts)
            .await
            .with_context(|| format!("node {} ({})", node.name, node.address))?;
        node_done(opts, &node.name, started);
    }

    // Agents in parallel (the CA hash and the VIP check are done once, before any of them).
    let mut agent_tokens = Vec::with_capacity(agents.len());
    for position in 0..agents.len() {
        let join = &plan.agent_modes[position];
        agent_tokens.push(
            joining
                .token_for(join, false, bootstrap_exec, &token, profile, opts)
                .await?,
        );
    }
    let installed: Vec<(usize, InstallResult)> = stream::iter(agents.iter().enumerate())
        .map(|(position, index)| {
            let node = &nodes[*index];
            let settings = settings(*index, plan.agent_modes[position].clone());
            let exec = execs[*index].as_ref();
            let binary_changed = prepared[*index].binary_changed;
            let token = &agent_tokens[position];
            async move {
                install_node(profile, &settings, exec, binary_changed, &[], token, opts)
                    .await
                    .map(|result| (*index, result))
                    .with_context(|| {
                        format!("node {} ({}): k3s agent install", node.name, node.address)
                    })
            }
        })
        .buffer_unordered(parallelism)
        .try_collect()
        .await?;
    for (index, result) in installed {
        merge_install(&mut report, &nodes[index].name, result);
    }
    let agent_names: Vec<&str> = agents.iter().map(|i| nodes[*i].name.as_str()).collect();
    if !agent_names.is_empty() {
        for name in &agent_names {
            opts.events.step(name, "ready");
        }
        wait_until(bootstrap_exec, &agent_names, false, opts).await?;
        for name in &agent_names {
            node_done(opts, name, started);
        }
    }

    // Labels and taints changed after registration go through the API.
    update_labels_and_taints(bootstrap_exec, nodes, &groups, &prepared, &mut report).await?;

    // Kubeconfig.
    let api_address = profile.cluster.api_vip.unwrap_or(nodes[servers[0]].address);
    write_kubeconfig(profile, bootstrap_exec, api_address, opts, &mut report).await?;
    Ok(report)
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
    prepared: &[Prepared],
    report: &mut Phase2Report,
) -> anyhow::Result<()> {
    let cluster_nodes = get_nodes(bootstrap_exec).await?;
    for (index, node) in nodes.iter().enumerate() {
        let Some(current) = cluster_nodes.iter().find(|n| n.name == node.name) else {
            bail!("node {} is not registered in the cluster", node.name);
        };
        let group = groups[node.group.as_str()];
        let commands = label_taint_commands(current, &prepared[index].report.labels, &group.taints)
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

#[allow(clippy::too_many_arguments)]
async fn prepare_node(
    profile: &Profile,
    node: &GuestNode,
    group: &NodeGroup,
    exec: &dyn RemoteExec,
    binary: &[u8],
    images: Option<&(String, Vec<u8>)>,
    nvidia_repo_key: Option<&[u8]>,
    token: &K3sToken,
    opts: &Phase2Options,
) -> anyhow::Result<Prepared> {
    let mut report = NodeReport {
        name: node.name.clone(),
        ..NodeReport::default()
    };
    opts.events.step(&node.name, "cloud-init");
    wait_cloud_init(exec, opts.cloud_init_timeout).await?;
    opts.events.step(&node.name, "prepare");
    // One round trip for all the preparation steps (bigger files still travel by upload).
    let steps = prepare_steps(
        &NodePrepInput::for_group(profile, group).with_nvidia_repo_key(nvidia_repo_key),
    );
    report.steps.extend(apply_steps(exec, &steps).await?);
    let hardware = parse_hardware(&run_checked(exec, &hardware_probe_script()).await?);
    report.labels = node_labels(group, &hardware, &profile.detect);
    report.labels.extend(storage_labels(profile, group));
    let outcome = ensure_file(exec, BINARY_PATH, binary, 0o755).await?;
    let binary_changed = outcome.is_change();
    report.steps.push(StepReport {
        description: format!("k3s binary {BINARY_PATH}"),
        outcome,
    });
    if let Some((path, bytes)) = images {
        let outcome = ensure_file(exec, path, bytes, 0o644).await?;
        report.steps.push(StepReport {
            description: format!("air-gap images {path}"),
            outcome,
        });
    }
    let stdin = format!("{}\n", token.expose());
    let output = exec
        .run(&probe_script(unit_name(node.role)), Some(stdin.as_bytes()))
        .await?;
    Ok(Prepared {
        report,
        binary_changed,
        probe: parse_probe(&String::from_utf8_lossy(&output.stdout)),
    })
}

/// `cloud-init status --wait`, bounded. Exit 2 (finished with recoverable errors) is accepted; a host
/// without cloud-init (exit 127) was not created by provision and has nothing to wait for.
async fn wait_cloud_init(exec: &dyn RemoteExec, timeout: Duration) -> anyhow::Result<()> {
    let output = tokio::time::timeout(timeout, exec.run("cloud-init status --wait", None))
        .await
        .map_err(|_| {
            anyhow!(
                "{}: timed out after {}s waiting for cloud-init to finish (`cloud-init status --wait`)",
                exec.host(),
                timeout.as_secs()
            )
        })?
        .with_context(|| format!("{}: waiting for cloud-init to finish", exec.host()))?;
    match output.exit_status {
        0 | 2 | 127 => Ok(()),
        status => {
            // Which module failed and why: worth one more round trip on the way out.
            let detail = match exec.run("cloud-init status --long", None).await {
                Ok(long) => String::from_utf8_lossy(&long.stdout).trim().to_owned(),
                Err(error) => format!("(`cloud-init status --long` failed too: {error})"),
            };
            bail!(
                "{}: cloud-init failed (exit {status}): {}",
                exec.host(),
                if detail.is_empty() {
                    String::from_utf8_lossy(&output.stdout).trim().to_owned()
                } else {
                    detail
                }
            )
        }
    }
}

struct InstallResult {
    steps: Vec<StepReport>,
    started: bool,
    restarted: bool,
}

fn merge_install(report: &mut Phase2Report, name: &str, result: InstallResult) {
    if let Some(node) = report.node_mut(name) {
        node.steps.extend(result.steps);
        node.started |= result.started;
        node.restarted |= result.restarted;
    }
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

/// Write config, env file, unit (and manifests on the bootstrap server), then start or restart k3s only
/// when something changed or it is not running.
async fn install_node(
    profile: &Profile,
    settings: &NodeSettings,
    exec: &dyn RemoteExec,
    binary_changed: bool,
    extra_files: &[crate::nodeprep::Step],
    token: &K3sToken,
    opts: &Phase2Options,
) -> anyhow::Result<InstallResult> {
    opts.events.step(
        &settings.name,
        match settings.role {
            Role::Server => "k3s server",
            Role::Agent => "k3s agent",
        },
    );
    let config = render_config(&opts.templates, profile, settings, token)?;
    let unit = render_unit(&opts.templates, settings.role)?;
    let files = config_steps(settings.role, &config, &unit);
    let mut steps = Vec::new();
    let mut restart_needed = binary_changed;
    let mut unit_changed = false;
    // Not batched: config.yaml carries the token, and a batch script travels as a command line (visible
    // in the host's process list and in --print-commands); uploads keep it off command lines.
    for (position, step) in files.iter().enumerate() {
        let outcome = apply_step(exec, step).await?;
        restart_needed |= outcome.is_change();
        // The unit is the last of config_steps.
        unit_changed |= position == files.len() - 1 && outcome.is_change();
        steps.push(StepReport {
            description: step.description().to_owned(),
            outcome,
        });
    }
    // Manifests are picked up by the running server: no restart for them.
    for step in extra_files {
        let outcome = apply_step(exec, step).await?;
        steps.push(StepReport {
            description: step.description().to_owned(),
            outcome,
        });
    }
    let (active, _enabled) =
        parse_service_state(&run_checked(exec, &service_state_script(settings.role)).await?);
    let action = service_action(active, restart_needed);
    if let Some(command) = service_command(settings.role, action, unit_changed) {
        run_checked(exec, &command).await?;
    }
    let (started, restarted) = match action {
        ServiceAction::None => (false, false),
        ServiceAction::Start => (true, false),
        ServiceAction::Restart => (false, true),
    };
    if started || restarted {
        steps.push(StepReport {
            description: format!(
                "{} {}",
                unit_name(settings.role),
                if started { "started" } else { "restarted" }
            ),
            outcome: StepOutcome::Changed,
        });
    }
    Ok(InstallResult {
        steps,
        started,
        restarted,
    })
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
