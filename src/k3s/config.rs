//! `/etc/rancher/k3s/config.yaml` and the systemd units, rendered from `templates/`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::profile::Profile;
use crate::profile::model::Role;

use super::templates::Templates;
use super::token::K3sToken;
use super::{API_PORT, BINARY_PATH, K3sError};

/// How a node finds its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinMode {
    /// The bootstrap server: `cluster-init: true` (ignored by k3s once etcd data exists).
    Init,
    /// `server: <url>`.
    Join { server_url: String },
}

/// `https://<address>:6443` (IPv6 in brackets).
pub fn server_url(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => format!("https://{v4}:{API_PORT}"),
        IpAddr::V6(v6) => format!("https://[{v6}]:{API_PORT}"),
    }
}

/// One node's k3s settings that are not shared by the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub name: String,
    pub address: IpAddr,
    pub role: Role,
    pub join: JoinMode,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
}

#[derive(Serialize)]
struct ConfigContext<'a> {
    role: &'static str,
    cluster_init: bool,
    server_url: Option<&'a str>,
    token: &'a str,
    node_name: &'a str,
    node_ip: String,
    node_labels: Vec<String>,
    node_taints: &'a [String],
    cluster_cidr: String,
    service_cidr: String,
    flannel_backend: String,
    tls_san: Vec<String>,
    disable: Vec<String>,
}

/// Packaged components k3s must not deploy: the profile's list, plus `local-storage` when provision
/// deploys its own local-path-provisioner for a `fast-scratch` class. Sorted, no duplicates.
pub fn disabled_components(profile: &Profile) -> Vec<String> {
    let mut disable = profile.cluster.disable.clone();
    if profile.storage.fast_scratch.is_some() {
        disable.push("local-storage".to_owned());
    }
    disable.sort();
    disable.dedup();
    disable
}

/// Names the API certificate must carry besides the servers' own addresses: the VIP and the profile's SANs.
pub fn tls_sans(profile: &Profile) -> Vec<String> {
    let mut sans: Vec<String> = profile
        .cluster
        .api_vip
        .iter()
        .map(ToString::to_string)
        .collect();
    for san in &profile.cluster.tls_san {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    sans
}

/// The role's name in templates and unit names.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Server => "server",
        Role::Agent => "agent",
    }
}

/// Render config.yaml for one node. Cluster-wide settings (CIDRs, flannel, SANs, disabled components) come
/// only from the profile, so they are identical on every server.
pub fn render_config(
    templates: &Templates,
    profile: &Profile,
    node: &NodeSettings,
    token: &K3sToken,
) -> Result<String, K3sError> {
    let (cluster_init, server_url) = match &node.join {
        JoinMode::Init => (true, None),
        JoinMode::Join { server_url } => (false, Some(server_url.as_str())),
    };
    let flannel_backend = serde_json::to_value(profile.cluster.flannel_backend)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| "vxlan".to_owned());
    let context = ConfigContext {
        role: role_name(node.role),
        cluster_init,
        server_url,
        token: token.expose(),
        node_name: &node.name,
        node_ip: node.address.to_string(),
        node_labels: node
            .labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect(),
        node_taints: &node.taints,
        cluster_cidr: profile.cluster.cluster_cidr.to_string(),
        service_cidr: profile.cluster.service_cidr.to_string(),
        flannel_backend,
        tls_san: tls_sans(profile),
        disable: disabled_components(profile),
    };
    templates.render("k3s/config.yaml.j2", &context)
}

/// `k3s.service` or `k3s-agent.service`.
pub fn unit_name(role: Role) -> &'static str {
    match role {
        Role::Server => "k3s.service",
        Role::Agent => "k3s-agent.service",
    }
}

/// `/etc/systemd/system/<unit>`.
pub fn unit_path(role: Role) -> String {
    format!("/etc/systemd/system/{}", unit_name(role))
}

/// `/etc/systemd/system/<unit>.env` (mode 0600).
pub fn env_path(role: Role) -> String {
    format!("{}.env", unit_path(role))
}

/// The systemd unit.
pub fn render_unit(templates: &Templates, role: Role) -> Result<String, K3sError> {
    let template = match role {
        Role::Server => "systemd/k3s.service.j2",
        Role::Agent => "systemd/k3s-agent.service.j2",
    };
    templates.render(
        template,
        &serde_json::json!({
            "mode": role_name(role),
            "env_file": env_path(role),
            "binary": BINARY_PATH,
        }),
    )
}

/// The unit's environment file. Nothing secret goes here (the token lives in config.yaml), but it is
/// kept 0600 like install.sh's, since operators add proxy credentials to it.
pub fn env_file_content() -> &'static str {
    "# Written by provision: environment for k3s (e.g. HTTP_PROXY, NO_PROXY). Mode 0600.\n"
}
