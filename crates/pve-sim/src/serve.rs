//! `provision sim serve`: runs the simulator standalone until Ctrl-C, printing what a user needs
//! to point provision (or curl) at it.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::inventory::{Inventory, InventoryError};
use crate::{SimConfig, SimError, SimMode, Simulator};

/// Arguments of `provision sim serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8006")]
    pub listen: SocketAddr,
    /// Inventory: a builtin fixture name (pve-a100, pve-sentinel, pve-sentinel-acs, pve-iommu-off, pve-cluster-4,
    /// pve-ci, pve-homelab, pve-gpu) or a TOML file.
    #[arg(long, default_value = "pve-ci")]
    pub inventory: String,
    /// Simulated time factor: 1.0 = realistic task durations, 0.01 = 100× faster.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Append one JSON line per request to this file.
    #[arg(long)]
    pub request_log: Option<PathBuf>,
    /// Probability that a request answers 500 before acting.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Probability that a task fails (and changes nothing).
    #[arg(long, default_value_t = 0.0)]
    pub task_fail_rate: f64,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Keep the cluster's state in this file across runs.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Seed for failure injection and generated ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Why `serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot load inventory '{name}'")]
    Inventory {
        name: String,
        #[source]
        source: InventoryError,
    },
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error("cannot wait for Ctrl-C")]
    Signal(#[source] std::io::Error),
}

/// Runs the simulator until Ctrl-C; prints URL, fingerprint and credentials to stdout.
pub async fn serve(args: ServeArgs) -> Result<(), ServeError> {
    let inventory =
        Inventory::builtin_or_load(&args.inventory).map_err(|source| ServeError::Inventory {
            name: args.inventory.clone(),
            source,
        })?;
    let mut config = SimConfig::new(inventory.clone());
    config.listen = args.listen;
    config.time_scale = args.time_scale;
    config.request_log = args.request_log;
    config.fail_rate = args.fail_rate;
    config.task_fail_rate = args.task_fail_rate;
    config.latency_ms = args.latency_ms;
    config.state_file = args.state_file;
    config.seed = args.seed;
    config.mode = SimMode::Auto;
    let handle = Simulator::start(config).await?;
    print_banner(&handle.base_url(), &handle.fingerprint(), &inventory);
    let signal = tokio::signal::ctrl_c().await;
    handle.shutdown().await;
    signal.map_err(ServeError::Signal)
}

#[allow(clippy::print_stdout)]
fn print_banner(url: &str, fingerprint: &str, inventory: &Inventory) {
    println!("Proxmox VE simulator listening on {url}/api2/json");
    println!("certificate fingerprint (SHA-256): {fingerprint}");
    let nodes: Vec<&str> = inventory.nodes.iter().map(|n| n.name.as_str()).collect();
    println!("nodes: {}", nodes.join(", "));
    for token in &inventory.tokens {
        println!("token: PVEAPIToken={}={}", token.tokenid, token.secret);
    }
    for user in &inventory.users {
        println!("user: {} password {}", user.userid, user.password);
    }
    println!("export PROXMOX_VE_ENDPOINT={url}/");
    if let Some(token) = inventory.tokens.first() {
        println!(
            "export PROXMOX_VE_API_TOKEN='{}={}'",
            token.tokenid, token.secret
        );
    }
    println!("press Ctrl-C to stop");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn parses_every_flag() {
        let command = Command::parse_from([
            "serve",
            "--listen",
            "127.0.0.1:18006",
            "--inventory",
            "pve-a100",
            "--time-scale",
            "0.01",
            "--request-log",
            "r.jsonl",
            "--fail-rate",
            "0.1",
            "--task-fail-rate",
            "0.2",
            "--latency-ms",
            "5",
            "--state-file",
            "s.json",
            "--seed",
            "7",
        ]);
        let args = command.serve;
        assert_eq!(args.listen.port(), 18006);
        assert_eq!(args.inventory, "pve-a100");
        assert!((args.time_scale - 0.01).abs() < f64::EPSILON);
        assert_eq!(args.latency_ms, 5);
        assert_eq!(args.seed, 7);
        let defaults = Command::parse_from(["serve"]).serve;
        assert_eq!(defaults.listen.to_string(), "127.0.0.1:8006");
        assert!(defaults.state_file.is_none());
    }

    #[tokio::test]
    async fn unknown_inventory_is_an_error() {
        let args = Command::parse_from(["serve", "--inventory", "no-such-fixture.toml"]).serve;
        assert!(matches!(
            serve(args).await,
            Err(ServeError::Inventory { .. })
        ));
    }
}
