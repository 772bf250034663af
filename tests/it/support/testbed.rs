//! Real Debian test hosts for integration tests, driven through `scripts/testbed.sh`.
//!
//! `Testbed::ensure(n)` gives the shared hosts tb1..tbN (for tests that do not disturb them);
//! `Testbed::exclusive(n)` reserves fresh hosts (tb21 upward) for one test, which may crash, partition, seed
//! or reboot them. Both return `None` (after a loud message) when the testbed cannot run here: not root, or
//! no systemd-nspawn; with `CI=true` that is a failure instead, because CI must run these tests.
#![allow(clippy::unwrap_used, clippy::print_stderr, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// One host: `tbI` at 10.77.0.(10+I), root login with the testbed's client key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestHost {
    pub name: String,
    pub address: String,
    pub ssh_port: u16,
}

/// Handle on the testbed.
#[derive(Debug, Clone)]
pub struct Testbed {
    pub hosts: Vec<TestHost>,
    /// Private key whose public half is in every unseeded host's `/root/.ssh/authorized_keys`.
    pub client_key_path: PathBuf,
    /// State directory (`TESTBED_DIR`).
    pub dir: PathBuf,
}

/// Serialises testbed script runs within this test binary (they share the bridge and the base).
static SCRIPT_LOCK: Mutex<()> = Mutex::new(());
/// Next host number handed out by [`Testbed::exclusive`].
static NEXT_EXCLUSIVE: AtomicU32 = AtomicU32::new(21);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/testbed.sh` in this repository.
pub fn script() -> PathBuf {
    repo_root().join("scripts/testbed.sh")
}

/// The stand-in k3s executable (NOT k3s: see its header), to be given to provision as the air-gapped binary.
pub fn standin_k3s() -> PathBuf {
    repo_root().join("scripts/k3s-standin/k3s")
}

fn testbed_dir() -> PathBuf {
    std::env::var_os("TESTBED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/provision-testbed"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn has_nspawn() -> bool {
    Command::new("sh")
        .args(["-c", "command -v systemd-nspawn"])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Decides whether the testbed can be used; prints why not (or panics in CI).
fn available(test: &str) -> bool {
    let reason = if !is_root() {
        Some("not running as root")
    } else if !has_nspawn() && !in_ci() {
        Some("systemd-nspawn is not installed (run scripts/testbed.sh setup 5 as root once)")
    } else {
        None
    };
    match reason {
        None => true,
        Some(reason) if in_ci() => panic!("{test}: CI must run the testbed tests, but {reason}"),
        Some(reason) => {
            eprintln!(
                "\n!!!!!!!! SKIPPED {test}: needs the real test hosts (scripts/testbed.sh): {reason} !!!!!!!!\n"
            );
            false
        }
    }
}

/// Runs the testbed script; panics with its output on failure.
pub fn run_script(args: &[&str]) -> Output {
    let _guard = SCRIPT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    run_script_unlocked(args)
}

/// For read-only subcommands (`wait`) that need not wait for other tests' changes.
fn run_script_unlocked(args: &[&str]) -> Output {
    let output = Command::new(script()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "scripts/testbed.sh {} failed ({}):\n{}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn host(index: u32) -> TestHost {
    TestHost {
        name: format!("tb{index}"),
        address: format!("10.77.0.{}", 10 + index),
        ssh_port: 22,
    }
}

impl Testbed {
    /// Shared hosts tb1..tbN, booted and accepting SSH. Do not crash, partition or seed them.
    pub fn ensure(n_hosts: u32) -> Option<Testbed> {
        if !available("testbed") {
            return None;
        }
        run_script(&["setup", &n_hosts.to_string()]);
        Some(Self::handle((1..=n_hosts).map(host).collect()))
    }

    /// Fresh hosts for this test alone (wiped, booted, accepting SSH with the client key).
    pub fn exclusive(n_hosts: u32) -> Option<Testbed> {
        let testbed = Self::exclusive_stopped(n_hosts)?;
        for test_host in &testbed.hosts {
            testbed.start(&test_host.name);
        }
        for test_host in &testbed.hosts {
            testbed.wait_ssh(&test_host.name, 60);
        }
        Some(testbed)
    }

    /// Fresh hosts for this test alone, wiped and NOT started (to be seeded with cloud-init first).
    pub fn exclusive_stopped(n_hosts: u32) -> Option<Testbed> {
        if !available("testbed") {
            return None;
        }
        // The base, bridge and client key come with `setup`.
        run_script(&["setup", "1"]);
        let first = NEXT_EXCLUSIVE.fetch_add(n_hosts, Ordering::SeqCst);
        let hosts: Vec<TestHost> = (first..first + n_hosts).map(host).collect();
        for test_host in &hosts {
            run_script(&["wipe", &test_host.name]);
        }
        Some(Self::handle(hosts))
    }

    fn handle(hosts: Vec<TestHost>) -> Testbed {
        let dir = testbed_dir();
        Testbed {
            hosts,
            client_key_path: dir.join("client_key"),
            dir,
        }
    }

    /// Whether host `name` is running (`testbed.sh status`).
    pub fn is_running(&self, name: &str) -> bool {
        let output = run_script(&["status"]);
        String::from_utf8_lossy(&output.stdout).lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() >= 3 && fields[0] == name && fields[2].starts_with("running")
        })
    }

    pub fn host(&self, name: &str) -> &TestHost {
        self.hosts.iter().find(|h| h.name == name).unwrap()
    }

    pub fn start(&self, name: &str) {
        run_script(&["start", name]);
    }

    pub fn stop(&self, name: &str) {
        run_script(&["stop", name]);
    }

    /// Power loss: SIGKILL the host's init.
    pub fn crash(&self, name: &str) {
        run_script(&["crash", name]);
    }

    pub fn partition(&self, name: &str) {
        run_script(&["partition", name]);
    }

    pub fn heal(&self, name: &str) {
        run_script(&["heal", name]);
    }

    /// Installs a NoCloud seed (directory with user-data, meta-data[, network-config]) into a stopped host;
    /// real cloud-init applies it at the next boot.
    pub fn seed(&self, name: &str, seed_dir: &Path) {
        run_script(&["seed", name, &seed_dir.display().to_string()]);
    }

    pub fn wipe(&self, name: &str) {
        run_script(&["wipe", name]);
    }

    /// The host's own ed25519 public key (`ssh-ed25519 AAAA… comment`), read from its root file system.
    pub fn host_public_key(&self, name: &str) -> String {
        let path = self
            .dir
            .join("hosts")
            .join(name)
            .join("merged/etc/ssh/ssh_host_ed25519_key.pub");
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    /// Waits until sshd accepts the client key.
    pub fn wait_ssh(&self, name: &str, seconds: u32) {
        run_script_unlocked(&["wait", name, &seconds.to_string()]);
    }

    /// Runs a command on a host with OpenSSH (independent of provision's SSH code).
    pub fn ssh(&self, name: &str, command: &str) -> Output {
        Command::new(script())
            .args(["ssh", name, command])
            .output()
            .unwrap()
    }

    /// Like [`Testbed::ssh`] but must succeed; returns stdout.
    pub fn ssh_ok(&self, name: &str, command: &str) -> String {
        let output = self.ssh(name, command);
        assert!(
            output.status.success(),
            "{name}: `{command}` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}
