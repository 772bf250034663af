//! K3s HA install: binary fetch and verification, config.yaml, systemd units, join order, manifests (NVIDIA, storage, GitOps), kubeconfig.
//!
//! Everything here is pure (builders of files and commands, parsers, decisions) except fetching the
//! binary on the workstation ([`release`]) and the token file in the workspace ([`token`]).

pub mod cluster;
pub mod config;
pub mod drain;
pub mod etcd;
pub mod gitops;
pub mod install;
pub mod kubeconfig;
pub mod manifests;
pub mod release;
pub mod rolling;
pub mod status;
pub mod templates;
pub mod token;

/// Where provision installs the k3s binary.
pub const BINARY_PATH: &str = "/usr/local/bin/k3s";
/// The k3s configuration file (mode 0600: it holds the token).
pub const CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml";
/// The kubeconfig k3s writes on servers.
pub const KUBECONFIG_PATH: &str = "/etc/rancher/k3s/k3s.yaml";
/// Auto-deploying manifests directory on servers.
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";
/// Air-gap image tarballs k3s imports at start.
pub const IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images";
/// The server token file k3s writes (`K10<ca hash>::server:<secret>`).
pub const SERVER_TOKEN_PATH: &str = "/var/lib/rancher/k3s/server/token";
/// The datastore directory of a server; non-empty (besides snapshots) once it belongs to a cluster.
pub const SERVER_DB_DIR: &str = "/var/lib/rancher/k3s/server/db";
/// Port of the Kubernetes API on servers.
pub const API_PORT: u16 = 6443;

/// Errors of the k3s layer.
#[derive(Debug, thiserror::Error)]
pub enum K3sError {
    #[error("template {name}: {message}")]
    Template { name: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("checksum file for {asset}: {message}")]
    Checksums { asset: String, message: String },
    #[error("{what}: sha256 is {actual}, expected {expected}")]
    ChecksumMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("downloading {url}: {message}")]
    Download { url: String, message: String },
    #[error("air-gapped k3s binary {path} needs `airgap.k3s_sha256` in the profile")]
    MissingSha256 { path: String },
    #[error("cannot read `k3s kubectl get nodes -o json` output: {message}")]
    NodeList { message: String },
    #[error(
        "servers {servers} hold cluster data but none runs with this workspace's token; refusing to cluster-init over an existing cluster (start one of them, or restore from an etcd snapshot)"
    )]
    NoHealthyServer { servers: String },
    #[error(
        "server {server} holds data of a cluster with a different token; wipe {SERVER_DB_DIR} on it (or use the token of that cluster) before it can join"
    )]
    ForeignCluster { server: String },
    #[error("the profile has no server nodes")]
    NoServers,
    #[error("{what} {value:?} starts with `-`: kubectl would take it for an option; refusing it")]
    OptionLikeValue { what: String, value: String },
    #[error("cluster CA certificate {}: {message}", token::SERVER_CA_PATH)]
    CaCertificate { message: String },
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
}

/// k3s failures end the run as failures (exit 2): a re-run continues where this one stopped.
impl crate::error::UserFacing for K3sError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::Failure
    }

    fn hint(&self) -> Option<String> {
        let hint = match self {
            K3sError::ChecksumMismatch { .. } => {
                "the file is not the one the checksum names: download it again, or check the sha256 in the profile"
            }
            K3sError::MissingSha256 { .. } => {
                "add airgap.k3s_sha256 (`sha256sum` of the binary): every file that reaches a node is checked"
            }
            K3sError::Template { .. }
            | K3sError::Io { .. }
            | K3sError::Checksums { .. }
            | K3sError::Download { .. }
            | K3sError::NodeList { .. }
            | K3sError::NoHealthyServer { .. }
            | K3sError::ForeignCluster { .. }
            | K3sError::NoServers
            | K3sError::OptionLikeValue { .. }
            | K3sError::CaCertificate { .. }
            | K3sError::Kubeconfig { .. } => return None,
        };
        Some(hint.to_owned())
    }
}

impl From<crate::files::FileError> for K3sError {
    fn from(error: crate::files::FileError) -> Self {
        K3sError::Io {
            path: format!("{} ({})", error.path.display(), error.action),
            source: error.source,
        }
    }
}
