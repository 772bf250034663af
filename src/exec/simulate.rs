//! `--simulate`: run against the in-process Proxmox simulator, whose state lives in the
//! workspace (`.provision/sim/state.json`) so `plan`, `up`, `down` behave across runs exactly as
//! against a real Proxmox.
//!
//! Not yet declared in `exec/mod.rs`: add `pub mod simulate;` and call [`start`] from
//! `session::open` once the pve-sim crate (Simulator, SimConfig, Inventory) is merged.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use pve_sim::{Inventory, SimConfig, SimHandle, Simulator};

use crate::inventory::AuthKind;
use crate::pve::auth::{Auth, Secret};
use crate::pve::client::{ClientConfig, PveClient};
use crate::pve::tls::TlsMode;
use crate::workspace::Workspace;

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
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            inventory: None,
            request_log: None,
            time_scale: 0.05,
            fail_rate: 0.0,
            task_fail_rate: 0.0,
        }
    }
}

/// The builtin simulator inventory that fits a built-in profile (by cluster name, then by the
/// number of Proxmox nodes).
pub fn inventory_for(profile_nodes: &[String], cluster: &str) -> &'static str {
    match cluster {
        "a100" => "pve-a100",
        "sentinel" => "pve-sentinel",
        "ci" => "pve-ci",
        "homelab" | "mlops" => "pve-homelab",
        "vllm" => "pve-gpu",
        _ if profile_nodes.len() >= 4 => "pve-cluster-4",
        _ => "pve-homelab",
    }
}

/// A running simulator plus a root@pam connection to it.
pub struct Simulated {
    pub connection: Connection,
    pub handle: SimHandle,
}

/// Start the simulator for `profile_nodes`, state kept in `<workspace>/.provision/sim/`.
pub async fn start(
    workspace: &Workspace,
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
    let root_password = inventory
        .users
        .iter()
        .find(|user| user.userid == "root@pam")
        .map(|user| user.password.clone())
        .with_context(|| format!("simulator inventory {name} has no root@pam user"))?;
    let sim_dir = workspace.state_dir().join("sim");
    std::fs::create_dir_all(&sim_dir).with_context(|| format!("creating {}", sim_dir.display()))?;
    let mut config = SimConfig::new(inventory);
    config.time_scale = options.time_scale;
    config.fail_rate = options.fail_rate;
    config.task_fail_rate = options.task_fail_rate;
    config.request_log = options.request_log.clone();
    config.state_file = Some(sim_dir.join("state.json"));
    config.seed = std::process::id().into();
    let handle = Simulator::start(config)
        .await
        .context("starting the Proxmox simulator")?;
    let client = PveClient::new(ClientConfig::new(
        handle.base_url(),
        Auth::Ticket {
            username: "root@pam".to_owned(),
            password: Secret::new(root_password),
        },
        TlsMode::Fingerprint(handle.fingerprint()),
    ))?;
    Ok(Simulated {
        connection: Connection {
            api: Arc::new(client),
            auth: AuthKind::RootTicket,
        },
        handle,
    })
}
