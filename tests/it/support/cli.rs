//! Running the provision binary from tests (STYLE habit 10): one builder with a quiet, colourless
//! environment that carries none of the caller's Proxmox credentials, the captured result, its
//! rendering for insta with temporary paths filtered ([`provision_snapshot!`]), and a workspace
//! with its own HOME for tests that run several commands.
#![allow(clippy::unwrap_used, dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_provision");

/// The Proxmox settings a developer's shell may carry; no test inherits them.
const PROXMOX_ENV: [&str; 6] = [
    "PROXMOX_VE_ENDPOINT",
    "PROXMOX_VE_API_TOKEN",
    "PROXMOX_VE_USERNAME",
    "PROXMOX_VE_PASSWORD",
    "PROXMOX_VE_INSECURE",
    "PROXMOX_VE_FINGERPRINT",
];

/// `provision ARGS`, being set up.
pub struct Provision {
    command: Command,
}

impl Provision {
    /// `provision ARGS` with `NO_COLOR`, without `RUST_LOG` and the caller's `PROXMOX_VE_*`.
    pub fn new(args: &[&str]) -> Self {
        let mut command = Command::new(BINARY);
        command.args(args);
        Self::clean(command)
    }

    /// `provision ARGS` started under `umask 000`, as a careless shell would start it.
    pub fn under_umask_000(args: &[&str]) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("umask 000; exec \"$0\" \"$@\"")
            .arg(BINARY)
            .args(args);
        Self::clean(command)
    }

    fn clean(mut command: Command) -> Self {
        command.env("NO_COLOR", "1").env_remove("RUST_LOG");
        for key in PROXMOX_ENV {
            command.env_remove(key);
        }
        Self { command }
    }

    /// Run in `dir` (the workspace, unless `--workspace` says otherwise).
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Append `--workspace DIR`.
    pub fn workspace(mut self, dir: &Path) -> Self {
        self.command.arg("--workspace").arg(dir);
        self
    }

    /// Set an environment variable (`HOME`, `PROXMOX_VE_*`, ...).
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// The command, for tests that spawn it or feed its stdin.
    pub fn command(self) -> Command {
        self.command
    }

    pub fn output(mut self) -> Output {
        self.command.output().unwrap()
    }

    pub fn run(self) -> Run {
        Run::from(self.output())
    }
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Exit code, stdout and stderr as one text, each `(path, placeholder)` of `filters` replaced
    /// in order (put a directory before its parent).
    pub fn render(&self, filters: &[(&Path, &str)]) -> String {
        let filter = |text: &str| {
            filters
                .iter()
                .fold(text.to_owned(), |text, (path, placeholder)| {
                    text.replace(&path.display().to_string(), placeholder)
                })
        };
        format!(
            "exit: {}\n----- stdout -----\n{}----- stderr -----\n{}",
            self.code,
            filter(&self.stdout),
            filter(&self.stderr)
        )
    }
}

/// Snapshot a [`Run`] (exit code, stdout, stderr) with `(path, placeholder)` filters:
/// `provision_snapshot!(run, &[(dir, "[TEMP]")])`, or with a snapshot name first.
macro_rules! provision_snapshot {
    ($name:expr, $run:expr, $filters:expr $(,)?) => {
        insta::assert_snapshot!($name, $run.render($filters))
    };
    ($run:expr, $filters:expr $(,)?) => {
        insta::assert_snapshot!($run.render($filters))
    };
}
pub(crate) use provision_snapshot;

/// A temporary directory holding a workspace (`ws/`, after `provision init`) and a HOME
/// (`home/`) for the binary, so nothing of the user's own `~/.ssh` or `~/.kube` is read.
pub struct BinaryWorkspace {
    dir: tempfile::TempDir,
}

impl BinaryWorkspace {
    pub fn new() -> Self {
        let workspace = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(workspace.home()).unwrap();
        std::fs::create_dir_all(workspace.workspace()).unwrap();
        let (code, _, stderr) = workspace.run(&["init"]);
        assert_eq!(code, 0, "{stderr}");
        workspace
    }

    /// The temporary directory holding `home/` and `ws/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    /// Writes `text` next to the workspace and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// Writes `~/.ssh/id_ed25519.pub` (the simulator tests' user key) into the HOME.
    pub fn user_key(&self) {
        std::fs::create_dir_all(self.home().join(".ssh")).unwrap();
        std::fs::write(
            self.home().join(".ssh/id_ed25519.pub"),
            format!("{}\n", super::sim::USER_KEY),
        )
        .unwrap();
    }

    /// `provision ARGS` in the workspace with this HOME, not yet run.
    pub fn provision(&self, args: &[&str]) -> Provision {
        Provision::new(args)
            .cwd(&self.workspace())
            .env("HOME", self.home())
    }

    /// `provision ARGS` in the workspace: exit code, stdout, stderr.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let Run {
            code,
            stdout,
            stderr,
        } = self.provision(args).run();
        (code, stdout, stderr)
    }

    /// `provision doctor` against the simulator with `inventory` (a name or a file).
    pub fn doctor(&self, profile: &str, inventory: &str) -> (i32, String, String) {
        self.run(&[
            "doctor",
            "--profile",
            profile,
            "--simulate",
            "--sim-inventory",
            inventory,
        ])
    }
}
