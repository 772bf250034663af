//! Client credentials for SSH: loading a key file (plain, with a passphrase, or held by an ssh-agent)
//! and authenticating a russh session with it.

use std::path::PathBuf;
use std::sync::Arc;

use russh::client::{self, AuthResult, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey};

use super::SshError;
use super::russh_exec::{ClientKey, SshTarget};

/// Environment variable holding the passphrase of an encrypted client key (`ssh.private_key`).
pub const PASSPHRASE_ENV: &str = "PROVISION_SSH_PASSPHRASE";

/// A loaded credential (the key file is read once).
#[derive(Clone)]
pub(super) enum Credential {
    Key(Arc<PrivateKey>),
    Agent,
    /// An encrypted key file whose private half the ssh-agent at `socket` holds.
    AgentKey {
        socket: PathBuf,
        public: Arc<PublicKey>,
        path: PathBuf,
    },
}

pub(super) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

pub(super) fn load_credential(
    key: &ClientKey,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Credential, SshError> {
    match key {
        ClientKey::File { path, passphrase } => load_key_file(path, passphrase.as_deref(), env),
        ClientKey::Agent => Ok(Credential::Agent),
    }
}

/// A private key file: plain, decrypted with the given passphrase or [`PASSPHRASE_ENV`], or (encrypted
/// and neither given) left to the ssh-agent at `SSH_AUTH_SOCK`.
fn load_key_file(
    path: &std::path::Path,
    passphrase: Option<&str>,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Credential, SshError> {
    let failed = |message: String| SshError::KeyFile {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|error| failed(error.to_string()))?;
    let from_env = env(PASSPHRASE_ENV).filter(|value| !value.is_empty());
    let passphrase = passphrase.map(str::to_owned).or(from_env);
    match russh::keys::decode_secret_key(&text, passphrase.as_deref()) {
        Ok(key) => Ok(Credential::Key(Arc::new(key))),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let shown = path.display();
            let remedies = format!(
                "add it to an ssh-agent (`ssh-add {shown}`) and set SSH_AUTH_SOCK, or put its \
                 passphrase in {PASSPHRASE_ENV}"
            );
            let Some(socket) = env("SSH_AUTH_SOCK").filter(|value| !value.is_empty()) else {
                return Err(failed(format!(
                    "it is encrypted with a passphrase and no ssh-agent is available: {remedies}"
                )));
            };
            // OpenSSH keeps the public half in clear: the agent is asked to sign with exactly it.
            let public = PrivateKey::from_openssh(&text)
                .map(|key| key.public_key().clone())
                .map_err(|error| {
                    failed(format!(
                        "it is encrypted and its public key cannot be read ({error}): put its \
                         passphrase in {PASSPHRASE_ENV}"
                    ))
                })?;
            Ok(Credential::AgentKey {
                socket: PathBuf::from(socket),
                public: Arc::new(public),
                path: path.to_path_buf(),
            })
        }
        Err(error) if passphrase.is_some() => Err(failed(format!(
            "cannot decrypt it with the given passphrase ({PASSPHRASE_ENV}): {error}"
        ))),
        Err(error) => Err(failed(error.to_string())),
    }
}

/// Who is authenticating, for the errors.
struct Login<'a> {
    target: &'a SshTarget,
    label: &'a str,
}

impl Login<'_> {
    fn refused(&self, message: String) -> SshError {
        SshError::Auth {
            host: self.label.to_string(),
            user: self.target.user.clone(),
            message,
        }
    }

    fn transport(&self, error: russh::Error) -> SshError {
        SshError::Connect {
            host: self.label.to_string(),
            message: error.to_string(),
        }
    }
}

const NOT_AUTHORIZED: &str = "the server refused the client key (is it in authorized_keys?)";

/// Authenticates a connected session with the loaded credential.
pub(super) async fn authenticate<H: client::Handler>(
    mut handle: Handle<H>,
    target: &SshTarget,
    label: &str,
    credential: &Credential,
) -> Result<Handle<H>, SshError> {
    let login = Login { target, label };
    match credential {
        Credential::Key(key) => with_key(&mut handle, &login, key).await?,
        Credential::AgentKey {
            socket,
            public,
            path,
        } => with_agent_key(&mut handle, &login, socket, public, path).await?,
        Credential::Agent => with_any_agent_key(&mut handle, &login).await?,
    }
    Ok(handle)
}

async fn with_key<H: client::Handler>(
    handle: &mut Handle<H>,
    login: &Login<'_>,
    key: &Arc<PrivateKey>,
) -> Result<(), SshError> {
    let hash = rsa_hash(handle, key.algorithm().is_rsa())
        .await
        .map_err(|error| login.transport(error))?;
    let result = handle
        .authenticate_publickey(
            login.target.user.clone(),
            PrivateKeyWithHashAlg::new(key.clone(), hash),
        )
        .await
        .map_err(|error| login.transport(error))?;
    match result {
        AuthResult::Success => Ok(()),
        AuthResult::Failure { .. } => Err(login.refused(NOT_AUTHORIZED.to_string())),
    }
}

/// An encrypted key file whose private half the ssh-agent at `socket` must hold.
async fn with_agent_key<H: client::Handler>(
    handle: &mut Handle<H>,
    login: &Login<'_>,
    socket: &std::path::Path,
    public: &Arc<PublicKey>,
    path: &std::path::Path,
) -> Result<(), SshError> {
    let key_error = |message: String| SshError::KeyFile {
        path: path.display().to_string(),
        message,
    };
    let remedy = format!(
        "run `ssh-add {}`, or put its passphrase in {PASSPHRASE_ENV}",
        path.display()
    );
    let mut agent = AgentClient::connect_uds(socket).await.map_err(|error| {
        key_error(format!(
            "it is encrypted and the ssh-agent at {} cannot be reached ({error}): {remedy}",
            socket.display()
        ))
    })?;
    let identities = agent
        .request_identities()
        .await
        .map_err(|error| login.refused(format!("ssh-agent: {error}")))?;
    let held = identities.iter().any(|identity| match identity {
        AgentIdentity::PublicKey { key, .. } => key.key_data() == public.key_data(),
        AgentIdentity::Certificate { .. } => false,
    });
    if !held {
        return Err(key_error(format!(
            "it is encrypted and the ssh-agent at {} does not hold it: {remedy}",
            socket.display()
        )));
    }
    let hash = rsa_hash(handle, public.algorithm().is_rsa())
        .await
        .map_err(|error| login.transport(error))?;
    match handle
        .authenticate_publickey_with(
            login.target.user.clone(),
            public.as_ref().clone(),
            hash,
            &mut agent,
        )
        .await
    {
        Ok(AuthResult::Success) => Ok(()),
        Ok(AuthResult::Failure { .. }) => Err(login.refused(NOT_AUTHORIZED.to_string())),
        Err(error) => Err(login.refused(format!("ssh-agent: {error}"))),
    }
}

/// Every identity of the ssh-agent at `$SSH_AUTH_SOCK`, tried in order.
async fn with_any_agent_key<H: client::Handler>(
    handle: &mut Handle<H>,
    login: &Login<'_>,
) -> Result<(), SshError> {
    let mut agent = AgentClient::connect_env()
        .await
        .map_err(|error| login.refused(format!("no ssh-agent: {error}")))?;
    let identities = agent
        .request_identities()
        .await
        .map_err(|error| login.refused(format!("ssh-agent: {error}")))?;
    for identity in identities {
        let AgentIdentity::PublicKey { key, .. } = identity else {
            continue;
        };
        let hash = rsa_hash(handle, key.algorithm().is_rsa())
            .await
            .map_err(|error| login.transport(error))?;
        match handle
            .authenticate_publickey_with(login.target.user.clone(), key, hash, &mut agent)
            .await
        {
            Ok(AuthResult::Success) => return Ok(()),
            Ok(AuthResult::Failure { .. }) => {}
            Err(error) => tracing::debug!(host = login.label, %error, "agent key refused"),
        }
    }
    Err(login.refused("the server accepted none of the ssh-agent's keys".to_string()))
}

/// The RSA signature hash the server prefers when the client key is RSA (`None` otherwise, and
/// when the server names none): the same answer for a key file and for an agent's key.
async fn rsa_hash<H: client::Handler>(
    handle: &client::Handle<H>,
    rsa: bool,
) -> Result<Option<russh::keys::HashAlg>, russh::Error> {
    if !rsa {
        return Ok(None);
    }
    Ok(handle.best_supported_rsa_hash().await?.flatten())
}
