//! Everything `plan`/`up`/`down`/`status` share: connect (real Proxmox or the in-process
//! simulator), observe, build the cloud-init seeds, plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::cloudinit::{self, HostKeys, SeedInput};
use crate::inventory::{self, AuthKind, Inventory};
use crate::plan::{self, Plan, PlanContext, PlannedVm, WantedVm};
use crate::profile::model::Profile;
use crate::pve::PveApi;
use crate::pve::auth::Auth;
use crate::pve::client::{ClientConfig, PveClient};
use crate::pve::split::TokenWithRoot;
use crate::pve::tls::TlsMode;
use crate::state::State;
use crate::workspace::{Credentials, Trust, Workspace};

use super::SeedSource;

/// A Proxmox connection plus what kind of credentials it uses.
pub struct Connection {
    pub api: Arc<dyn PveApi>,
    pub auth: AuthKind,
}

/// Connect to the Proxmox configured in the workspace (provision.toml / environment).
pub fn connect_real(workspace: &Workspace) -> anyhow::Result<Connection> {
    let settings = match workspace.proxmox_settings()? {
        Ok(settings) => settings,
        Err(error) => {
            return Err(crate::error::UserError::new(error.to_string(), Some(error.hint())).into());
        }
    };
    let tls = tls_mode(&settings.trust);
    let client = |auth: Auth| -> anyhow::Result<Arc<dyn PveApi>> {
        Ok(Arc::new(PveClient::new(ClientConfig::new(
            settings.endpoint.clone(),
            auth,
            tls.clone(),
        ))?))
    };
    let connection = match &settings.credentials {
        Credentials::ApiToken(secret) => Connection {
            api: client(token_auth(secret)?)?,
            // TODO-correctness: `may_create_mappings` from `/access/permissions` (the
            // preflight refuses a plan whose mappings the token may not create).
            auth: AuthKind::Token {
                user: token_user(secret),
                may_create_mappings: true,
            },
        },
        Credentials::TokenWithRoot {
            token,
            root_password,
        } => {
            let root = client(Auth::Ticket {
                username: "root@pam".to_owned(),
                password: crate::pve::auth::Secret::new(root_password.expose()),
            })?;
            Connection {
                api: Arc::new(TokenWithRoot::new(client(token_auth(token)?)?, root)),
                auth: AuthKind::TokenWithRoot {
                    user: token_user(token),
                },
            }
        }
        Credentials::Password { username, password } => Connection {
            api: client(Auth::Ticket {
                username: username.clone(),
                password: crate::pve::auth::Secret::new(password.expose()),
            })?,
            auth: if username == "root@pam" {
                AuthKind::RootTicket
            } else {
                AuthKind::Ticket {
                    user: username.clone(),
                }
            },
        },
    };
    Ok(connection)
}

fn token_auth(secret: &crate::workspace::Secret) -> anyhow::Result<Auth> {
    Auth::parse_api_token(secret.expose()).ok_or_else(|| {
        crate::error::UserError::new(
            "the Proxmox API token is not in USER@REALM!TOKENID=SECRET form",
            None,
        )
        .into()
    })
}

/// `user@realm!tokenid` of a token secret (for messages; never the secret).
fn token_user(secret: &crate::workspace::Secret) -> String {
    secret
        .expose()
        .split('=')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn tls_mode(trust: &Trust) -> TlsMode {
    match trust {
        Trust::System => TlsMode::System,
        Trust::Fingerprint(bytes) => TlsMode::Fingerprint(
            bytes
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":"),
        ),
        Trust::CaFile(path) => TlsMode::CaFile(path.clone()),
        Trust::Insecure => TlsMode::Insecure,
    }
}

/// Builds each VM's NoCloud seed from the profile and the workspace's host keys.
pub struct WorkspaceSeeds {
    profile: Profile,
    host_key_dir: PathBuf,
    authorized_keys: Vec<String>,
    /// Whether planning may store host keys for VMs that have none yet (`up`); `plan` only
    /// previews them and writes nothing.
    persist_host_keys: bool,
    /// The seed templates: built-in, or the workspace's `templates/cloud-init/` overrides.
    templates: cloudinit::Templates,
}

impl WorkspaceSeeds {
    /// Reads the user's public key (`<ssh.private_key>.pub`).
    pub fn new(profile: &Profile, workspace: &Workspace) -> anyhow::Result<Self> {
        let private = crate::files::expand_home(&profile.ssh.private_key);
        let public = PathBuf::from(format!("{}.pub", private.display()));
        let key = std::fs::read_to_string(&public).map_err(|error| {
            crate::error::UserError::new(
                format!(
                    "cannot read the SSH public key {}: {error}",
                    public.display()
                ),
                Some(
                    "create one with `ssh-keygen -t ed25519` or set ssh.private_key in the profile",
                ),
            )
        })?;
        Ok(Self {
            profile: profile.clone(),
            host_key_dir: host_key_dir(workspace),
            persist_host_keys: true,
            templates: cloudinit::Templates::with_overrides(&workspace.templates_dir())?,
            authorized_keys: key
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned)
                .collect(),
        })
    }

    /// Like [`WorkspaceSeeds::new`]; with `--simulate` and no user key, a throwaway key made
    /// for the simulated cluster (`.provision/secrets/sim-user-key`) stands in, so the simulator
    /// runs in a fresh workspace on a machine without `~/.ssh`.
    pub fn for_run(
        profile: &Profile,
        workspace: &Workspace,
        simulate: bool,
    ) -> anyhow::Result<Self> {
        let private = crate::files::expand_home(&profile.ssh.private_key);
        let public = PathBuf::from(format!("{}.pub", private.display()));
        if !simulate || public.exists() {
            return Self::new(profile, workspace);
        }
        let keys = HostKeys::load_or_generate(&workspace.secrets_dir(), "sim-user-key")?;
        Self::with_keys(profile, host_key_dir(workspace), vec![keys.public_openssh])
            .with_workspace_templates(workspace)
    }

    /// With explicit keys (tests).
    pub fn with_keys(
        profile: &Profile,
        host_key_dir: PathBuf,
        authorized_keys: Vec<String>,
    ) -> Self {
        Self {
            profile: profile.clone(),
            host_key_dir,
            authorized_keys,
            persist_host_keys: true,
            templates: cloudinit::Templates::builtin(),
        }
    }

    /// Render the seeds with the workspace's template overrides (`templates/cloud-init/`).
    pub fn with_workspace_templates(mut self, workspace: &Workspace) -> anyhow::Result<Self> {
        self.templates = cloudinit::Templates::with_overrides(&workspace.templates_dir())?;
        Ok(self)
    }

    /// For `plan`: ISO names of VMs without stored host keys are previewed with throwaway keys,
    /// and nothing is written to the host-key directory.
    pub fn preview_only(mut self) -> Self {
        self.persist_host_keys = false;
        self
    }

    fn seed(
        &self,
        name: &str,
        address: std::net::IpAddr,
        prefix_len: u8,
        mac: &str,
    ) -> anyhow::Result<cloudinit::Seed> {
        let host_keys = HostKeys::load_or_generate(&self.host_key_dir, name)?;
        self.seed_with(name, address, prefix_len, mac, &host_keys)
    }

    fn seed_with(
        &self,
        name: &str,
        address: std::net::IpAddr,
        prefix_len: u8,
        mac: &str,
        host_keys: &HostKeys,
    ) -> anyhow::Result<cloudinit::Seed> {
        let network = &self.profile.network;
        let input = SeedInput {
            hostname: name.to_owned(),
            fqdn: network
                .search_domain
                .as_ref()
                .map(|domain| format!("{name}.{domain}")),
            instance_id: format!("provision-{name}"),
            user: self.profile.ssh.user.clone(),
            authorized_keys: self.authorized_keys.clone(),
            address,
            prefix_len,
            gateway: network.gateway,
            dns: network.dns.clone(),
            search_domain: network.search_domain.clone(),
            mtu: network.mtu,
            // The plan's net0 MAC: the guest's network-config matches its interface by it.
            mac: Some(mac.to_owned()),
            host_keys,
            packages: vec!["qemu-guest-agent".to_owned()],
            extra_runcmd: Vec::new(),
            write_files: Vec::new(),
        };
        Ok(cloudinit::build_seed_with(&self.templates, &input)?)
    }

    /// ISO file names per VM (they hash the seed), for [`PlanContext::iso_files`]. Stored host
    /// keys are used where they exist; with `store` false the others are previewed with
    /// throwaway keys and nothing is written, with `store` true they are generated and stored.
    ///
    /// The VMs are spread over a few threads: storing a VM's keys is two fsynced writes, which
    /// the file system commits together when they come at once (200 new VMs one after the
    /// other took over a second).
    pub fn iso_files(
        &self,
        wanted: &[WantedVm],
        store: bool,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        const THREADS: usize = 16;
        let chunk = wanted.len().div_ceil(THREADS).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = wanted
                .chunks(chunk)
                .map(|vms| {
                    scope.spawn(move || {
                        vms.iter()
                            .map(|vm| Ok((vm.name.clone(), self.iso_file(vm, store)?)))
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            let mut files = BTreeMap::new();
            for worker in workers {
                let named = worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("internal: building the seeds panicked"))??;
                files.extend(named);
            }
            Ok(files)
        })
    }

    fn iso_file(&self, vm: &WantedVm, store: bool) -> anyhow::Result<String> {
        let host_keys = if store || self.host_key_dir.join(&vm.name).exists() {
            HostKeys::load_or_generate(&self.host_key_dir, &vm.name)?
        } else {
            HostKeys::generate(&vm.name)?
        };
        let seed = self.seed_with(&vm.name, vm.address, vm.prefix_len, &vm.mac, &host_keys)?;
        Ok(cloudinit::iso_file_name(
            &self.profile.cluster.name,
            &vm.name,
            &seed,
        ))
    }

    pub fn public_key(&self) -> Option<String> {
        self.authorized_keys.first().cloned()
    }
}

impl SeedSource for WorkspaceSeeds {
    fn iso(&self, vm: &PlannedVm) -> anyhow::Result<Vec<u8>> {
        let seed = self.seed(&vm.name, vm.address, vm.prefix_len, &vm.mac)?;
        Ok(cloudinit::build_nocloud_iso(&seed))
    }
}

/// Where the VMs' SSH host keys live (phase 2 reads them to verify hosts).
pub fn host_key_dir(workspace: &Workspace) -> PathBuf {
    workspace.secrets_dir().join("host-keys")
}

/// Observe and plan in one go.
pub async fn observe_and_plan(
    api: &dyn PveApi,
    auth: AuthKind,
    profile: &Profile,
    state: &State,
    seeds: &WorkspaceSeeds,
    workspace_root: &Path,
    rolling: plan::RollingOptions,
) -> anyhow::Result<(Inventory, Plan)> {
    state.check_cluster(&profile.cluster.name)?;
    let inventory = inventory::observe(api, profile, auth)
        .await
        .context("observing Proxmox")?;
    let plan = plan_for(profile, &inventory, state, seeds, workspace_root, rolling)?;
    Ok((inventory, plan))
}

/// [`observe_and_plan`] for another intent (`plan --replace-node`).
#[allow(clippy::too_many_arguments)]
pub async fn observe_and_plan_intent(
    api: &dyn PveApi,
    auth: AuthKind,
    profile: &Profile,
    state: &State,
    seeds: &WorkspaceSeeds,
    workspace_root: &Path,
    rolling: plan::RollingOptions,
    intent: &plan::Intent,
) -> anyhow::Result<(Inventory, Plan)> {
    state.check_cluster(&profile.cluster.name)?;
    let inventory = inventory::observe(api, profile, auth)
        .await
        .context("observing Proxmox")?;
    let plan = plan_intent_for(
        profile,
        &inventory,
        state,
        seeds,
        workspace_root,
        rolling,
        intent,
    )?;
    Ok((inventory, plan))
}

/// Plan against an observed inventory (pure but for the seeds' host keys).
pub fn plan_for(
    profile: &Profile,
    inventory: &Inventory,
    state: &State,
    seeds: &WorkspaceSeeds,
    workspace_root: &Path,
    rolling: plan::RollingOptions,
) -> anyhow::Result<Plan> {
    plan_intent_for(
        profile,
        inventory,
        state,
        seeds,
        workspace_root,
        rolling,
        &plan::Intent::Converge,
    )
}

/// [`plan_for`] with another intent than converging (`replace-node`).
pub fn plan_intent_for(
    profile: &Profile,
    inventory: &Inventory,
    state: &State,
    seeds: &WorkspaceSeeds,
    workspace_root: &Path,
    rolling: plan::RollingOptions,
    intent: &plan::Intent,
) -> anyhow::Result<Plan> {
    let wanted = plan::wanted_vms_observed(profile, inventory, state)?;
    let nocloud = profile.proxmox.cloud_init == crate::profile::model::CloudInitMode::NocloudIso;
    // First without storing host keys: a plan that fails (capacity, GPUs, …) writes nothing.
    let mut context = PlanContext {
        workspace: workspace_root
            .canonicalize()
            .unwrap_or_else(|_| workspace_root.to_path_buf())
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "workspace".to_owned()),
        ssh_public_key: seeds.public_key(),
        iso_files: if nocloud {
            seeds.iso_files(&wanted, false)?
        } else {
            BTreeMap::new()
        },
        rolling,
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()),
    };
    let converge = |context: &PlanContext| {
        let input = plan::PlanInput {
            profile,
            inventory,
            state,
            context,
        };
        plan::plan(&input, intent.clone())
    };
    // A refused plan stays a typed [`plan::PlanError`]: the top level reads its exit status.
    let mut plan = converge(&context)?;
    if nocloud && seeds.persist_host_keys {
        // The plan holds: now store the missing host keys and plan with the real ISO names.
        let stored = seeds.iso_files(&wanted, true)?;
        if stored != context.iso_files {
            context.iso_files = stored;
            plan = converge(&context)?;
        }
    }
    Ok(plan)
}

/// A connection, and the simulator behind it when `--simulate` is on.
pub struct Opened {
    pub connection: Connection,
    /// The in-process simulator (`--simulate`); shut down (state saved) by [`Opened::close`].
    pub simulator: Option<pve_sim::SimHandle>,
}

impl Opened {
    /// Stop the simulator (if any) after the command; it saves its state file.
    pub async fn close(self) {
        if let Some(simulator) = self.simulator {
            simulator.shutdown().await;
        }
    }
}

/// Connect for a command: the simulator when `simulator` is given (`--simulate`), else the
/// configured Proxmox.
pub async fn open(
    workspace: &Workspace,
    profile: &Profile,
    simulator: Option<&super::simulate::SimOptions>,
) -> anyhow::Result<Opened> {
    if let Some(options) = simulator {
        // One simulated Proxmox per workspace, shared by all of its clusters.
        let simulated = super::simulate::start(
            &workspace.shared_dir(),
            &profile.proxmox.nodes,
            &profile.cluster.name,
            options,
        )
        .await?;
        return Ok(Opened {
            connection: simulated.connection,
            simulator: Some(simulated.handle),
        });
    }
    Ok(Opened {
        connection: connect_real(workspace)?,
        simulator: None,
    })
}

/// Connect without a profile (`list`, `gc`): the workspace's simulator when `simulator` is given
/// (its saved state holds its own inventory; a fresh one starts from `--sim-inventory` or the
/// smallest fixture), else the configured Proxmox.
pub async fn open_workspace(
    workspace: &Workspace,
    simulator: Option<&super::simulate::SimOptions>,
) -> anyhow::Result<Opened> {
    if let Some(options) = simulator {
        let simulated = super::simulate::start(&workspace.shared_dir(), &[], "", options).await?;
        return Ok(Opened {
            connection: simulated.connection,
            simulator: Some(simulated.handle),
        });
    }
    Ok(Opened {
        connection: connect_real(workspace)?,
        simulator: None,
    })
}
