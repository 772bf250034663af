//! [`RemoteExec`] over SSH with russh: key or agent auth, host key policy, optional jump host, keepalive,
//! bounded connect retries with backoff, per-command timeouts, verified atomic uploads over SFTP.

use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::PublicKeyOrCertificate;
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Mutex, Semaphore};

pub use super::auth::PASSPHRASE_ENV;
use super::auth::{Credential, authenticate, load_credential, process_env};
use super::commands;
use super::hostkey::{self, HostKeyPolicy};
use super::{CommandOutput, RemoteExec, SshError};

/// The longest pause between two connection attempts (the first pause is 200 ms, doubled after
/// each attempt): a guest that is still booting is tried at least once a second, so its first
/// accepted connection comes at most a second after its sshd starts.
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// Where to connect and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Name used in messages (VM or node name).
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
}

impl SshTarget {
    pub fn new(name: &str, address: &str, port: u16, user: &str) -> Self {
        Self {
            name: name.to_string(),
            address: address.to_string(),
            port,
            user: user.to_string(),
        }
    }

    /// `name (address:port)`, or `address:port` when the name is the address.
    pub fn label(&self) -> String {
        if self.name == self.address || self.name.is_empty() {
            format!("{}:{}", self.address, self.port)
        } else {
            format!("{} ({}:{})", self.name, self.address, self.port)
        }
    }
}

/// The client credential.
#[derive(Debug, Clone)]
pub enum ClientKey {
    /// An OpenSSH private key file, optionally encrypted.
    File {
        path: PathBuf,
        passphrase: Option<String>,
    },
    /// Every identity of the ssh-agent at `$SSH_AUTH_SOCK`, tried in order.
    Agent,
}

/// A bastion (or the Proxmox host) that forwards the connection with `direct-tcpip`.
#[derive(Debug, Clone)]
pub struct JumpHost {
    pub target: SshTarget,
    pub key: ClientKey,
    pub policy: HostKeyPolicy,
}

/// Timeouts and behaviour; every wait is bounded.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Total time to keep trying to connect (the host may still be booting).
    pub connect_timeout: Duration,
    /// Bound on one connection attempt (TCP + handshake + auth).
    pub attempt_timeout: Duration,
    /// Bound on one command or file transfer.
    pub command_timeout: Duration,
    pub keepalive_interval: Duration,
    /// Unanswered keepalives before the connection is considered dead.
    pub keepalive_max: usize,
    /// The login user is not root: run commands through `sudo -n sh -c` and stage uploads in `/tmp`.
    pub become_root: bool,
    /// Concurrent channels on one connection (OpenSSH's MaxSessions defaults to 10).
    pub max_channels: usize,
}

impl Default for SshOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(600),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            become_root: false,
            max_channels: 8,
        }
    }
}

/// russh callbacks: host key verification against the policy. A refusal is stored so that the caller
/// reports it (russh itself only reports "unknown key").
struct Verifier {
    label: String,
    address: String,
    port: u16,
    policy: Arc<HostKeyPolicy>,
    refusal: Arc<StdMutex<Option<SshError>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // A host certificate is checked by its key: provision trusts keys, not CAs.
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(certificate) => {
                russh::keys::PublicKey::from(certificate.public_key().clone())
            }
        };
        match hostkey::verify(&self.policy, &self.label, &self.address, self.port, &key) {
            Ok(_) => Ok(true),
            Err(refusal) => {
                if let Ok(mut slot) = self.refusal.lock() {
                    *slot = Some(refusal);
                }
                Ok(false)
            }
        }
    }
}

/// One authenticated connection (and the jump connection carrying it, kept alive with it).
struct Connection {
    handle: Handle<Verifier>,
    _jump: Option<Handle<Verifier>>,
}

/// SSH executor for one host. Connects lazily, reconnects (bounded) when the connection was lost.
pub struct RusshExec {
    target: SshTarget,
    label: String,
    credential: Credential,
    policy: Arc<HostKeyPolicy>,
    options: SshOptions,
    jump: Option<(JumpHost, Credential)>,
    connection: Mutex<Option<Arc<Connection>>>,
    channels: Semaphore,
}

impl RusshExec {
    /// Connects now (waiting up to `options.connect_timeout` for the host to accept SSH) so that trust,
    /// credential and reachability problems surface here.
    pub async fn connect(
        target: SshTarget,
        key: &ClientKey,
        policy: HostKeyPolicy,
        options: SshOptions,
        jump: Option<JumpHost>,
    ) -> Result<Self, SshError> {
        Self::connect_with_env(target, key, policy, options, jump, &process_env).await
    }

    /// [`RusshExec::connect`] with `env` standing for the process environment (read for an encrypted
    /// key: [`PASSPHRASE_ENV`], `SSH_AUTH_SOCK`).
    pub async fn connect_with_env(
        target: SshTarget,
        key: &ClientKey,
        policy: HostKeyPolicy,
        options: SshOptions,
        jump: Option<JumpHost>,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Self, SshError> {
        let exec = Self::new_with_env(target, key, policy, options, jump, env)?;
        exec.connection().await?;
        Ok(exec)
    }

    /// Builds the executor without connecting (the first command connects).
    pub fn new(
        target: SshTarget,
        key: &ClientKey,
        policy: HostKeyPolicy,
        options: SshOptions,
        jump: Option<JumpHost>,
    ) -> Result<Self, SshError> {
        Self::new_with_env(target, key, policy, options, jump, &process_env)
    }

    /// [`RusshExec::new`] with `env` standing for the process environment.
    pub fn new_with_env(
        target: SshTarget,
        key: &ClientKey,
        policy: HostKeyPolicy,
        options: SshOptions,
        jump: Option<JumpHost>,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Self, SshError> {
        let credential = load_credential(key, env)?;
        let jump = match jump {
            Some(jump) => {
                let credential = load_credential(&jump.key, env)?;
                Some((jump, credential))
            }
            None => None,
        };
        Ok(Self {
            label: target.label(),
            target,
            credential,
            policy: Arc::new(policy),
            channels: Semaphore::new(options.max_channels.max(1)),
            options,
            jump,
            connection: Mutex::new(None),
        })
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Closes the connection (the next command reconnects).
    pub async fn disconnect(&self) {
        let connection = self.connection.lock().await.take();
        if let Some(connection) = connection
            && let Err(error) = connection
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await
        {
            tracing::debug!(host = %self.label, %error, "disconnect");
        }
    }

    async fn connection(&self) -> Result<Arc<Connection>, SshError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref()
            && !connection.handle.is_closed()
        {
            return Ok(connection.clone());
        }
        let connection = Arc::new(self.connect_with_retry().await?);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn forget_connection(&self) {
        self.connection.lock().await.take();
    }

    async fn connect_with_retry(&self) -> Result<Connection, SshError> {
        let started = Instant::now();
        let deadline = started + self.options.connect_timeout;
        let mut backoff = Duration::from_millis(200);
        loop {
            let attempt_bound = self
                .options
                .attempt_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            let last_error = match tokio::time::timeout(attempt_bound, self.connect_once()).await {
                Ok(Ok(connection)) => return Ok(connection),
                Ok(Err(error)) if !error.retryable() => return Err(error),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {}s", attempt_bound.as_secs_f32()),
            };
            tracing::debug!(host = %self.label, error = %last_error, "ssh not reachable yet");
            if Instant::now() + backoff >= deadline {
                return Err(SshError::Timeout {
                    host: self.label.clone(),
                    what: format!("ssh to accept connections (last error: {last_error})"),
                    seconds: self.options.connect_timeout.as_secs(),
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_CONNECT_BACKOFF);
        }
    }

    fn client_config(&self) -> Arc<client::Config> {
        Arc::new(client::Config {
            keepalive_interval: Some(self.options.keepalive_interval),
            keepalive_max: self.options.keepalive_max,
            nodelay: true,
            ..client::Config::default()
        })
    }

    async fn connect_once(&self) -> Result<Connection, SshError> {
        match &self.jump {
            None => {
                let handle = open_session(
                    &self.target,
                    &self.label,
                    &self.credential,
                    &self.policy,
                    self.client_config(),
                    None,
                )
                .await?;
                Ok(Connection {
                    handle,
                    _jump: None,
                })
            }
            Some((jump, jump_credential)) => {
                let jump_label = format!("jump host {}", jump.target.label());
                let jump_policy = Arc::new(jump.policy.clone());
                let jump_handle = open_session(
                    &jump.target,
                    &jump_label,
                    jump_credential,
                    &jump_policy,
                    self.client_config(),
                    None,
                )
                .await?;
                let channel = jump_handle
                    .channel_open_direct_tcpip(
                        self.target.address.clone(),
                        u32::from(self.target.port),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|error| SshError::Connect {
                        host: self.label.clone(),
                        message: format!("{jump_label} cannot forward to it: {error}"),
                    })?;
                let handle = open_session(
                    &self.target,
                    &self.label,
                    &self.credential,
                    &self.policy,
                    self.client_config(),
                    Some(channel.into_stream()),
                )
                .await?;
                Ok(Connection {
                    handle,
                    _jump: Some(jump_handle),
                })
            }
        }
    }

    /// One of the `max_channels` concurrent channels on this connection.
    async fn channel_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, SshError> {
        self.channels
            .acquire()
            .await
            .map_err(|_| SshError::Channel {
                host: self.label.clone(),
                message: "executor closed".to_string(),
            })
    }

    /// Runs a command with an explicit bound (instead of `options.command_timeout`).
    pub async fn run_with_timeout(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        bound: Duration,
    ) -> Result<CommandOutput, SshError> {
        let connection = self.connection().await?;
        let _permit = self.channel_permit().await?;
        let wire_command = if self.options.become_root {
            commands::as_root(command)
        } else {
            command.to_string()
        };
        match tokio::time::timeout(bound, self.exec(&connection, &wire_command, stdin)).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may be dead (partition): the next call starts a fresh one.
                self.forget_connection().await;
                Err(SshError::Timeout {
                    host: self.label.clone(),
                    what: format!("`{}` to finish", short(command)),
                    seconds: bound.as_secs(),
                })
            }
        }
    }

    async fn exec(
        &self,
        connection: &Connection,
        command: &str,
        stdin: Option<&[u8]>,
    ) -> Result<CommandOutput, SshError> {
        let lost = |message: String| SshError::ConnectionLost {
            host: self.label.clone(),
            what: format!("running `{}`", short(command)),
            message,
        };
        let mut channel = connection
            .handle
            .channel_open_session()
            .await
            .map_err(|error| lost(error.to_string()))?;
        channel
            .exec(true, command.as_bytes())
            .await
            .map_err(|error| lost(error.to_string()))?;
        if let Some(input) = stdin {
            channel
                .data(input)
                .await
                .map_err(|error| lost(error.to_string()))?;
        }
        channel
            .eof()
            .await
            .map_err(|error| lost(error.to_string()))?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut exit_status = None;
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status: code } => exit_status = Some(code),
                ChannelMsg::ExitSignal {
                    signal_name,
                    error_message,
                    ..
                } => {
                    stderr.extend_from_slice(
                        format!("remote command killed by signal {signal_name:?} {error_message}")
                            .as_bytes(),
                    );
                    exit_status = Some(255);
                }
                ChannelMsg::Failure => {
                    return Err(SshError::Channel {
                        host: self.label.clone(),
                        message: format!("the server refused to run `{}`", short(command)),
                    });
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        match exit_status {
            Some(exit_status) => Ok(CommandOutput {
                exit_status,
                stdout,
                stderr,
            }),
            None => Err(lost(
                "the channel closed without an exit status".to_string(),
            )),
        }
    }

    /// Runs a command that must succeed.
    async fn run_checked(&self, command: &str) -> Result<CommandOutput, SshError> {
        let output = self.run(command, None).await?;
        if output.exit_status == 0 {
            Ok(output)
        } else {
            Err(SshError::Channel {
                host: self.label.clone(),
                message: format!(
                    "`{}` exited with {}: {}",
                    short(command),
                    output.exit_status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            })
        }
    }

    async fn sftp_upload(&self, path: &str, data: &[u8]) -> Result<(), SshError> {
        let connection = self.connection().await?;
        let _permit = self.channel_permit().await?;
        let failed = |step: &str, message: String| SshError::Channel {
            host: self.label.clone(),
            message: format!("sftp {step} {path}: {message}"),
        };
        let upload = async {
            let channel = connection
                .handle
                .channel_open_session()
                .await
                .map_err(|error| failed("session for", error.to_string()))?;
            channel
                .request_subsystem(true, "sftp")
                .await
                .map_err(|error| failed("subsystem for", error.to_string()))?;
            let sftp = SftpSession::new(channel.into_stream())
                .await
                .map_err(|error| failed("start for", error.to_string()))?;
            // Private until verified: the final mode is set after the sha256 check.
            let attributes = FileAttributes {
                permissions: Some(0o600),
                ..FileAttributes::empty()
            };
            let mut file = sftp
                .open_with_flags_and_attributes(
                    path,
                    OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
                    attributes,
                )
                .await
                .map_err(|error| failed("create", error.to_string()))?;
            file.write_all(data)
                .await
                .map_err(|error| failed("write", error.to_string()))?;
            file.close()
                .await
                .map_err(|error| failed("close", error.to_string()))?;
            sftp.close()
                .await
                .map_err(|error| failed("end after", error.to_string()))
        };
        match tokio::time::timeout(self.options.command_timeout, upload).await {
            Ok(result) => result,
            Err(_) => {
                self.forget_connection().await;
                Err(SshError::Timeout {
                    host: self.label.clone(),
                    what: format!("the upload of {path}"),
                    seconds: self.options.command_timeout.as_secs(),
                })
            }
        }
    }
}

/// TCP (or the jump channel) + handshake + host key check + authentication.
async fn open_session(
    target: &SshTarget,
    label: &str,
    credential: &Credential,
    policy: &Arc<HostKeyPolicy>,
    config: Arc<client::Config>,
    through: Option<russh::ChannelStream<client::Msg>>,
) -> Result<Handle<Verifier>, SshError> {
    let refusal = Arc::new(StdMutex::new(None));
    let verifier = Verifier {
        label: label.to_string(),
        address: target.address.clone(),
        port: target.port,
        policy: policy.clone(),
        refusal: refusal.clone(),
    };
    let connected = match through {
        None => client::connect(config, (target.address.as_str(), target.port), verifier).await,
        Some(stream) => client::connect_stream(config, stream, verifier).await,
    };
    let handle = match connected {
        Ok(handle) => handle,
        Err(error) => {
            let refused = refusal.lock().ok().and_then(|mut slot| slot.take());
            return Err(refused.unwrap_or_else(|| SshError::Connect {
                host: label.to_string(),
                message: error.to_string(),
            }));
        }
    };
    authenticate(handle, target, label, credential).await
}

/// A command shortened for messages (first line, at most 80 characters).
fn short(command: &str) -> String {
    let first = command.lines().next().unwrap_or_default();
    let mut shown: String = first.chars().take(80).collect();
    if shown.len() < command.len() {
        shown.push('…');
    }
    shown
}

#[async_trait]
impl RemoteExec for RusshExec {
    fn host(&self) -> &str {
        &self.target.name
    }

    /// Runs `command` through the login user's shell (`sh -c` semantics), or through `sudo -n sh -c`
    /// when `become_root`; bounded by `options.command_timeout`.
    async fn run(&self, command: &str, stdin: Option<&[u8]>) -> Result<CommandOutput, SshError> {
        self.run_with_timeout(command, stdin, self.options.command_timeout)
            .await
    }

    async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<(), SshError> {
        let sha256 = hex::encode(sha2::Sha256::digest(data));
        let unique = format!("{:016x}", rand::random::<u64>());
        let staged = commands::staging_path(path, &unique);
        let install = commands::verify_and_install(&staged, path, &sha256, mode);
        let output = if self.options.become_root {
            let upload = format!("/tmp/.provision-upload-{unique}");
            self.sftp_upload(&upload, data).await?;
            let script = format!(
                "{} && {} && {}",
                commands::prepare_dir(path),
                commands::move_staged(&upload, &staged),
                install
            );
            self.run(&script, None).await?
        } else {
            self.run_checked(&commands::prepare_dir(path)).await?;
            self.sftp_upload(&staged, data).await?;
            self.run(&install, None).await?
        };
        match output.exit_status {
            0 => Ok(()),
            3 => Err(SshError::UploadCorrupted {
                host: self.label.clone(),
                path: path.to_string(),
                expected: sha256,
                actual: String::from_utf8_lossy(&output.stdout).trim().to_string(),
            }),
            code => Err(SshError::Channel {
                host: self.label.clone(),
                message: format!(
                    "installing {path} failed (exit {code}): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            }),
        }
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SshError> {
        let output = self.run(&commands::read_file(path), None).await?;
        if output.exit_status == 0 {
            Ok(output.stdout)
        } else {
            Err(SshError::Channel {
                host: self.label.clone(),
                message: format!(
                    "cannot read {path}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_host_and_address() {
        assert_eq!(
            SshTarget::new("cp1", "10.77.0.11", 22, "root").label(),
            "cp1 (10.77.0.11:22)"
        );
        assert_eq!(
            SshTarget::new("10.0.0.1", "10.0.0.1", 2222, "root").label(),
            "10.0.0.1:2222"
        );
    }

    #[test]
    fn short_commands_for_messages() {
        assert_eq!(short("true"), "true");
        assert_eq!(short("a\nb"), "a…");
        assert_eq!(short(&"x".repeat(100)).chars().count(), 81);
    }

    #[test]
    fn missing_key_file_is_a_named_error() {
        let Err(error) = RusshExec::new(
            SshTarget::new("cp1", "10.77.0.11", 22, "root"),
            &ClientKey::File {
                path: PathBuf::from("/nonexistent/key"),
                passphrase: None,
            },
            HostKeyPolicy::Expected(Vec::new()),
            SshOptions::default(),
            None,
        ) else {
            panic!("loading a missing key must fail");
        };
        assert!(error.to_string().contains("/nonexistent/key"), "{error}");
    }
}
