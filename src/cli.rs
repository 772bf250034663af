//! Command-line types (clap derive) and nothing else: parsing happens in `main`, work in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  provision init                          create a workspace in the current directory
  provision profiles                      list the built-in profiles
  provision profiles show homelab-ha      print one as shipped, to start your own
  provision validate --profile a100-8x    check a built-in profile
  provision validate --profile ./my.toml  check a file (a value with / or .toml is a path)
  provision validate --profile a100-8x --output json
  provision doctor --profile a100-8x      what would stop `up` on this Proxmox, with fixes
  provision up --profile a100-8x --simulate   phase 1 against the built-in Proxmox simulator
  provision sim serve --inventory pve-a100    a simulated Proxmox for other tools
  provision completions bash > ~/.local/share/bash-completion/completions/provision

Exit codes: 0 success, 1 user or profile error, 2 remote or internal failure, 3 unhealthy
(status: reached, but a VM or the cluster is unhealthy).";

/// Build GPU Kubernetes (HA K3s) clusters on Proxmox VE from one profile.
#[derive(Debug, Parser)]
#[command(name = "provision", version, about, after_help = EXAMPLES, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every verb accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Workspace directory (holds provision.toml, profiles/ and .provision/).
    #[arg(long, global = true, value_name = "DIR", default_value = ".")]
    pub workspace: PathBuf,
    /// More detail on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Format of the data on stdout.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// No colours (also when NO_COLOR is set).
    #[arg(long, global = true)]
    pub no_color: bool,
}

/// What stdout carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// For programs (one JSON document).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a workspace: a commented provision.toml, .provision/ (0700) and .gitignore.
    Init(InitArgs),
    /// Parse and check a profile; errors point at file:line:column.
    Validate(ValidateArgs),
    /// List the built-in profiles (and the workspace's own profiles/*.toml), or print one.
    Profiles(ProfilesArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Show what `up` would change on Proxmox (terraform-like diff, or --output json).
    Plan(PlanArgs),
    /// Create or converge the cluster: VMs on Proxmox (phase 1), then over SSH node preparation and
    /// HA k3s (phase 2); writes the kubeconfig.
    Up(UpArgs),
    /// Stop and purge the cluster's VMs (only those in the state carrying its tag).
    Down(DownArgs),
    /// Show the state's VMs as Proxmox sees them and the cluster as its servers see it: nodes, etcd,
    /// findings.
    ///
    /// Per node: Ready, cordoned, kubelet version, roles, etcd member; etcd's health from the API
    /// server's readiness checks.
    ///
    /// The cluster is asked over SSH on the first server that answers. Exit codes: 0 healthy (a
    /// cordoned or unknown node, or mixed minor versions, is reported as degraded), 2 when no server
    /// answers, 3 when a VM is not running or the cluster is unhealthy (a node NotReady or missing, a
    /// server without its etcd member, etcd not ok, a kubelet newer than the servers).
    Status(StatusArgs),
    /// Check the Proxmox side read-only: API, credentials and privileges, storages, bridge,
    /// virtualisation, GPUs and IOMMU groups, hugepages, the plan; exit 1 when `up` would stop.
    Doctor(ClusterArgs),
    /// Print the workspace kubeconfig's path, or merge its context into ~/.kube/config.
    Kubeconfig(KubeconfigArgs),
    /// Cordon a node and evict its pods like `kubectl drain`, after a preflight that lists every
    /// pod's fate and refuses (changing nothing) when a pod needs a flag not given.
    Drain(DrainArgs),
    /// Make a drained (cordoned) node schedulable again; a no-op on a schedulable node.
    Uncordon(UncordonArgs),
    /// Replace a node (server or agent) by a new VM with the same name, address, GPU mappings and
    /// labels: etcd snapshot, drain, member removal, Node deletion, new VM, join, checks.
    ///
    /// Refused, changing nothing, unless etcd stays healthy without the node (a quorum of healthy
    /// voting members, no learner, no other server being changed). A dead node (VM gone or
    /// unreachable) is replaced without drain. Every step is journaled in the state: after a crash,
    /// run the same command again and it resumes. `plan --replace-node NODE` previews it.
    ReplaceNode(ReplaceNodeArgs),
    /// The Proxmox VE simulator (what `--simulate` runs in-process).
    #[command(subcommand)]
    Sim(SimCommand),
}

/// `provision sim …`
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve the simulated Proxmox API over HTTPS until Ctrl-C; prints URL, fingerprint, tokens.
    Serve(SimServeArgs),
}

#[derive(Debug, Args)]
pub struct SimServeArgs {
    #[command(flatten)]
    pub serve: pve_sim::ServeArgs,
}

/// Profile plus where Proxmox is (real, or the in-process simulator).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// A built-in profile name, a workspace profile or a path to a TOML file.
    #[arg(short, long, value_name = "NAME|PATH")]
    pub profile: String,
    #[command(flatten)]
    pub sim: SimArgs,
}

/// `--simulate` and the simulator's options.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Run against the in-process Proxmox simulator (state kept in .provision/sim/).
    #[arg(long)]
    pub simulate: bool,
    /// Simulator inventory: a built-in name (pve-a100, pve-homelab …) or a TOML file.
    #[arg(long, value_name = "NAME|FILE", requires = "simulate")]
    pub sim_inventory: Option<String>,
    /// Write one JSON line per simulated request to FILE.
    #[arg(long, value_name = "FILE", requires = "simulate")]
    pub sim_request_log: Option<PathBuf>,
    /// Simulated task durations × X (1.0 = realistic).
    // The simulator's DEFAULT_TIME_SCALE; a test in `commands` keeps the two equal.
    #[arg(long, value_name = "X", default_value_t = 0.02, requires = "simulate")]
    pub sim_time_scale: f64,
    /// Probability that a simulated request answers 500.
    #[arg(long, value_name = "P", default_value_t = 0.0, requires = "simulate")]
    pub sim_fail_rate: f64,
    /// Probability that a simulated task fails.
    #[arg(long, value_name = "P", default_value_t = 0.0, requires = "simulate")]
    pub sim_task_fail_rate: f64,
    /// Seed of the simulator's failure injection and generated ids.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "simulate")]
    pub sim_seed: u64,
    /// Credentials provision uses against the simulator: its API token, a root@pam ticket, or
    /// the token plus root@pam only for keys no token may set (hugepages, affinity).
    #[arg(long, value_enum, default_value_t = SimAuth::TokenRoot, requires = "simulate")]
    pub sim_auth: SimAuth,
}

/// `--sim-auth`: which of the simulated Proxmox's credentials provision logs in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimAuth {
    /// The full-privilege API token (GPUs through resource mappings; no root-only keys).
    Token,
    /// `root@pam` with a ticket (raw PCI ids, every key).
    Root,
    /// The token, plus `root@pam` for requests with root-only keys.
    #[value(name = "token+root")]
    TokenRoot,
}

/// `up`: the cluster, plus how phase 2 (SSH, k3s) runs.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub phase2: Phase2Args,
    #[command(flatten)]
    pub rolling: RollingArgs,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
}

/// How `up` disrupts running VMs (README, "Rolling changes").
#[derive(Debug, Clone, Args)]
pub struct RollingArgs {
    /// Agents restarted, replaced or removed at once (servers always go one at a time).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_unavailable: u32,
    /// Allow scaling the servers down to a single one.
    #[arg(long)]
    pub force: bool,
}

/// Confirmation before a disruptive change.
#[derive(Debug, Clone, Args)]
pub struct ConfirmArgs {
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y', visible_alias = "auto-approve")]
    pub yes: bool,
}

/// Phase 2 options of `up`.
#[derive(Debug, Clone, Args)]
pub struct Phase2Args {
    /// Stop after the VMs are running (phase 1): no SSH, no k3s.
    #[arg(long)]
    pub vms_only: bool,
    /// What plays the simulated VMs' guests: nothing, or the real test hosts of scripts/testbed.sh (the VM
    /// with address 10.77.0.(10+I) boots host tbI with its cloud-init seed; root only). A test facility,
    /// hidden from `--help` (README, "How it is tested").
    #[arg(long, value_enum, default_value_t = Guests::None, requires = "simulate", hide = true)]
    pub guests: Guests,
    /// Trust and record (in .provision/known_hosts) the host key of a host provision did not create
    /// (first use); keys provision generated are always checked.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Show every remote command and file transfer of phase 2 exactly (secrets redacted).
    #[arg(long)]
    pub print_commands: bool,
}

/// Guests of simulated VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Guests {
    /// Simulated VMs have no guests: phase 2 is skipped.
    None,
    /// Real Debian hosts from scripts/testbed.sh (a test facility).
    Testbed,
}

/// `provision status --profile P`
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The simulated VMs' guests (as on `up`): with `testbed`, the cluster is asked on the test hosts
    /// that play them. Hidden from `--help`, like `up --guests`.
    #[arg(long, value_enum, default_value_t = Guests::None, requires = "simulate", hide = true)]
    pub guests: Guests,
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Merge the cluster's context into ~/.kube/config (or the first file of $KUBECONFIG), keeping every
    /// other entry.
    #[arg(long)]
    pub merge: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Show what `down` would destroy instead.
    #[arg(long)]
    pub destroy: bool,
    /// Show what `replace-node NODE` would do instead (its VM, the k3s/etcd steps).
    #[arg(long, value_name = "NODE", conflicts_with = "destroy")]
    pub replace_node: Option<String>,
    /// Exit 0 when the plan has no changes, 2 when it has, 1 on any error (as terraform does).
    #[arg(long)]
    pub detailed_exitcode: bool,
    #[command(flatten)]
    pub rolling: RollingArgs,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
    /// The simulated VMs' guests (as on `up`): with `testbed`, the hosts of the destroyed VMs are stopped.
    /// Hidden from `--help`, like `up --guests`.
    #[arg(long, value_enum, default_value_t = Guests::None, requires = "simulate", hide = true)]
    pub guests: Guests,
}

/// `provision replace-node --profile P NODE [--yes]`
#[derive(Debug, Args)]
pub struct ReplaceNodeArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The node (VM and Kubernetes node name) to replace.
    pub node: String,
    /// Bound on each wait, in seconds: drain, etcd member removal, Ready again.
    #[arg(long, value_name = "SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
    /// The simulated VMs' guests (as on `up`). Hidden from `--help`, like `up --guests`.
    #[arg(long, value_enum, default_value_t = Guests::None, requires = "simulate", hide = true)]
    pub guests: Guests,
    /// Trust and record the host key of a host provision did not create (first use).
    #[arg(long)]
    pub accept_new_host_keys: bool,
}

/// `provision drain --profile P NODE …`
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// A built-in profile name, a workspace profile or a path to a TOML file.
    #[arg(short, long, value_name = "NAME|PATH")]
    pub profile: String,
    /// The node to drain (a VM name of the cluster).
    pub node: String,
    /// How long kubectl may take to evict every pod (e.g. 90s, 10m, 1h30m); the node stays
    /// cordoned when it runs out.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
    /// Also delete pods that no controller recreates (kubectl's --force).
    #[arg(long)]
    pub force: bool,
    /// Also evict pods with emptyDir volumes, whose data is lost (kubectl's flag).
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// Also evict pods whose volumes are bound to this node (their replacements stay Pending
    /// until the node is back).
    #[arg(long)]
    pub allow_local_volumes: bool,
    /// Print the preflight (every pod on the node and its fate) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `provision uncordon --profile P NODE`
#[derive(Debug, Args)]
pub struct UncordonArgs {
    /// A built-in profile name, a workspace profile or a path to a TOML file.
    #[arg(short, long, value_name = "NAME|PATH")]
    pub profile: String,
    /// The node to make schedulable again.
    pub node: String,
}

/// A duration as kubectl takes it: whole seconds, minutes and hours (`90s`, `10m`, `1h30m`), at
/// least one second; a bare number is seconds.
pub fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("{text:?} is not a duration like 90s, 10m or 1h30m");
    if let Ok(seconds) = text.parse::<u64>() {
        return (seconds > 0)
            .then(|| std::time::Duration::from_secs(seconds))
            .ok_or_else(invalid);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(invalid()),
        };
        let value: u64 = number.parse().map_err(|_| invalid())?;
        number.clear();
        total = value
            .checked_mul(unit)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(invalid)?;
    }
    if !number.is_empty() || total == 0 {
        return Err(invalid());
    }
    Ok(std::time::Duration::from_secs(total))
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to initialise (default: --workspace).
    pub dir: Option<PathBuf>,
    /// Also write the built-in profile NAME to profiles/NAME.toml, to adapt (kept when there).
    #[arg(short, long, value_name = "NAME")]
    pub profile: Option<String>,
}

/// `provision profiles [list | show NAME]`: without a subcommand, the listing.
#[derive(Debug, Args)]
pub struct ProfilesArgs {
    #[command(subcommand)]
    pub command: Option<ProfilesCommand>,
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// List the built-in profiles and the workspace's own (what `provision profiles` prints).
    List,
    /// Print the built-in profile NAME exactly as shipped (TOML with its comments).
    Show(ProfilesShowArgs),
}

#[derive(Debug, Args)]
pub struct ProfilesShowArgs {
    /// A built-in profile name (`provision profiles` lists them).
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A built-in profile name, a workspace profile (profiles/NAME.toml) or a path to a TOML file.
    #[arg(short, long, value_name = "NAME|PATH")]
    pub profile: String,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
