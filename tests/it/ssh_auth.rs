//! Client authentication with an encrypted private key against an in-process russh server on
//! loopback: the passphrase from `PROVISION_SSH_PASSPHRASE`, the key held by an ssh-agent, and the
//! error naming the key file and both remedies when neither is there. Keys come from `ssh-keygen`
//! (skipped loudly when OpenSSH's tools are missing).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use provision::ssh::russh_exec::PASSPHRASE_ENV;
use provision::ssh::{
    ClientKey, HostKeyPolicy, RemoteExec, RusshExec, SshError, SshOptions, SshTarget,
};
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{self, Auth, Msg, Server as _, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};

const PASSPHRASE: &str = "correct horse battery";

/// Accepts exactly one public key; answers every `exec` with `ran: <command>` and status 0.
#[derive(Clone)]
struct TestServer {
    allowed: PublicKey,
}

impl server::Server for TestServer {
    type Handler = Self;
    fn new_client(&mut self, _: Option<std::net::SocketAddr>) -> Self {
        self.clone()
    }
}

impl server::Handler for TestServer {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if key.public_key.key_data() == self.allowed.key_data() {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        let answer = format!("ran: {}\n", String::from_utf8_lossy(data));
        session.data(channel, answer.into_bytes())?;
        session.exit_status_request(channel, 0)?;
        session.eof(channel)?;
        session.close(channel)
    }
}

/// Starts the server on loopback; returns its port and host key.
async fn start_server(allowed: PublicKey) -> (u16, PublicKey) {
    let dir = tempfile::tempdir().unwrap();
    let host_key =
        PrivateKey::from_openssh(std::fs::read_to_string(keygen(dir.path(), "host", "")).unwrap())
            .unwrap();
    let public = host_key.public_key().clone();
    let config = Arc::new(server::Config {
        keys: vec![host_key],
        auth_rejection_time: Duration::from_millis(10),
        auth_rejection_time_initial: Some(Duration::ZERO),
        ..server::Config::default()
    });
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut server = TestServer { allowed };
        server.run_on_socket(config, &socket).await.unwrap();
    });
    (port, public)
}

/// Whether `tool` runs; a loud message when it does not.
fn have(tool: &str, test: &str) -> bool {
    let found = Command::new(tool)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("SKIPPED {test}: `{tool}` (OpenSSH) is not installed");
    }
    found
}

/// `ssh-keygen -t ed25519` into `dir/name` with `passphrase` ("" = none); returns the private key path.
fn keygen(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", name, "-N", passphrase, "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

fn public_key_of(private: &Path) -> PublicKey {
    PublicKey::from_openssh(&std::fs::read_to_string(private.with_extension("pub")).unwrap())
        .unwrap()
}

fn options() -> SshOptions {
    SshOptions {
        connect_timeout: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(10),
        ..SshOptions::default()
    }
}

async fn connect(
    port: u16,
    host_key: &PublicKey,
    key: &Path,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<RusshExec, SshError> {
    RusshExec::connect_with_env(
        SshTarget::new("node", "127.0.0.1", port, "root"),
        &ClientKey::File {
            path: key.to_path_buf(),
            passphrase: None,
        },
        HostKeyPolicy::Expected(vec![host_key.clone()]),
        options(),
        None,
        env,
    )
    .await
}

#[tokio::test]
async fn encrypted_key_authenticates_with_the_passphrase_from_the_environment() {
    if !have(
        "ssh-keygen",
        "encrypted_key_authenticates_with_the_passphrase_from_the_environment",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "id_ed25519", PASSPHRASE);
    let (port, host_key) = start_server(public_key_of(&key)).await;
    let env = |name: &str| (name == PASSPHRASE_ENV).then(|| PASSPHRASE.to_owned());
    let exec = connect(port, &host_key, &key, &env).await.unwrap();
    let output = exec.run("true", None).await.unwrap();
    assert_eq!(output.exit_status, 0);
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ran: "));

    let wrong = |name: &str| (name == PASSPHRASE_ENV).then(|| "wrong".to_owned());
    let Err(error) = connect(port, &host_key, &key, &wrong).await else {
        panic!("a wrong passphrase must fail");
    };
    let message = error.to_string();
    assert!(message.contains(&key.display().to_string()), "{message}");
    assert!(message.contains(PASSPHRASE_ENV), "{message}");
}

#[tokio::test]
async fn encrypted_key_without_passphrase_or_agent_names_the_file_and_both_remedies() {
    if !have(
        "ssh-keygen",
        "encrypted_key_without_passphrase_or_agent_names_the_file_and_both_remedies",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "id_ed25519", PASSPHRASE);
    let (port, host_key) = start_server(public_key_of(&key)).await;
    let Err(error) = connect(port, &host_key, &key, &|_| None).await else {
        panic!("an encrypted key cannot be used without its passphrase");
    };
    let message = error.to_string();
    assert!(matches!(error, SshError::KeyFile { .. }), "{error:?}");
    assert!(
        message.contains(&format!("ssh-add {}", key.display())),
        "{message}"
    );
    assert!(message.contains("SSH_AUTH_SOCK"), "{message}");
    assert!(message.contains(PASSPHRASE_ENV), "{message}");
}

/// An ssh-agent in the foreground on a socket in `dir`, ended (by its own pid) on drop.
struct Agent {
    child: std::process::Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "ssh-agent did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent { child, socket }
    }

    fn add(&self, key: &Path) {
        let status = Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "ssh-add {}", key.display());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.kill().is_ok() {
            self.child.wait().ok();
        }
    }
}

#[tokio::test]
async fn encrypted_key_authenticates_through_the_ssh_agent_that_holds_it() {
    let test = "encrypted_key_authenticates_through_the_ssh_agent_that_holds_it";
    if !have("ssh-keygen", test) || !have("ssh-agent", test) || !have("ssh-add", test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "id_ed25519", PASSPHRASE);
    let (port, host_key) = start_server(public_key_of(&key)).await;
    let agent = Agent::start(dir.path());
    let socket = agent.socket.display().to_string();
    let env = move |name: &str| (name == "SSH_AUTH_SOCK").then(|| socket.clone());

    // The agent does not hold the key yet: the error says what to run.
    let Err(error) = connect(port, &host_key, &key, &env).await else {
        panic!("an agent without the key cannot authenticate");
    };
    assert!(
        error
            .to_string()
            .contains(&format!("ssh-add {}", key.display())),
        "{error}"
    );

    // The agent holds the same key (added from a decrypted copy: no passphrase prompt).
    let plain = dir.path().join("plain");
    std::fs::copy(&key, &plain).unwrap();
    let status = Command::new("ssh-keygen")
        .args(["-q", "-p", "-P", PASSPHRASE, "-N", "", "-f"])
        .arg(&plain)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    agent.add(&plain);
    let exec = connect(port, &host_key, &key, &env).await.unwrap();
    assert_eq!(exec.run("true", None).await.unwrap().exit_status, 0);
}
