//! Phase 2 glue for `provision up`: turns the VMs phase 1 provisioned into [`GuestNode`]s (with the host
//! keys provision generated for them), connects with the russh executor as the profile's SSH user, runs
//! [`phase2::run`] and describes what changed per node (text and JSON).
//!
//! Only the VMs of the plan are ever contacted: the node list comes from phase 1's report and the
//! connector refuses any other address.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use russh::keys::PublicKey;

use crate::profile::Profile;
use crate::profile::model::Role;
use crate::ssh::{
    ClientKey, CommandLog, HostKeyPolicy, JumpHost, RecordedOp, RecordingExec, RemoteExec,
    RusshExec, SshError, SshOptions, SshTarget,
};
use crate::workspace::Workspace;

use super::ProvisionedVm;
use super::phase2::{self, Connector, GuestNode, Phase2Options, Phase2Report};
use super::session::host_key_dir;

/// How phase 2 connects and what it shows.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Trust unknown host keys of hosts provision did not create, recording them in the workspace's
    /// known_hosts (`--accept-new-host-keys`).
    pub accept_new_host_keys: bool,
    /// Record every remote command and file transfer (`--print-commands`).
    pub record_commands: bool,
    pub ssh: SshOptions,
    /// Overrides of the phase 2 defaults (timeouts, parallelism); `None` = [`Phase2Options::new`].
    pub phase2: Option<Phase2Options>,
    /// Where each node's progress goes (the reporter).
    pub events: super::Events,
    /// The cluster runs: a `cluster.k3s_version` change is rolled out before the install.
    pub upgrade: Option<phase2::UpgradeOptions>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            accept_new_host_keys: false,
            record_commands: false,
            ssh: SshOptions {
                // VMs may still be booting when phase 1 ends.
                connect_timeout: Duration::from_secs(180),
                become_root: true,
                ..SshOptions::default()
            },
            phase2: None,
            events: super::Events::default(),
            upgrade: None,
        }
    }
}

/// What phase 2 did, plus the remote operations when they were recorded.
#[derive(Debug)]
pub struct ClusterOutcome {
    pub report: Phase2Report,
    /// Every remote operation in order (`--print-commands`), secrets redacted.
    pub commands: Vec<String>,
}

/// Phase 2 failed; the operations recorded up to the failure are kept for `--print-commands`.
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
pub struct ClusterFailure {
    pub error: anyhow::Error,
    pub commands: Vec<String>,
}

/// The workspace's known_hosts, for hosts without provision-generated keys.
pub fn known_hosts_path(workspace: &Workspace) -> PathBuf {
    workspace.state_dir().join("known_hosts")
}

/// Phase 2 nodes for the provisioned VMs; expected host keys come from `host_key_dir/<vm>.pub`
/// (absent = not created by provision: the known_hosts file decides).
pub fn guest_nodes(vms: &[ProvisionedVm], host_key_dir: &Path) -> anyhow::Result<Vec<GuestNode>> {
    vms.iter()
        .map(|vm| guest_node(&vm.name, vm.address, vm.role, &vm.group, host_key_dir))
        .collect()
}

/// One node, with the host keys provision generated for it (`host_key_dir/<name>.pub`), if any.
pub fn guest_node(
    name: &str,
    address: IpAddr,
    role: Role,
    group: &str,
    host_key_dir: &Path,
) -> anyhow::Result<GuestNode> {
    let path = host_key_dir.join(format!("{name}.pub"));
    let expected_host_keys = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_owned)
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    Ok(GuestNode {
        name: name.to_owned(),
        address,
        role,
        group: group.to_owned(),
        expected_host_keys,
    })
}

/// Connects to the plan's VMs only, as the profile's SSH user, verifying host keys.
pub struct SshConnector {
    key: ClientKey,
    user: String,
    options: SshOptions,
    known_hosts: PathBuf,
    accept_new: bool,
    jump: Option<JumpHost>,
    allowed: BTreeSet<IpAddr>,
    log: Option<CommandLog>,
}

impl SshConnector {
    /// For `nodes` (the only addresses it will connect to).
    pub fn new(
        profile: &Profile,
        workspace: &Workspace,
        nodes: &[GuestNode],
        options: &ClusterOptions,
        log: Option<CommandLog>,
    ) -> anyhow::Result<Self> {
        let key = ClientKey::File {
            path: crate::files::expand_home(&profile.ssh.private_key),
            passphrase: None,
        };
        let known_hosts = known_hosts_path(workspace);
        let jump = match &profile.ssh.jump_host {
            Some(spec) => {
                let (user, host, port) = parse_jump_host(spec, &profile.ssh.user)
                    .with_context(|| format!("ssh.jump_host {spec:?}"))?;
                Some(JumpHost {
                    target: SshTarget::new(&host, &host, port, &user),
                    key: key.clone(),
                    policy: HostKeyPolicy::KnownHosts {
                        file: known_hosts.clone(),
                        accept_new: options.accept_new_host_keys,
                    },
                })
            }
            None => None,
        };
        Ok(Self {
            key,
            user: profile.ssh.user.clone(),
            options: options.ssh.clone(),
            known_hosts,
            accept_new: options.accept_new_host_keys,
            jump,
            allowed: nodes.iter().map(|node| node.address).collect(),
            log,
        })
    }

    fn policy(&self, node: &GuestNode) -> Result<HostKeyPolicy, SshError> {
        if node.expected_host_keys.is_empty() {
            return Ok(HostKeyPolicy::KnownHosts {
                file: self.known_hosts.clone(),
                accept_new: self.accept_new,
            });
        }
        let keys = node
            .expected_host_keys
            .iter()
            .map(|line| {
                PublicKey::from_openssh(line).map_err(|error| SshError::KnownHosts {
                    path: format!("host key of {}", node.name),
                    message: error.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HostKeyPolicy::Expected(keys))
    }
}

#[async_trait]
impl Connector for SshConnector {
    async fn connect(&self, node: &GuestNode) -> Result<Box<dyn RemoteExec>, SshError> {
        if !self.allowed.contains(&node.address) {
            return Err(SshError::Connect {
                host: node.name.clone(),
                message: format!("{} is not one of the plan's VMs", node.address),
            });
        }
        let exec = RusshExec::connect(
            SshTarget::new(&node.name, &node.address.to_string(), 22, &self.user),
            &self.key,
            self.policy(node)?,
            self.options.clone(),
            self.jump.clone(),
        )
        .await?;
        Ok(match &self.log {
            Some(log) => Box::new(RecordingExec::new(Arc::new(exec), log.clone())),
            None => Box::new(exec),
        })
    }
}

/// Run phase 2 on the provisioned VMs; the kubeconfig goes to [`Workspace::kubeconfig_path`].
pub async fn converge(
    profile: &Profile,
    vms: &[ProvisionedVm],
    workspace: &Workspace,
    options: &ClusterOptions,
) -> Result<ClusterOutcome, ClusterFailure> {
    let log = options.record_commands.then(CommandLog::new);
    let recorded = |log: &Option<CommandLog>| -> Vec<String> {
        let secrets = secrets_to_redact(workspace);
        log.as_ref()
            .map(|log| {
                log.ops()
                    .iter()
                    .map(|op| redact(&render_op(op), &secrets))
                    .collect()
            })
            .unwrap_or_default()
    };
    let result = async {
        let nodes = guest_nodes(vms, &host_key_dir(workspace))?;
        let connector = SshConnector::new(profile, workspace, &nodes, options, log.clone())?;
        let mut phase2_options = options
            .phase2
            .clone()
            .unwrap_or_else(|| Phase2Options::new(&workspace.root));
        // The kubeconfig lives beside the state: `.provision/kubeconfig`.
        phase2_options.workspace = workspace.state_dir();
        phase2_options.events = options.events.clone();
        phase2_options.secrets_dir = workspace.secrets_dir();
        let upgrade = match &options.upgrade {
            Some(upgrade) => {
                phase2::rolling_upgrade(profile, &nodes, &connector, &phase2_options, upgrade)
                    .await
                    .context("rolling k3s upgrade")?
            }
            None => phase2::UpgradeReport::default(),
        };
        let mut report = phase2::run(profile, &nodes, &connector, &phase2_options).await?;
        report.upgrade = upgrade;
        Ok(report)
    }
    .await;
    match result {
        Ok(report) => Ok(ClusterOutcome {
            report,
            commands: recorded(&log),
        }),
        Err(error) => Err(ClusterFailure {
            error,
            commands: recorded(&log),
        }),
    }
}

/// The k3s gate for a rolling `up` of a running cluster: it reaches the servers among `vms`
/// (the cluster as the state knows it, leaving VMs included) over SSH.
pub fn rolling_gate(
    profile: &Profile,
    vms: &[ProvisionedVm],
    workspace: &Workspace,
    options: &ClusterOptions,
) -> anyhow::Result<phase2::K3sGate<SshConnector>> {
    let nodes = guest_nodes(vms, &host_key_dir(workspace))?;
    let connector = SshConnector::new(profile, workspace, &nodes, options, None)?;
    let mut phase2_options = options
        .phase2
        .clone()
        .unwrap_or_else(|| Phase2Options::new(&workspace.root));
    phase2_options.workspace = workspace.state_dir();
    phase2_options.secrets_dir = workspace.secrets_dir();
    Ok(phase2::K3sGate::new(nodes, connector, phase2_options))
}

/// One recorded operation as `--print-commands` shows it: multi-line scripts are shown whole.
fn render_op(op: &RecordedOp) -> String {
    op.to_string()
}

/// Secret values that must never be printed (the cluster token).
fn secrets_to_redact(workspace: &Workspace) -> Vec<String> {
    crate::k3s::token::K3sToken::load_or_create(&workspace.secrets_dir())
        .map(|token| vec![token.expose().to_owned()])
        .unwrap_or_default()
}

/// Replace every secret in `text` with `<redacted>`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|secret| secret.len() >= 8)
        .fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), "<redacted>")
        })
}

/// `user@host[:port]` → (user, host, port); the user defaults to `default_user`.
fn parse_jump_host(spec: &str, default_user: &str) -> anyhow::Result<(String, String, u16)> {
    let (user, rest) = match spec.split_once('@') {
        Some((user, rest)) if !user.is_empty() => (user.to_owned(), rest),
        Some(_) => anyhow::bail!("empty user before @"),
        None => (default_user.to_owned(), spec),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (
            host.to_owned(),
            port.parse::<u16>()
                .with_context(|| format!("{port:?} is not a port"))?,
        ),
        _ => (rest.trim_matches(['[', ']']).to_owned(), 22),
    };
    if host.is_empty() {
        anyhow::bail!("no host name");
    }
    Ok((user, host, port))
}

/// Whether the VM list holds a server (phase 2 cannot run without one).
pub fn has_server(vms: &[ProvisionedVm]) -> bool {
    vms.iter().any(|vm| vm.role == Role::Server)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn jump_host_forms() {
        assert_eq!(
            parse_jump_host("root@pve1:2222", "provision").unwrap(),
            ("root".to_owned(), "pve1".to_owned(), 2222)
        );
        assert_eq!(
            parse_jump_host("bastion", "provision").unwrap(),
            ("provision".to_owned(), "bastion".to_owned(), 22)
        );
        assert!(parse_jump_host("@x", "u").is_err());
        assert!(parse_jump_host("u@x:notaport", "u").is_err());
    }

    #[test]
    fn redaction_replaces_every_occurrence() {
        let secrets = vec!["K10abcdef::server:s3cr3t".to_owned()];
        assert_eq!(
            redact(
                "token K10abcdef::server:s3cr3t and K10abcdef::server:s3cr3t",
                &secrets
            ),
            "token <redacted> and <redacted>"
        );
        // Short strings are never treated as secrets (they would mangle unrelated text).
        assert_eq!(redact("a b c", &["b".to_owned()]), "a b c");
    }

    #[test]
    fn guest_nodes_read_expected_keys_and_fall_back_to_known_hosts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("s1.pub"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHb0 s1\n",
        )
        .unwrap();
        let vm = |name: &str, role| ProvisionedVm {
            name: name.to_owned(),
            vmid: 100,
            node: "pve1".to_owned(),
            address: "10.0.0.1".parse().unwrap(),
            role,
            group: "g".to_owned(),
            gpus: Vec::new(),
            seconds: 0.0,
        };
        let nodes =
            guest_nodes(&[vm("s1", Role::Server), vm("a1", Role::Agent)], dir.path()).unwrap();
        assert_eq!(
            nodes[0].expected_host_keys,
            ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHb0 s1"]
        );
        assert!(nodes[1].expected_host_keys.is_empty());
    }
}
