//! Remote execution on guests: the [`RemoteExec`] trait and its russh implementation.

use async_trait::async_trait;

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
