//! Remote execution on guests: the [`RemoteExec`] trait and its russh implementation.

mod auth;
pub mod commands;
pub mod hostkey;
pub mod known_hosts;
pub mod parallel;
pub mod recording;
pub mod russh_exec;

use async_trait::async_trait;

pub use hostkey::{HostKeyPolicy, HostKeyVerdict};
pub use parallel::run_bounded;
pub use recording::{CommandLog, RecordedOp, RecordingExec};
pub use russh_exec::{ClientKey, JumpHost, RusshExec, SshOptions, SshTarget};

/// Output of one remote command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub exit_status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Errors of the SSH layer.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {host}: {message}")]
    Connect { host: String, message: String },
    #[error("host key of {host} does not match: expected {expected}, got {actual}")]
    HostKeyMismatch {
        host: String,
        expected: String,
        actual: String,
    },
    #[error("authentication as {user} on {host} failed: {message}")]
    Auth {
        host: String,
        user: String,
        message: String,
    },
    #[error("{host}: {message}")]
    Channel { host: String, message: String },
    #[error("timed out after {seconds}s on {host} waiting for {what}")]
    Timeout {
        host: String,
        what: String,
        seconds: u64,
    },
    #[error(
        "host key of {host} is not known (fingerprint {fingerprint}, not in {file}); check it and re-run with --accept-new-host-keys to trust it"
    )]
    HostKeyUnknown {
        host: String,
        fingerprint: String,
        file: String,
    },
    #[error("host key {fingerprint} of {host} is marked @revoked in {file}")]
    HostKeyRevoked {
        host: String,
        fingerprint: String,
        file: String,
    },
    #[error("known_hosts {path}: {message}")]
    KnownHosts { path: String, message: String },
    #[error("cannot load the SSH client key {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error("{host}: connection lost while {what}: {message}")]
    ConnectionLost {
        host: String,
        what: String,
        message: String,
    },
    #[error("{host}: uploaded {path} has sha256 {actual} on the host, expected {expected}")]
    UploadCorrupted {
        host: String,
        path: String,
        expected: String,
        actual: String,
    },
}

impl SshError {
    /// Whether trying again (a new connection, after a pause) can succeed. Trust and credential problems
    /// never are; a lost connection is, but only for idempotent work (the caller decides).
    pub fn retryable(&self) -> bool {
        match self {
            SshError::Connect { .. }
            | SshError::Timeout { .. }
            | SshError::ConnectionLost { .. }
            | SshError::UploadCorrupted { .. } => true,
            SshError::HostKeyMismatch { .. }
            | SshError::HostKeyUnknown { .. }
            | SshError::HostKeyRevoked { .. }
            | SshError::KnownHosts { .. }
            | SshError::KeyFile { .. }
            | SshError::Auth { .. }
            | SshError::Channel { .. } => false,
        }
    }
}

/// SSH failures end the run as failures (exit 2): the VMs exist and a re-run continues where
/// this one stopped. The hint says what to look at.
impl provision_base::error::UserFacing for SshError {
    fn exit_status(&self) -> provision_base::exit::ExitStatus {
        provision_base::exit::ExitStatus::Failure
    }

    fn hint(&self) -> Option<String> {
        let hint = match self {
            SshError::Connect { .. } => {
                "check that the VM is running and port 22 is reachable from here (or through ssh.jump_host)"
            }
            SshError::HostKeyMismatch { .. } => {
                "the VM was re-created, or this is not the host you expect: compare the fingerprint on the VM's console before replacing the stored key"
            }
            SshError::HostKeyRevoked { .. } => {
                "the key was revoked on purpose: find out why before trusting this host"
            }
            SshError::Auth { .. } => {
                "check ssh.user and ssh.private_key: the key's public half must be the one cloud-init put on the VM"
            }
            SshError::KeyFile { .. } => {
                "check ssh.private_key; an encrypted key is opened through the ssh-agent that holds it or PROVISION_SSH_PASSPHRASE"
            }
            SshError::HostKeyUnknown { .. }
            | SshError::KnownHosts { .. }
            | SshError::Channel { .. }
            | SshError::Timeout { .. }
            | SshError::ConnectionLost { .. }
            | SshError::UploadCorrupted { .. } => return None,
        };
        Some(hint.to_owned())
    }
}

/// Run commands and move files on one host. Domain code builds commands with pure functions and
/// hands them to this trait; it never formats shell strings inline.
#[async_trait]
pub trait RemoteExec: Send + Sync {
    /// The host this executor talks to (for messages).
    fn host(&self) -> &str;
    /// Run `command` through `sh -c`, with optional stdin.
    async fn run(&self, command: &str, stdin: Option<&[u8]>) -> Result<CommandOutput, SshError>;
    /// Write `data` to `path` with `mode` (atomically: temp file + rename) and verify its sha256.
    async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<(), SshError>;
    /// Read a whole file.
    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SshError>;
}
