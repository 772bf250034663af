//! `--simulate`: run against the in-process Proxmox simulator, whose state lives in the
//! workspace (`.provision/sim/state.json`) so `plan`, `up`, `down` behave across runs exactly as
//! against a real Proxmox.
//!
//! The client talks to it as to a real Proxmox: HTTPS on loopback with the certificate
//! fingerprint pinned, and the fixture's full-privilege API token (so GPUs go through PCI
//! resource mappings, as they should for real users). Only when the fixture has no such token
//! does it log in as `root@pam` with a ticket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use pve_sim::{Inventory, SimConfig, SimError, SimHandle, Simulator};

use crate::error::UserError;
use crate::inventory::AuthKind;
use crate::pve::PveApi;
use crate::pve::auth::{Auth, Secret};
use crate::pve::client::{ClientConfig, PveClient};
use crate::pve::split::TokenWithRoot;
use crate::pve::tls::TlsMode;

use super::session::Connection;

/// Simulator options (`--sim-*`).
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Builtin name or a TOML file; default: the fixture that fits the profile.
    pub inventory: Option<String>,
    pub request_log: Option<PathBuf>,
    pub time_scale: f64,
    pub fail_rate: f64,
    pub task_fail_rate: f64,
    /// Seeds failure injection and generated ids (MACs, UUIDs).
    pub seed: u64,
    /// Which credentials provision uses.
    pub auth: SimAuth,
}

/// Which of the simulated Proxmox's credentials provision logs in with (`--sim-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimAuth {
    /// The full-privilege API token (GPUs through resource mappings; no root-only keys).
    Token,
    /// `root@pam` with a ticket (raw PCI ids, every key).
    Root,
    /// The token, plus `root@pam` for requests with root-only keys.
    TokenRoot,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            inventory: None,
            request_log: None,
            time_scale: DEFAULT_TIME_SCALE,
            fail_rate: 0.0,
            task_fail_rate: 0.0,
            seed: 0,
            auth: SimAuth::TokenRoot,
        }
    }
}

/// Task durations × this by default: a 20 s disk import takes 0.4 s.
pub const DEFAULT_TIME_SCALE: f64 = 0.02;

/// The builtin simulator inventory that fits a built-in profile (by cluster name, then by the
/// number of Proxmox nodes).
pub fn inventory_for(profile_nodes: &[String], cluster: &str) -> &'static str {
    match cluster {
        // PCIe A100s, as the a100-8x profile filters; `pve-a100` holds SXM4 modules (HGX boards),
        // which the profile refuses to match.
        "a100" => "pve-a100-pcie",
        // The working host (GPU in its own IOMMU group); `pve-sentinel` shows the shared group.
        "sentinel" => "pve-sentinel-acs",
        "ci" => "pve-ci",
        "homelab" | "mlops" => "pve-homelab",
        "vllm" => "pve-gpu",
        _ if profile_nodes.len() >= 4 => "pve-cluster-4",
        _ if profile_nodes.len() >= 2 => "pve-homelab",
        _ => "pve-ci",
    }
}

/// A running simulator plus a connection to it.
pub struct Simulated {
    pub connection: Connection,
    pub handle: SimHandle,
}

/// Where `--simulate` keeps the simulated cluster (`<state_dir>/sim/state.json`).
pub fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join("sim").join("state.json")
}

/// Start the simulator for a profile (`profile_nodes`, `cluster`), its state kept in
/// `<state_dir>/sim/state.json`.
pub async fn start(
    state_dir: &Path,
    profile_nodes: &[String],
    cluster: &str,
    options: &SimOptions,
) -> anyhow::Result<Simulated> {
    let name = options
        .inventory
        .clone()
        .unwrap_or_else(|| inventory_for(profile_nodes, cluster).to_owned());
    let inventory = Inventory::builtin_or_load(&name)
        .with_context(|| format!("loading simulator inventory {name}"))?;
    let state_file = state_file(state_dir);
    if let Some(dir) = state_file.parent() {
        // The simulated Proxmox keeps uploaded seeds (private host keys): private like `.provision/`.
        if let Some(workspace_state) = dir.parent() {
            crate::files::create_private_dir(workspace_state)?;
        }
        crate::files::create_private_dir(dir)?;
    }
    let credentials = credentials(&inventory, &name, options.auth)?;
    let mut config = SimConfig::new(inventory);
    config.time_scale = options.time_scale;
    config.fail_rate = options.fail_rate;
    config.task_fail_rate = options.task_fail_rate;
    config.request_log = options.request_log.clone();
    config.state_file = Some(state_file);
    config.seed = options.seed;
    let handle = match Simulator::start(config).await {
        Ok(handle) => handle,
        Err(SimError::StateParse { path, source }) => {
            return Err(invalid_state_file(&path, &source).into());
        }
        Err(error) => {
            return Err(anyhow::Error::new(error).context("starting the Proxmox simulator"));
        }
    };
    let connect = |auth: Auth| -> anyhow::Result<Arc<dyn PveApi>> {
        Ok(Arc::new(PveClient::new(ClientConfig::new(
            handle.base_url(),
            auth,
            TlsMode::Fingerprint(handle.fingerprint()),
        ))?))
    };
    let connection = match credentials {
        SimCredentials::Token { auth, user } => Connection {
            api: connect(auth)?,
            auth: AuthKind::Token {
                user,
                may_create_mappings: true,
            },
        },
        SimCredentials::Root { auth } => Connection {
            api: connect(auth)?,
            auth: AuthKind::RootTicket,
        },
        SimCredentials::TokenWithRoot { token, user, root } => Connection {
            api: Arc::new(TokenWithRoot::new(connect(token)?, connect(root)?)),
            auth: AuthKind::TokenWithRoot { user },
        },
    };
    Ok(Simulated { connection, handle })
}

/// A torn or hand-edited simulator state file: what it is, and how to set it aside.
pub(crate) fn invalid_state_file(path: &str, error: &serde_json::Error) -> UserError {
    let quoted = crate::nodeprep::shell::quote(path);
    let hint = format!(
        "this file is the Proxmox simulator's own state (the simulated cluster), not a real \
         cluster's and not provision's state; set it aside to start with an empty \
         simulated cluster: mv {quoted} {}",
        crate::nodeprep::shell::quote(&format!("{path}.invalid"))
    );
    UserError::new(
        format!("simulator state file {path} is not valid: {error}"),
        Some(&hint),
    )
}

/// The simulated Proxmox's credentials, as `--sim-auth` chose them.
enum SimCredentials {
    Token {
        auth: Auth,
        user: String,
    },
    Root {
        auth: Auth,
    },
    TokenWithRoot {
        token: Auth,
        user: String,
        root: Auth,
    },
}

/// The fixture's full-privilege API token and/or `root@pam` with a ticket, as `choice` says;
/// without a full-privilege token in the fixture, `root@pam` alone.
fn credentials(
    inventory: &Inventory,
    name: &str,
    choice: SimAuth,
) -> anyhow::Result<SimCredentials> {
    let token = inventory
        .tokens
        .iter()
        .find(|token| token.privileges.iter().any(|p| p == "*"));
    let root = || -> anyhow::Result<Auth> {
        let password = inventory
            .users
            .iter()
            .find(|user| user.userid == "root@pam")
            .map(|user| user.password.clone())
            .with_context(|| format!("simulator inventory {name} has no root@pam user"))?;
        Ok(Auth::Ticket {
            username: "root@pam".to_owned(),
            password: Secret::new(password),
        })
    };
    let Some(token) = token else {
        return Ok(SimCredentials::Root { auth: root()? });
    };
    let token_auth = Auth::parse_api_token(&format!("{}={}", token.tokenid, token.secret))
        .with_context(|| format!("simulator inventory {name}: malformed token id"))?;
    let user = token.tokenid.clone();
    Ok(match choice {
        SimAuth::Token => SimCredentials::Token {
            auth: token_auth,
            user,
        },
        SimAuth::Root => SimCredentials::Root { auth: root()? },
        SimAuth::TokenRoot => SimCredentials::TokenWithRoot {
            token: token_auth,
            user,
            root: root()?,
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_mv_hint_quotes_paths_for_the_shell() {
        assert_eq!(
            crate::nodeprep::shell::quote("./.provision/sim/state.json"),
            "./.provision/sim/state.json"
        );
        assert_eq!(
            crate::nodeprep::shell::quote("/tmp/my ws/state.json"),
            "'/tmp/my ws/state.json'"
        );
        assert_eq!(crate::nodeprep::shell::quote("it's"), r"'it'\''s'");
        let error = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let hint = invalid_state_file("/tmp/a b/state.json", &error)
            .hint
            .unwrap_or_default();
        assert!(
            hint.ends_with("mv '/tmp/a b/state.json' '/tmp/a b/state.json.invalid'"),
            "{hint}"
        );
    }
}
