//! `--print-commands`: a [`RemoteExec`] wrapper that records (and logs) every remote operation, and can
//! stand alone as a dry run that executes nothing.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::Digest as _;

use super::{CommandOutput, RemoteExec, SshError};

/// One remote operation, as shown by `--print-commands`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedOp {
    Run {
        host: String,
        command: String,
        stdin_bytes: Option<usize>,
    },
    WriteFile {
        host: String,
        path: String,
        mode: u32,
        bytes: usize,
        sha256: String,
    },
    ReadFile {
        host: String,
        path: String,
    },
}

impl fmt::Display for RecordedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordedOp::Run {
                host,
                command,
                stdin_bytes: None,
            } => write!(f, "[{host}] $ {command}"),
            RecordedOp::Run {
                host,
                command,
                stdin_bytes: Some(bytes),
            } => write!(f, "[{host}] $ {command}  (stdin: {bytes} bytes)"),
            RecordedOp::WriteFile {
                host,
                path,
                mode,
                bytes,
                sha256,
            } => write!(
                f,
                "[{host}] write {path} (mode {mode:04o}, {bytes} bytes, sha256 {sha256})"
            ),
            RecordedOp::ReadFile { host, path } => write!(f, "[{host}] read {path}"),
        }
    }
}

/// Shared, ordered log of operations across hosts (clone it into every wrapper).
#[derive(Debug, Clone, Default)]
pub struct CommandLog(Arc<Mutex<Vec<RecordedOp>>>);

impl CommandLog {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&self, op: RecordedOp) {
        tracing::info!(target: "provision::commands", "{op}");
        match self.0.lock() {
            Ok(mut ops) => ops.push(op),
            Err(poisoned) => poisoned.into_inner().push(op),
        }
    }

    /// Everything recorded so far.
    pub fn ops(&self) -> Vec<RecordedOp> {
        match self.0.lock() {
            Ok(ops) => ops.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Records every operation into a [`CommandLog`], then forwards it to the wrapped executor; without one
/// (a dry run) commands "succeed" with empty output and reads return nothing.
pub struct RecordingExec {
    host: String,
    inner: Option<Arc<dyn RemoteExec>>,
    log: CommandLog,
}

impl RecordingExec {
    /// Records and forwards to `inner`.
    pub fn new(inner: Arc<dyn RemoteExec>, log: CommandLog) -> Self {
        Self {
            host: inner.host().to_string(),
            inner: Some(inner),
            log,
        }
    }

    /// Records only; nothing reaches `host`.
    pub fn dry_run(host: &str, log: CommandLog) -> Self {
        Self {
            host: host.to_string(),
            inner: None,
            log,
        }
    }
}

#[async_trait]
impl RemoteExec for RecordingExec {
    fn host(&self) -> &str {
        &self.host
    }

    async fn run(&self, command: &str, stdin: Option<&[u8]>) -> Result<CommandOutput, SshError> {
        self.log.push(RecordedOp::Run {
            host: self.host.clone(),
            command: command.to_string(),
            stdin_bytes: stdin.map(<[u8]>::len),
        });
        match &self.inner {
            Some(inner) => inner.run(command, stdin).await,
            None => Ok(CommandOutput {
                exit_status: 0,
                stdout: Vec::new(),
                stderr: Vec::new(),
            }),
        }
    }

    async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<(), SshError> {
        self.log.push(RecordedOp::WriteFile {
            host: self.host.clone(),
            path: path.to_string(),
            mode,
            bytes: data.len(),
            sha256: hex::encode(sha2::Sha256::digest(data)),
        });
        match &self.inner {
            Some(inner) => inner.write_file(path, data, mode).await,
            None => Ok(()),
        }
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SshError> {
        self.log.push(RecordedOp::ReadFile {
            host: self.host.clone(),
            path: path.to_string(),
        });
        match &self.inner {
            Some(inner) => inner.read_file(path).await,
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn dry_run_records_in_order_and_prints_readably() {
        let log = CommandLog::new();
        let exec = RecordingExec::dry_run("cp1", log.clone());
        exec.run("swapoff -a", None).await.unwrap();
        exec.write_file("/etc/x", b"hello\n", 0o644).await.unwrap();
        exec.run("sh -s", Some(b"echo hi")).await.unwrap();
        assert!(exec.read_file("/etc/x").await.unwrap().is_empty());
        let printed: Vec<String> = log.ops().iter().map(ToString::to_string).collect();
        assert_eq!(
            printed,
            vec![
                "[cp1] $ swapoff -a".to_string(),
                "[cp1] write /etc/x (mode 0644, 6 bytes, sha256 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03)".to_string(),
                "[cp1] $ sh -s  (stdin: 7 bytes)".to_string(),
                "[cp1] read /etc/x".to_string(),
            ]
        );
    }
}
