//! A test facility (`publish = false`): real test hosts as the guests of simulated VMs.
//!
//! `--simulate --guests testbed`: the simulated VMs' guests are real testbed hosts (systemd-nspawn
//! Debian machines with OpenSSH and cloud-init, see `scripts/testbed.sh`). When the simulator starts a VM, its
//! NoCloud seed goes to the testbed host that has the VM's address (`testbed.sh seed NAME DIR --wipe`,
//! then `start NAME`); when it stops the VM, the host is shut down; a VM started again without a seed
//! (removed after its first boot) boots the same host from its kept disk. Phase 2 then runs against
//! real hosts.
//!
//! A test facility: it needs root and the testbed (`scripts/testbed.sh setup N`). The script is
//! `$PROVISION_TESTBED_SCRIPT`, else `scripts/testbed.sh` under the current directory.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pve_sim::{GuestBackend, GuestBoot};

/// Environment variable naming the testbed script.
pub const SCRIPT_ENV: &str = "PROVISION_TESTBED_SCRIPT";

enum Job {
    Boot {
        vm: String,
        host: String,
        seed: pve_sim::NoCloudSeed,
    },
    /// A VM started again without a seed (cloud-init ran at its first boot): the host boots
    /// from the disk it kept, as the VM would.
    Start {
        vm: String,
        host: String,
    },
    Stop {
        host: String,
    },
}

impl Job {
    /// What the job does, for progress and timeouts.
    fn label(&self) -> String {
        match self {
            Job::Boot { vm, host, .. } => format!("{host}: seed and start for {vm}"),
            Job::Start { vm, host } => format!("{host}: start for {vm}"),
            Job::Stop { host } => format!("{host}: stop"),
        }
    }
}

#[derive(Default)]
struct Progress {
    /// Jobs handed over and not done yet, in order (`tb21: seed and start for homelab-server-1`).
    pending: Vec<String>,
    errors: Vec<String>,
    /// What the worker did, in order (`tb21 seeded and started for homelab-server-1`).
    done: Vec<String>,
}

type Shared = Arc<(Mutex<Progress>, Condvar)>;

/// The [`GuestBackend`] that boots testbed hosts; events are handled in order by one worker thread so
/// the simulator's request handlers never wait for the script.
pub struct TestbedGuests {
    script: PathBuf,
    jobs: Mutex<Sender<Job>>,
    shared: Shared,
    /// vmid → testbed host, for stops.
    hosts: Mutex<BTreeMap<u32, String>>,
}

impl TestbedGuests {
    /// Checks that the script exists; the testbed itself is checked when a VM starts.
    pub fn new() -> anyhow::Result<Arc<Self>> {
        let script = match std::env::var_os(SCRIPT_ENV) {
            Some(path) => PathBuf::from(path),
            None => std::env::current_dir()
                .context("cannot read the current directory")?
                .join("scripts/testbed.sh"),
        };
        if !script.is_file() {
            bail!(provision_base::error::UserError::new(
                format!(
                    "--guests testbed needs the testbed script, not found at {}",
                    script.display()
                ),
                Some(
                    "run from the provision repository or set PROVISION_TESTBED_SCRIPT; build the hosts with `scripts/testbed.sh setup N` (root)"
                ),
            ));
        }
        Ok(Self::with_script(script))
    }

    /// With an explicit script path.
    pub fn with_script(script: PathBuf) -> Arc<Self> {
        let (sender, receiver) = channel::<Job>();
        let shared: Shared = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        let worker_shared = Arc::clone(&shared);
        let worker_script = script.clone();
        std::thread::spawn(move || {
            for job in receiver {
                let label = job.label();
                let result = match &job {
                    Job::Boot { vm, host, seed } => boot(&worker_script, host, seed)
                        .map(|()| format!("{host} seeded and started for {vm}"))
                        .map_err(|error| format!("{vm}: testbed host {host}: {error:#}")),
                    Job::Start { vm, host } => run_script(&worker_script, &["start", host])
                        .map(|_| format!("{host} started again for {vm}"))
                        .map_err(|error| format!("{vm}: testbed host {host}: {error:#}")),
                    Job::Stop { host } => run_script(&worker_script, &["stop", host])
                        .map(|_| format!("{host} stopped"))
                        .map_err(|error| format!("testbed host {host}: {error:#}")),
                };
                let (lock, condvar) = &*worker_shared;
                let mut progress = lock.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(line) => progress.done.push(line),
                    Err(line) => progress.errors.push(line),
                }
                if let Some(position) = progress.pending.iter().position(|p| *p == label) {
                    progress.pending.remove(position);
                }
                condvar.notify_all();
            }
        });
        Arc::new(Self {
            script,
            jobs: Mutex::new(sender),
            shared,
            hosts: Mutex::new(BTreeMap::new()),
        })
    }

    fn enqueue(&self, job: Job) {
        let (lock, _) = &*self.shared;
        let label = job.label();
        lock.lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending
            .push(label.clone());
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        if sent.is_err() {
            let mut progress = lock.lock().unwrap_or_else(|p| p.into_inner());
            progress.pending.retain(|p| *p != label);
            progress
                .errors
                .push("the testbed worker thread is gone".to_owned());
        }
    }

    fn record_error(&self, message: String) {
        let (lock, condvar) = &*self.shared;
        lock.lock()
            .unwrap_or_else(|p| p.into_inner())
            .errors
            .push(message);
        condvar.notify_all();
    }

    /// Waits (bounded) until every start/stop handed over so far is done; returns what was done, or an
    /// error naming each VM/host that failed.
    pub fn settle(&self, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let (lock, condvar) = &*self.shared;
        let deadline = Instant::now() + timeout;
        let mut progress = lock.lock().unwrap_or_else(|p| p.into_inner());
        while !progress.pending.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "timed out after {}s waiting for the testbed: {} not done",
                    timeout.as_secs(),
                    progress.pending.join("; ")
                );
            }
            progress = condvar
                .wait_timeout(progress, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let done = std::mem::take(&mut progress.done);
        let errors = std::mem::take(&mut progress.errors);
        if !errors.is_empty() {
            bail!("testbed guests failed: {}", errors.join("; "));
        }
        Ok(done)
    }

    /// Records that VM `vmid` has `address` so that its stop reaches the testbed host, for VMs started
    /// by an earlier process (`down` destroys what an `up` created).
    pub fn remember(&self, vmid: u32, address: IpAddr) -> anyhow::Result<String> {
        let host = host_for(&self.script, address)?;
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vmid, host.clone());
        Ok(host)
    }

    /// A simulated VM that runs must have a running guest: boots (without reseeding: its disk is kept)
    /// the testbed hosts of `addresses` that are down, e.g. after a crash — as Proxmox would show such a
    /// VM stopped and `up` would start it. Returns the hosts started.
    pub fn ensure_running(&self, addresses: &[IpAddr]) -> anyhow::Result<Vec<String>> {
        let status = run_script(&self.script, &["status"])?;
        let running: Vec<&str> = status
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.len() >= 3 && fields[2].starts_with("running")).then(|| fields[0])
            })
            .collect();
        let mut started = Vec::new();
        for address in addresses {
            let host = host_for(&self.script, *address)?;
            if !running.contains(&host.as_str()) {
                run_script(&self.script, &["start", &host])?;
                started.push(host);
            }
        }
        Ok(started)
    }
}

impl GuestBackend for TestbedGuests {
    fn vm_started(&self, vm: &GuestBoot) {
        let Some(seed) = vm.seed.clone() else {
            // Started again after its seed was removed: the host this VM booted before (it kept
            // its disk) boots again; a VM never seeded has no configured host to boot.
            let known = self
                .hosts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&vm.vmid)
                .cloned();
            let host = match (known, vm.addresses.first()) {
                (Some(host), _) => Some(host),
                (None, Some((address, _))) => host_for(&self.script, *address).ok(),
                (None, None) => None,
            };
            match host {
                Some(host) => {
                    self.hosts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(vm.vmid, host.clone());
                    self.enqueue(Job::Start {
                        vm: vm.name.clone(),
                        host,
                    });
                }
                None => self.record_error(format!(
                    "{}: no NoCloud seed attached, the testbed host cannot be configured",
                    vm.name
                )),
            }
            return;
        };
        let Some((address, _)) = vm.addresses.first() else {
            self.record_error(format!("{}: the VM has no address", vm.name));
            return;
        };
        let host = match host_for(&self.script, *address) {
            Ok(host) => host,
            Err(error) => {
                self.record_error(format!("{}: {error:#}", vm.name));
                return;
            }
        };
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vm.vmid, host.clone());
        self.enqueue(Job::Boot {
            vm: vm.name.clone(),
            host,
            seed,
        });
    }

    fn vm_stopped(&self, _node: &str, vmid: u32) {
        let host = self
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&vmid)
            .cloned();
        if let Some(host) = host {
            self.enqueue(Job::Stop { host });
        }
    }
}

/// The testbed host that has `address` (`testbed.sh name`). The name goes back to the script as an
/// argument (and names a machine directory there): anything but one plain word is refused, so it can
/// never be taken for an option (`-x`) or a path (`../x`).
fn host_for(script: &Path, address: IpAddr) -> anyhow::Result<String> {
    let output = run_script(script, &["name", &address.to_string()])?;
    plain_host_name(output.trim())
        .map(str::to_owned)
        .with_context(|| format!("`testbed.sh name {address}` printed {output:?}, not a host name"))
}

/// `name` when it is a host name of `[A-Za-z0-9][A-Za-z0-9._-]{0,62}` (not `.`-only segments).
fn plain_host_name(name: &str) -> Option<&str> {
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    (first_ok && rest_ok && name.len() <= 63 && !name.contains("..")).then_some(name)
}

fn boot(script: &Path, host: &str, seed: &pve_sim::NoCloudSeed) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut files = vec![
        ("user-data", &seed.user_data),
        ("meta-data", &seed.meta_data),
    ];
    if let Some(network) = &seed.network_config {
        files.push(("network-config", network));
    }
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let dir_text = dir.path().display().to_string();
    run_script(script, &["seed", host, &dir_text, "--wipe"])?;
    run_script(script, &["start", host])?;
    Ok(())
}

fn run_script(script: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "`{} {}` failed ({}): {}",
            script.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::plain_host_name;

    #[test]
    fn testbed_host_names_must_be_plain_words() {
        assert_eq!(plain_host_name("tb-1"), Some("tb-1"));
        assert_eq!(plain_host_name("node.a_2"), Some("node.a_2"));
        for hostile in [
            "", "-rf", "--wipe", "../etc", "a b", "a\nb", "a/b", "$(id)", "a;b", "a..b", "é",
        ] {
            assert_eq!(plain_host_name(hostile), None, "{hostile:?}");
        }
        assert_eq!(plain_host_name(&"a".repeat(64)), None);
    }
}
