//! A workspace plus the in-process Proxmox simulator, driven through the library the way
//! `provision plan/up/down --simulate` drives it (same connection, same state files).
#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use provision::exec::session::{self, WorkspaceSeeds};
use provision::exec::simulate::{self, SimOptions};
use provision::exec::{self, ApplyReport, DestroyReport, ExecOptions, NoProgress};
use provision::inventory::AuthKind;
use provision::plan::Plan;
use provision::profile::Profile;
use provision::pve::PveApi;
use provision::state::{State, StateStore};
use pve_sim::{LoggedRequest, SimHandle};

/// The SSH key every test VM authorizes (fixed so plans are reproducible).
pub const USER_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFZ6ZsG0rJQmZ6nU9v8m7rC5YxkKjQ0c0bJw5b4b1vQF test@provision";

pub struct SimWorkspace {
    _dir: tempfile::TempDir,
    /// `<tmp>/ws`: the workspace root (its name appears in VM descriptions).
    pub root: PathBuf,
    pub api: Arc<dyn PveApi>,
    pub auth: AuthKind,
    pub sim: SimHandle,
}

/// Fast simulated time for tests.
pub fn fast() -> SimOptions {
    SimOptions {
        time_scale: 0.002,
        ..SimOptions::default()
    }
}

/// Options that make the executor quick to retry in tests.
pub fn exec_options() -> ExecOptions {
    ExecOptions {
        backoff: std::time::Duration::from_millis(5),
        poll_scale: 0.002,
        guest_timeout: std::time::Duration::from_secs(10),
        task_timeout: std::time::Duration::from_secs(20),
        ..ExecOptions::default()
    }
}

impl SimWorkspace {
    /// A fresh workspace and a simulator loaded with `inventory` (`None`: the one that fits).
    pub async fn start(profile: &Profile, inventory: Option<&str>, options: SimOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir_all(root.join(".provision")).unwrap();
        let options = SimOptions {
            inventory: inventory.map(str::to_owned),
            ..options
        };
        let simulated = simulate::start(
            &root.join(".provision"),
            &profile.proxmox.nodes,
            &profile.cluster.name,
            &options,
        )
        .await
        .unwrap();
        SimWorkspace {
            _dir: dir,
            root,
            api: simulated.connection.api,
            auth: simulated.connection.auth,
            sim: simulated.handle,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".provision")
    }

    pub fn state(&self) -> State {
        provision::state::load(&self.state_dir().join("state.json")).unwrap()
    }

    fn seeds(&self, profile: &Profile) -> WorkspaceSeeds {
        WorkspaceSeeds::with_keys(
            profile,
            self.state_dir().join("secrets").join("host-keys"),
            vec![USER_KEY.to_owned()],
        )
    }

    /// `provision plan`.
    pub async fn plan(&self, profile: &Profile) -> anyhow::Result<Plan> {
        self.plan_as(profile, Arc::clone(&self.api), self.auth.clone())
            .await
    }

    /// `provision plan` with other credentials.
    pub async fn plan_as(
        &self,
        profile: &Profile,
        api: Arc<dyn PveApi>,
        auth: AuthKind,
    ) -> anyhow::Result<Plan> {
        let state = self.state();
        let (_, plan) = session::observe_and_plan(
            api.as_ref(),
            auth,
            profile,
            &state,
            &self.seeds(profile),
            &self.root,
            provision::plan::RollingOptions::default(),
        )
        .await?;
        Ok(plan)
    }

    /// `provision up` (phase 1).
    pub async fn up(&self, profile: &Profile, options: ExecOptions) -> anyhow::Result<ApplyReport> {
        self.up_with_progress(profile, options, Arc::new(NoProgress))
            .await
    }

    /// [`SimWorkspace::up`] with the run's events going to `progress`.
    pub async fn up_with_progress(
        &self,
        profile: &Profile,
        options: ExecOptions,
        progress: Arc<dyn provision::exec::ProgressSink>,
    ) -> anyhow::Result<ApplyReport> {
        let store = StateStore::open(&self.state_dir(), "up (test)")?;
        let seeds = Arc::new(self.seeds(profile));
        let (_, plan) = session::observe_and_plan(
            self.api.as_ref(),
            self.auth.clone(),
            profile,
            store.state(),
            &seeds,
            &self.root,
            provision::plan::RollingOptions::default(),
        )
        .await?;
        let (report, _store) = exec::apply(
            Arc::clone(&self.api),
            &plan,
            store,
            seeds,
            progress,
            options,
        )
        .await?;
        Ok(report)
    }

    /// `provision up` (phase 1) with rolling options and a gate around each disruption.
    pub async fn up_rolling(
        &self,
        profile: &Profile,
        options: ExecOptions,
        rolling: provision::plan::RollingOptions,
        gate: Arc<dyn exec::RollingGate>,
    ) -> anyhow::Result<(Plan, ApplyReport)> {
        let store = StateStore::open(&self.state_dir(), "up (test)")?;
        let seeds = Arc::new(self.seeds(profile));
        let (_, plan) = session::observe_and_plan(
            self.api.as_ref(),
            self.auth.clone(),
            profile,
            store.state(),
            &seeds,
            &self.root,
            rolling,
        )
        .await?;
        let (report, _store) = exec::apply_with_gate(
            Arc::clone(&self.api),
            &plan,
            store,
            seeds,
            Arc::new(NoProgress),
            options,
            gate,
        )
        .await?;
        Ok((plan, report))
    }

    /// `provision down --yes`.
    pub async fn down(&self, profile: &Profile) -> anyhow::Result<DestroyReport> {
        let store = StateStore::open(&self.state_dir(), "down (test)")?;
        let (_, plan) = exec::observe_and_plan_down(
            self.api.as_ref(),
            self.auth.clone(),
            profile,
            store.state(),
        )
        .await?;
        let (report, _store) = exec::destroy(
            Arc::clone(&self.api),
            &plan,
            store,
            Arc::new(NoProgress),
            exec_options(),
        )
        .await?;
        Ok(report)
    }

    pub fn log(&self) -> Vec<LoggedRequest> {
        self.sim.request_log()
    }

    /// POST/PUT/DELETE requests logged after the first `since` entries.
    pub fn mutating_since(&self, since: usize) -> Vec<LoggedRequest> {
        self.log()
            .into_iter()
            .skip(since)
            .filter(|request| request.method != "GET")
            .collect()
    }
}

/// A built-in profile.
pub fn builtin(name: &str) -> Profile {
    provision::profile::load(name, Path::new("."))
        .unwrap()
        .profile
}

/// Every built-in profile name.
pub fn builtin_names() -> Vec<&'static str> {
    vec![
        "a100-8x",
        "ci-nested",
        "homelab-ha",
        "mlops",
        "sentinel",
        "vllm-timeslice",
    ]
}
