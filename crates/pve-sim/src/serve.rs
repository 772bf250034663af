//! `provision sim serve`: runs the simulator standalone until Ctrl-C, printing what a user needs
//! to point provision (or curl) at it.
//!
//! Security defaults: it listens on loopback unless told otherwise (and warns loudly when not);
//! the API token secrets and user passwords of the inventory are replaced by random ones at each
//! start, printed once, unless given with `--token-secret` / `--root-password` (or their
//! environment variables, which unlike flags do not show in `ps`).

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
    /// Secret of every API token of the inventory (default: random at each start, printed once).
    #[arg(long, env = "PVE_SIM_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Password of root@pam (default: random at each start, printed once); other users of the
    /// inventory always get random passwords.
    #[arg(long, env = "PVE_SIM_ROOT_PASSWORD", hide_env_values = true)]
    pub root_password: Option<String>,
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
    let mut inventory =
        Inventory::builtin_or_load(&args.inventory).map_err(|source| ServeError::Inventory {
            name: args.inventory.clone(),
            source,
        })?;
    set_credentials(
        &mut inventory,
        args.token_secret.as_deref(),
        args.root_password.as_deref(),
    );
    if !args.listen.ip().is_loopback() {
        warn_not_loopback(args.listen);
    }
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

/// Replaces the fixture's well-known credentials: every token gets `token_secret` (else a random
/// UUID-like secret), root@pam `root_password` (else a random password), other users a random one.
pub(crate) fn set_credentials(
    inventory: &mut Inventory,
    token_secret: Option<&str>,
    root_password: Option<&str>,
) {
    use rand::Rng as _;
    use rand::distr::Alphanumeric;
    let mut rng = rand::rng();
    for token in &mut inventory.tokens {
        token.secret = match token_secret {
            Some(secret) => secret.to_owned(),
            None => crate::state::uuid(rng.random::<[u8; 16]>()),
        };
    }
    for user in &mut inventory.users {
        user.password = match root_password {
            Some(password) if user.userid == "root@pam" => password.to_owned(),
            Some(_) | None => (&mut rng)
                .sample_iter(Alphanumeric)
                .take(24)
                .map(char::from)
                .collect(),
        };
    }
}

#[allow(clippy::print_stderr)]
fn warn_not_loopback(listen: SocketAddr) {
    tracing::warn!(%listen, "the simulator listens beyond loopback");
    eprintln!(
        "WARNING: listening on {listen}, which is not a loopback address: anyone who can reach \
         it can use the simulated Proxmox with the credentials printed below. The simulator is a \
         test tool; prefer --listen 127.0.0.1:PORT."
    );
}

/// What `sim serve` prints: URL, fingerprint, credentials, and lines to paste into a shell.
pub(crate) fn banner(url: &str, fingerprint: &str, inventory: &Inventory) -> String {
    let nodes: Vec<&str> = inventory.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut lines = vec![
        format!("Proxmox VE simulator listening on {url}/api2/json"),
        format!("certificate fingerprint (SHA-256): {fingerprint}"),
        format!("nodes: {}", nodes.join(", ")),
    ];
    for token in &inventory.tokens {
        lines.push(format!(
            "token: PVEAPIToken={}={}",
            token.tokenid, token.secret
        ));
    }
    for user in &inventory.users {
        lines.push(format!("user: {} password {}", user.userid, user.password));
    }
    lines.push(format!("export PROXMOX_VE_ENDPOINT={url}/"));
    if let Some(token) = inventory.tokens.first() {
        lines.push(format!(
            "export PROXMOX_VE_API_TOKEN='{}={}'",
            token.tokenid, token.secret
        ));
    }
    lines.push(format!("export PROXMOX_VE_FINGERPRINT='{fingerprint}'"));
    lines.push(format!(
        "# provision pins the certificate from PROXMOX_VE_FINGERPRINT, or from provision.toml: [proxmox] fingerprint = \"{fingerprint}\""
    ));
    lines.push("press Ctrl-C to stop".to_owned());
    lines.join("\n")
}

#[allow(clippy::print_stdout)]
fn print_banner(url: &str, fingerprint: &str, inventory: &Inventory) {
    println!("{}", banner(url, fingerprint, inventory));
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

    #[test]
    fn credentials_are_random_at_each_start_unless_given() {
        let fixture = Inventory::builtin("pve-ci").unwrap();
        let mut first = fixture.clone();
        let mut second = fixture.clone();
        set_credentials(&mut first, None, None);
        set_credentials(&mut second, None, None);
        for ((a, b), original) in first.tokens.iter().zip(&second.tokens).zip(&fixture.tokens) {
            assert_ne!(a.secret, original.secret);
            assert_ne!(a.secret, b.secret);
            assert_eq!(a.secret.len(), 36);
        }
        for ((a, b), original) in first.users.iter().zip(&second.users).zip(&fixture.users) {
            assert_ne!(a.password, original.password);
            assert_ne!(a.password, b.password);
        }
        let mut given = fixture;
        set_credentials(&mut given, Some("s3cr3t"), Some("pw"));
        assert!(given.tokens.iter().all(|t| t.secret == "s3cr3t"));
        let root = given.users.iter().find(|u| u.userid == "root@pam").unwrap();
        assert_eq!(root.password, "pw");
    }

    #[test]
    fn the_export_lines_work_as_printed_in_a_shell() {
        let mut inventory = Inventory::builtin("pve-ci").unwrap();
        set_credentials(&mut inventory, None, None);
        let fingerprint = "AB:CD";
        let text = banner("https://127.0.0.1:8006", fingerprint, &inventory);
        let exports: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("export ") || l.starts_with('#'))
            .collect();
        assert_eq!(exports.len(), 4, "{text}");
        let script = format!(
            "{}\nprintf '%s\\n' \"$PROXMOX_VE_ENDPOINT\" \"$PROXMOX_VE_API_TOKEN\" \"$PROXMOX_VE_FINGERPRINT\"",
            exports.join("\n")
        );
        let output = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let token = &inventory.tokens[0];
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            format!(
                "https://127.0.0.1:8006/\n{}={}\n{fingerprint}\n",
                token.tokenid, token.secret
            )
        );
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
