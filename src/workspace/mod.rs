//! The workspace directory: `provision.toml` (Proxmox endpoint and credentials by reference), `.provision/`, `.gitignore`.
//!
//! Secrets never live in `provision.toml` itself: it names files (`api_token_file`,
//! `password_file`) or leaves them to the environment variables the Terraform provider users
//! already have (`PROXMOX_VE_*`). Environment variables override file values.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::profile::diagnostic::{Diagnostic, Finding, KeyPath, Severity, Target};
use crate::profile::{Locator, locate_findings, parse_diagnostic};

mod clusters;
mod profile_file;
mod settings_hint;
pub use clusters::CLUSTERS_DIR;

/// File name of the workspace configuration.
pub const CONFIG_FILE: &str = "provision.toml";
/// Directory for state, secrets and the kubeconfig.
pub const STATE_DIR: &str = ".provision";

/// The commented configuration `provision init` writes.
pub const CONFIG_TEMPLATE: &str = include_str!("provision.toml.template");

const GITIGNORE: &str = "# Written by `provision init`: state and secrets stay out of Git.\n.provision/\n*.token\nkubeconfig\n";

/// A workspace rooted at a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub root: PathBuf,
    /// The cluster this view is scoped to and its directory ([`Workspace::for_cluster`]).
    cluster: Option<(String, PathBuf)>,
}

/// Errors reading or preparing a workspace.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is invalid", path.display())]
    Invalid {
        path: PathBuf,
        text: String,
        diagnostics: Vec<Diagnostic>,
    },
    #[error("secret name `{0}` must be a plain file name")]
    SecretName(String),
    /// Another user could have written it: refused, the message says how to fix the mode or owner.
    #[error("refusing {}: {message}", path.display())]
    Untrusted { path: PathBuf, message: String },
}

/// An invalid or untrusted workspace is the user's to fix; a failed file operation is not.
impl crate::error::UserFacing for WorkspaceError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            WorkspaceError::Invalid { .. } | WorkspaceError::Untrusted { .. } => {
                crate::exit::ExitStatus::UserError
            }
            WorkspaceError::Io { .. } | WorkspaceError::SecretName(_) => {
                crate::exit::ExitStatus::Failure
            }
        }
    }

    /// `Invalid` carries its hints in its diagnostics.
    fn hint(&self) -> Option<String> {
        match self {
            WorkspaceError::Untrusted { .. } => Some(
                "provision keeps tokens, keys and the k3s binary there: only you may write it"
                    .to_owned(),
            ),
            WorkspaceError::Invalid { .. }
            | WorkspaceError::Io { .. }
            | WorkspaceError::SecretName(_) => None,
        }
    }
}

impl From<crate::files::FileError> for WorkspaceError {
    fn from(error: crate::files::FileError) -> Self {
        if error.is_untrusted() {
            return WorkspaceError::Untrusted {
                message: error.source.to_string(),
                path: error.path,
            };
        }
        WorkspaceError::Io {
            action: error.action,
            path: error.path,
            source: error.source,
        }
    }
}

impl WorkspaceError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| WorkspaceError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `provision.toml` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    #[serde(default)]
    pub proxmox: ProxmoxConfig,
}

/// The `[proxmox]` section: where the API is and how to authenticate, by reference only.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxConfig {
    /// `https://pve1.example:8006` (env `PROXMOX_VE_ENDPOINT` overrides).
    pub endpoint: Option<String>,
    /// File holding `USER@REALM!TOKENID=SECRET` (env `PROXMOX_VE_API_TOKEN` overrides).
    pub api_token_file: Option<PathBuf>,
    /// `root@pam` for ticket authentication (env `PROXMOX_VE_USERNAME`).
    pub username: Option<String>,
    /// File holding the password (env `PROXMOX_VE_PASSWORD`).
    pub password_file: Option<PathBuf>,
    /// Skip certificate verification (env `PROXMOX_VE_INSECURE`); prefer `fingerprint` or `ca_file`.
    #[serde(default)]
    pub insecure: bool,
    /// SHA-256 of the server certificate, `AA:BB:…` as `pvenode cert info` prints it.
    pub fingerprint: Option<String>,
    /// CA certificate (PEM) that signed the server certificate.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for ProxmoxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxmoxConfig")
            .field("endpoint", &self.endpoint)
            .field("api_token_file", &self.api_token_file)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("insecure", &self.insecure)
            .field("fingerprint", &self.fingerprint)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// A secret value; `Debug` and `Display` never show it.
pub use crate::secret::Secret;

/// How to authenticate against the Proxmox API, resolved from file and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `USER@REALM!TOKENID=SECRET`.
    ApiToken(Secret),
    /// Ticket authentication.
    Password { username: String, password: Secret },
    /// An API token for everything, and `root@pam` (ticket) only for requests carrying keys no
    /// token may set (`hugepages`, `keephugepages`, `affinity`): PROXMOX_VE_API_TOKEN together
    /// with PROXMOX_VE_USERNAME=root@pam and PROXMOX_VE_PASSWORD.
    TokenWithRoot {
        token: Secret,
        root_password: Secret,
    },
}

/// Certificate trust for the API connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system roots.
    System,
    /// Only a server certificate with this SHA-256 (32 bytes).
    Fingerprint([u8; 32]),
    /// A CA file (PEM).
    CaFile(PathBuf),
    /// No verification at all.
    Insecure,
}

/// Everything needed to open an API connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxmoxSettings {
    pub endpoint: String,
    pub credentials: Credentials,
    pub trust: Trust,
}

/// Why the Proxmox settings are incomplete (a user error: say what to set).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("no Proxmox endpoint: set [proxmox] endpoint in provision.toml or PROXMOX_VE_ENDPOINT")]
    NoEndpoint,
    #[error("Proxmox endpoint `{0}` is not an https:// URL")]
    BadEndpoint(String),
    #[error(
        "no Proxmox credentials: set PROXMOX_VE_API_TOKEN (or api_token_file), or PROXMOX_VE_USERNAME and PROXMOX_VE_PASSWORD (or username and password_file)"
    )]
    NoCredentials,
    #[error("cannot read {what} from {path}: {message}")]
    SecretFile {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("API token must look like USER@REALM!TOKENID=SECRET")]
    BadToken,
    #[error(
        "fingerprint `{0}` is not 32 colon-separated hex bytes (as `pvenode cert info` prints)"
    )]
    BadFingerprint(String),
    #[error("PROXMOX_VE_INSECURE=`{0}` is not true/false/1/0")]
    BadInsecure(String),
}

/// What `init` did to each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitAction {
    Created,
    /// Already there; left exactly as it was.
    Kept,
}

impl Workspace {
    /// A workspace at `dir` (which need not hold `provision.toml` yet).
    pub fn open(dir: &Path) -> Self {
        Self {
            root: dir.to_path_buf(),
            cluster: None,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    /// `templates/`: files here replace the built-in templates of the same relative path
    /// (see [`crate::templates`]).
    pub fn templates_dir(&self) -> PathBuf {
        self.root.join(crate::templates::OVERRIDE_DIR)
    }

    /// Creates the workspace files that are missing; never touches existing ones.
    pub fn init(&self) -> Result<Vec<(PathBuf, InitAction)>, WorkspaceError> {
        let mut actions = Vec::new();
        std::fs::create_dir_all(&self.root).map_err(WorkspaceError::io("create", &self.root))?;
        actions.push((
            self.config_path(),
            write_new(&self.config_path(), CONFIG_TEMPLATE.as_bytes(), 0o644)?,
        ));
        let gitignore = self.root.join(".gitignore");
        actions.push((
            gitignore.clone(),
            write_new(&gitignore, GITIGNORE.as_bytes(), 0o644)?,
        ));
        let state = self.state_dir();
        let action = if state.is_dir() {
            InitAction::Kept
        } else {
            InitAction::Created
        };
        if let Ok(metadata) = std::fs::metadata(&state)
            && std::os::unix::fs::MetadataExt::uid(&metadata) == crate::files::current_uid()
        {
            // `init` repairs a workspace of the user's own that an earlier umask left open.
            std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))
                .map_err(WorkspaceError::io("restrict", &state))?;
        }
        create_private_dir(&state)?;
        actions.push((state, action));
        Ok(actions)
    }

    /// Parses `provision.toml`; a missing file is an empty configuration (everything from the environment).
    pub fn config(&self) -> Result<WorkspaceConfig, WorkspaceError> {
        let path = self.config_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(WorkspaceConfig::default());
            }
            Err(source) => {
                return Err(WorkspaceError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let config: WorkspaceConfig = match toml::from_str(&text) {
            Ok(config) => config,
            Err(error) => {
                let locator = Locator::new(&text);
                let diagnostic =
                    parse_diagnostic(&path.display().to_string(), &text, &locator, &error);
                return Err(WorkspaceError::Invalid {
                    path,
                    text,
                    diagnostics: vec![diagnostic],
                });
            }
        };
        let proxmox = KeyPath::root().key("proxmox");
        let mut findings = Vec::new();
        if let Some(fingerprint) = &config.proxmox.fingerprint
            && parse_fingerprint(fingerprint).is_none()
        {
            findings.push(Finding {
                severity: Severity::Error,
                path: proxmox.key("fingerprint"),
                target: Target::Value,
                message: format!("fingerprint `{fingerprint}` is not 32 colon-separated hex bytes"),
                hint: Some(
                    "copy the SHA-256 line of `pvenode cert info` on the Proxmox host".to_owned(),
                ),
            });
        }
        if let Some(endpoint) = &config.proxmox.endpoint
            && !endpoint.starts_with("https://")
        {
            findings.push(Finding {
                severity: Severity::Error,
                path: proxmox.key("endpoint"),
                target: Target::Value,
                message: format!("endpoint `{endpoint}` is not an https:// URL"),
                hint: Some("the Proxmox API listens on https://HOST:8006".to_owned()),
            });
        }
        let diagnostics = locate_findings(
            &path.display().to_string(),
            &text,
            &Locator::new(&text),
            findings,
        );
        if diagnostics.is_empty() {
            Ok(config)
        } else {
            Err(WorkspaceError::Invalid {
                path,
                text,
                diagnostics,
            })
        }
    }

    /// Resolves endpoint, credentials and trust from `provision.toml` and the process environment.
    pub fn proxmox_settings(
        &self,
    ) -> Result<Result<ProxmoxSettings, SettingsError>, WorkspaceError> {
        let config = self.config()?;
        Ok(resolve_settings(&config.proxmox, &self.root, |name| {
            std::env::var(name).ok()
        }))
    }

    /// Writes `.provision/secrets/<name>` with mode 0600 (atomically: temp file + rename).
    pub fn write_secret(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, WorkspaceError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(WorkspaceError::SecretName(name.to_owned()));
        }
        create_private_dir(&self.state_dir())?;
        let dir = self.secrets_dir();
        create_private_dir(&dir)?;
        let path = dir.join(name);
        crate::files::write_atomic(&path, bytes, 0o600)?;
        Ok(path)
    }

    /// Reads `.provision/secrets/<name>`, `None` when it does not exist; refused when another user
    /// could have written the file or its directories.
    pub fn read_secret(&self, name: &str) -> Result<Option<Secret>, WorkspaceError> {
        let dir = self.secrets_dir();
        if !dir.is_dir() {
            return Ok(None);
        }
        crate::files::check_trusted(&self.state_dir())?;
        crate::files::check_trusted(&dir)?;
        let path = dir.join(name);
        match crate::files::read_trusted(&path)? {
            Some(bytes) => Ok(Some(Secret::new(
                String::from_utf8_lossy(&bytes).into_owned(),
            ))),
            None => Ok(None),
        }
    }
}

/// Creates `dir` 0700 whatever the umask; an existing one others could write is refused (with the
/// `chmod`/`chown` that fixes it) rather than silently narrowed.
fn create_private_dir(dir: &Path) -> Result<(), WorkspaceError> {
    Ok(crate::files::create_private_dir(dir)?)
}

/// Writes `path` only when it does not exist yet.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<InitAction, WorkspaceError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path);
    match file {
        Ok(mut file) => {
            file.write_all(bytes)
                .map_err(WorkspaceError::io("write", path))?;
            Ok(InitAction::Created)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(InitAction::Kept),
        Err(source) => Err(WorkspaceError::Io {
            action: "create",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses `AA:BB:…` (32 bytes, either case).
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|part| {
            if part.len() == 2 {
                u8::from_str_radix(part, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<Vec<u8>>>()?;
    bytes.try_into().ok()
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Resolves settings with `env` as the environment (injected for tests); env values win.
pub fn resolve_settings(
    config: &ProxmoxConfig,
    root: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ProxmoxSettings, SettingsError> {
    let non_empty = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let endpoint = non_empty("PROXMOX_VE_ENDPOINT")
        .or_else(|| config.endpoint.clone())
        .ok_or(SettingsError::NoEndpoint)?;
    let endpoint = endpoint.trim().trim_end_matches('/').to_owned();
    if !endpoint.starts_with("https://") {
        return Err(SettingsError::BadEndpoint(endpoint));
    }
    let read = |what: &'static str, path: &Path| {
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            root.join(path)
        };
        let failed = |message: String| SettingsError::SecretFile {
            what,
            path: path.display().to_string(),
            message,
        };
        // Only the user may have written it (a planted token would send requests as someone else).
        crate::files::check_trusted(&path).map_err(|error| failed(error.source.to_string()))?;
        if crate::files::readable_by_others(&path) {
            let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            tracing::warn!(
                target: provision_base::SECURITY_TARGET,
                "{} ({what}) is readable by other users; fix: `chmod 600 {}`",
                real.display(),
                real.display()
            );
        }
        std::fs::read_to_string(&path)
            .map(|text| text.trim().to_owned())
            .map_err(|error| failed(error.to_string()))
    };
    let token = match non_empty("PROXMOX_VE_API_TOKEN") {
        Some(token) => Some(token.trim().to_owned()),
        None => match &config.api_token_file {
            Some(path) => Some(read("the API token", path)?),
            None => None,
        },
    };
    let username = non_empty("PROXMOX_VE_USERNAME").or_else(|| config.username.clone());
    // The password is read only when it will be used: alone, or as root@pam beside a token.
    let wants_password = token.is_none() || username.as_deref() == Some("root@pam");
    let password = match non_empty("PROXMOX_VE_PASSWORD") {
        Some(password) => Some(password),
        None => match (&config.password_file, wants_password) {
            (Some(path), true) => Some(read("the password", path)?),
            _ => None,
        },
    };
    let credentials = if let Some(token) = token {
        let valid = token
            .split_once('!')
            .and_then(|(user, rest)| rest.split_once('=').map(|(id, secret)| (user, id, secret)))
            .is_some_and(|(user, id, secret)| {
                user.contains('@') && !id.is_empty() && !secret.is_empty()
            });
        if !valid {
            return Err(SettingsError::BadToken);
        }
        match (username.as_deref(), password) {
            // The token does everything; root@pam only what no token may (hugepages, affinity).
            (Some("root@pam"), Some(password)) => Credentials::TokenWithRoot {
                token: Secret::new(token),
                root_password: Secret::new(password),
            },
            _ => Credentials::ApiToken(Secret::new(token)),
        }
    } else {
        match (username, password) {
            (Some(username), Some(password)) => Credentials::Password {
                username,
                password: Secret::new(password),
            },
            _ => return Err(SettingsError::NoCredentials),
        }
    };
    let insecure = match env("PROXMOX_VE_INSECURE") {
        Some(value) => parse_bool(&value).ok_or(SettingsError::BadInsecure(value))?,
        None => config.insecure,
    };
    // PROXMOX_VE_FINGERPRINT (what `provision sim serve` prints) wins over the file, like the
    // other PROXMOX_VE_* variables.
    let fingerprint = env("PROXMOX_VE_FINGERPRINT")
        .filter(|value| !value.trim().is_empty())
        .or_else(|| config.fingerprint.clone());
    let trust = if let Some(fingerprint) = &fingerprint {
        Trust::Fingerprint(
            parse_fingerprint(fingerprint)
                .ok_or_else(|| SettingsError::BadFingerprint(fingerprint.clone()))?,
        )
    } else if let Some(ca) = &config.ca_file {
        Trust::CaFile(if ca.is_absolute() {
            ca.clone()
        } else {
            root.join(ca)
        })
    } else if insecure {
        Trust::Insecure
    } else {
        Trust::System
    };
    Ok(ProxmoxSettings {
        endpoint,
        credentials,
        trust,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn environment_overrides_the_file_and_secrets_are_redacted() {
        let config = ProxmoxConfig {
            endpoint: Some("https://file:8006".to_owned()),
            ..ProxmoxConfig::default()
        };
        let settings = resolve_settings(
            &config,
            Path::new("/"),
            env(&[
                ("PROXMOX_VE_ENDPOINT", "https://env:8006/"),
                ("PROXMOX_VE_API_TOKEN", "root@pam!ci=s3cr3t-value"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.endpoint, "https://env:8006");
        assert_eq!(settings.trust, Trust::System);
        let debug = format!("{settings:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[test]
    fn a_token_with_root_at_pam_uses_root_only_for_root_only_keys() {
        let config = ProxmoxConfig {
            endpoint: Some("https://pve:8006".to_owned()),
            ..ProxmoxConfig::default()
        };
        let token = ("PROXMOX_VE_API_TOKEN", "provision@pve!ci=tok3n-value");
        let both = resolve_settings(
            &config,
            Path::new("/"),
            env(&[
                token,
                ("PROXMOX_VE_USERNAME", "root@pam"),
                ("PROXMOX_VE_PASSWORD", "pa55word"),
            ]),
        )
        .unwrap();
        match &both.credentials {
            Credentials::TokenWithRoot {
                token,
                root_password,
            } => {
                assert_eq!(token.expose(), "provision@pve!ci=tok3n-value");
                assert_eq!(root_password.expose(), "pa55word");
            }
            other => panic!("{other:?}"),
        }
        let debug = format!("{both:?}");
        assert!(
            !debug.contains("pa55word") && !debug.contains("tok3n"),
            "{debug}"
        );
        // Another user's password beside a token: the token alone.
        let other = resolve_settings(
            &config,
            Path::new("/"),
            env(&[
                token,
                ("PROXMOX_VE_USERNAME", "admin@pve"),
                ("PROXMOX_VE_PASSWORD", "pa55word"),
            ]),
        )
        .unwrap();
        assert!(matches!(other.credentials, Credentials::ApiToken(_)));
    }

    #[test]
    fn missing_credentials_and_bad_tokens_are_reported() {
        let config = ProxmoxConfig {
            endpoint: Some("https://pve:8006".to_owned()),
            ..ProxmoxConfig::default()
        };
        assert_eq!(
            resolve_settings(&config, Path::new("/"), env(&[])),
            Err(SettingsError::NoCredentials)
        );
        assert_eq!(
            resolve_settings(
                &config,
                Path::new("/"),
                env(&[("PROXMOX_VE_API_TOKEN", "nope")])
            ),
            Err(SettingsError::BadToken)
        );
        let password = resolve_settings(
            &config,
            Path::new("/"),
            env(&[
                ("PROXMOX_VE_USERNAME", "root@pam"),
                ("PROXMOX_VE_PASSWORD", "pw"),
                ("PROXMOX_VE_INSECURE", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(password.trust, Trust::Insecure);
    }

    #[test]
    fn the_fingerprint_variable_pins_the_certificate() {
        let config = ProxmoxConfig {
            endpoint: Some("https://pve:8006".to_owned()),
            ..ProxmoxConfig::default()
        };
        let good = vec!["AB"; 32].join(":");
        let settings = resolve_settings(
            &config,
            Path::new("/"),
            env(&[
                ("PROXMOX_VE_API_TOKEN", "provision@pve!ci=s3cr3t"),
                ("PROXMOX_VE_FINGERPRINT", &good),
            ]),
        )
        .unwrap();
        assert_eq!(settings.trust, Trust::Fingerprint([0xAB; 32]));
        assert_eq!(
            resolve_settings(
                &config,
                Path::new("/"),
                env(&[
                    ("PROXMOX_VE_API_TOKEN", "provision@pve!ci=s3cr3t"),
                    ("PROXMOX_VE_FINGERPRINT", "AB:CD"),
                ]),
            ),
            Err(SettingsError::BadFingerprint("AB:CD".to_owned()))
        );
    }

    #[test]
    fn fingerprints_parse() {
        let good = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&good), Some([0xAB; 32]));
        assert_eq!(parse_fingerprint("AB:CD"), None);
    }

    #[test]
    fn init_creates_then_keeps_and_secrets_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace::open(dir.path());
        let first = workspace.init().unwrap();
        assert!(
            first
                .iter()
                .all(|(_, action)| *action == InitAction::Created)
        );
        std::fs::write(workspace.config_path(), "# mine\n").unwrap();
        let second = workspace.init().unwrap();
        assert!(second.iter().all(|(_, action)| *action == InitAction::Kept));
        assert_eq!(
            std::fs::read_to_string(workspace.config_path()).unwrap(),
            "# mine\n"
        );
        let mode = std::fs::metadata(workspace.state_dir())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let path = workspace.write_secret("k3s-token", b"secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(workspace.write_secret("../escape", b"x").is_err());
        assert_eq!(
            workspace
                .read_secret("k3s-token")
                .unwrap()
                .map(|s| s.expose().to_owned()),
            Some("secret".to_owned())
        );
    }

    #[test]
    fn the_template_parses_and_unknown_keys_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace::open(dir.path());
        workspace.init().unwrap();
        assert_eq!(workspace.config().unwrap(), WorkspaceConfig::default());
        std::fs::write(
            workspace.config_path(),
            "[proxmox]\nendpont = \"https://x\"\n",
        )
        .unwrap();
        let Err(WorkspaceError::Invalid { diagnostics, .. }) = workspace.config() else {
            panic!("unknown key must be refused");
        };
        assert_eq!(diagnostics[0].line, Some(2));
        std::fs::write(
            workspace.config_path(),
            "[proxmox]\nendpoint = \"http://pve:8006\"\nfingerprint = \"AB:CD\"\n",
        )
        .unwrap();
        let Err(WorkspaceError::Invalid { diagnostics, .. }) = workspace.config() else {
            panic!("http endpoint and short fingerprint must be refused");
        };
        let located: Vec<(String, Option<usize>)> = diagnostics
            .iter()
            .map(|d| (d.path.clone(), d.line))
            .collect();
        assert_eq!(
            located,
            vec![
                ("proxmox.endpoint".to_owned(), Some(2)),
                ("proxmox.fingerprint".to_owned(), Some(3))
            ]
        );
    }
}
