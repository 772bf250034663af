//! GitOps repository credentials: the local files `[gitops.credentials]` points at, read with a size
//! bound and permission checks, and parsed into [`GitCredentials`] whose secret parts are [`Secret`]s.
//!
//! Read when a profile is loaded (so `validate` reports a missing or unsafe file at its key, before
//! anything is created) and again by phase 2, which renders the engine's Secret from what it read.
//! No message built here ever contains a credential value: errors name the file, key and line.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::model::{GitCredentialsKind, GitOpsCredentials};
use crate::secret::Secret;

/// A credential or known_hosts file larger than this is refused (a key is a few kilobytes).
pub const MAX_CREDENTIAL_BYTES: u64 = 64 * 1024;
/// `username` / `password` values: a token is well below this.
const MAX_BASIC_AUTH_VALUE: usize = 4096;

/// Credentials as read from the files, ready to be rendered into an engine's Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitCredentials {
    Ssh {
        /// The private key, as in the file.
        identity: Secret,
        /// known_hosts lines pinning the Git host (public).
        known_hosts: String,
    },
    Https {
        username: Secret,
        password: Secret,
    },
}

impl GitCredentials {
    /// Every secret value, for redaction of anything printed.
    pub fn secret_values(&self) -> Vec<&str> {
        match self {
            GitCredentials::Ssh { identity, .. } => vec![identity.expose()],
            GitCredentials::Https { username, password } => {
                vec![username.expose(), password.expose()]
            }
        }
    }
}

/// Why the credentials cannot be used; `key` is the key under `gitops.credentials` to point at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gitops.credentials.{key}: {message}")]
pub struct CredentialError {
    pub key: &'static str,
    pub message: String,
    pub hint: String,
}

impl crate::error::UserFacing for CredentialError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::UserError
    }

    fn hint(&self) -> Option<String> {
        Some(self.hint.clone())
    }
}

fn error(
    key: &'static str,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> CredentialError {
    CredentialError {
        key,
        message: message.into(),
        hint: hint.into(),
    }
}

/// A profile path: absolute, `~/…`, or relative to the workspace.
pub fn resolve(path: &str, workspace: &Path) -> PathBuf {
    let expanded = crate::files::expand_home(path);
    if expanded.is_absolute() {
        expanded
    } else {
        workspace.join(expanded)
    }
}

/// Reads and checks the files `credentials` names (paths relative to `workspace`).
pub fn read(
    credentials: &GitOpsCredentials,
    workspace: &Path,
) -> Result<GitCredentials, CredentialError> {
    match credentials.kind {
        GitCredentialsKind::Ssh => {
            let identity = read_file("file", &credentials.file, workspace, true)?;
            check_identity(&identity).map_err(|message| {
                error(
                    "file",
                    format!("`{}` {message}", credentials.file),
                    "point at an unencrypted private key, e.g. one made with `ssh-keygen -t ed25519 -N '' -f secrets/gitops-deploy-key`, and register its .pub as a read-only deploy key",
                )
            })?;
            let known_hosts = match (&credentials.known_hosts, &credentials.known_hosts_file) {
                (Some(inline), None) => inline.clone(),
                (None, Some(file)) => {
                    let text = read_file("known_hosts_file", file, workspace, false)?;
                    check_known_hosts(&text).map_err(|message| {
                        error(
                            "known_hosts_file",
                            format!("`{file}` {message}"),
                            KNOWN_HOSTS_HINT,
                        )
                    })?;
                    text
                }
                (Some(_), Some(_)) | (None, None) => {
                    return Err(error(
                        "known_hosts",
                        "kind = \"ssh\" needs exactly one of known_hosts and known_hosts_file",
                        KNOWN_HOSTS_HINT,
                    ));
                }
            };
            Ok(GitCredentials::Ssh {
                identity: Secret::new(identity),
                known_hosts,
            })
        }
        GitCredentialsKind::Https => {
            let text = read_file("file", &credentials.file, workspace, true)?;
            let (username, password) = parse_basic_auth(&text).map_err(|message| {
                error(
                    "file",
                    format!("`{}` {message}", credentials.file),
                    "write two lines, `username=<user>` and `password=<password or access token>`",
                )
            })?;
            Ok(GitCredentials::Https {
                username: Secret::new(username),
                password: Secret::new(password),
            })
        }
    }
}

/// How to get a known_hosts entry that pins the Git host.
pub const KNOWN_HOSTS_HINT: &str = "run `ssh-keyscan -t ed25519 HOST > secrets/gitops-known-hosts`, check the fingerprint (`ssh-keygen -lf secrets/gitops-known-hosts`) against the one the Git host publishes, and set known_hosts_file";

/// Reads a credential file: a regular file of at most [`MAX_CREDENTIAL_BYTES`], owned by the user and
/// not writable by others (see [`crate::files::check_trusted`]); a `private` one (key material) must
/// also not be readable by group or others, as ssh itself demands of a key file.
fn read_file(
    key: &'static str,
    path: &str,
    workspace: &Path,
    private: bool,
) -> Result<String, CredentialError> {
    use std::os::unix::fs::PermissionsExt as _;
    let resolved = resolve(path, workspace);
    let shown = resolved.display();
    let metadata = match std::fs::metadata(&resolved) {
        Ok(metadata) => metadata,
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(error(
                key,
                format!("`{path}` does not exist (looked for {shown})"),
                "create the file, or fix the path: a relative path starts at the workspace directory",
            ));
        }
        Err(source) => {
            return Err(error(
                key,
                format!("cannot inspect `{path}` ({shown}): {source}"),
                "check the path and its permissions",
            ));
        }
    };
    if !metadata.is_file() {
        return Err(error(
            key,
            format!("`{path}` ({shown}) is not a regular file"),
            "point at the file itself",
        ));
    }
    if metadata.len() > MAX_CREDENTIAL_BYTES {
        return Err(error(
            key,
            format!(
                "`{path}` is {} bytes; at most {MAX_CREDENTIAL_BYTES} are accepted",
                metadata.len()
            ),
            "a key or known_hosts file is a few kilobytes: check that this is the right file",
        ));
    }
    crate::files::check_trusted(&resolved).map_err(|trust| {
        error(
            key,
            format!("`{path}` cannot be trusted: {}", trust.source),
            "only you may be able to change a credential file",
        )
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if private && mode & 0o077 != 0 {
        return Err(error(
            key,
            format!(
                "`{path}` holds a secret but is accessible by group or others (mode {mode:03o})"
            ),
            format!("run `chmod 600 {shown}`"),
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(&resolved)
        .and_then(|file| file.take(MAX_CREDENTIAL_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|source| {
            error(
                key,
                format!("cannot read `{path}` ({shown}): {source}"),
                "check the file's permissions",
            )
        })?;
    if bytes.len() as u64 > MAX_CREDENTIAL_BYTES {
        return Err(error(
            key,
            format!("`{path}` grew beyond {MAX_CREDENTIAL_BYTES} bytes while it was read"),
            "check that this is the right file",
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        error(
            key,
            format!("`{path}` is not UTF-8 text"),
            "keys and known_hosts files are ASCII text (OpenSSH or PEM format)",
        )
    })
}

/// Text that can only be ASCII lines: no controls besides tab, CR and LF.
fn ascii_lines(text: &str) -> Result<(), String> {
    match text
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_graphic() || matches!(c, ' ' | '\t' | '\n' | '\r')))
    {
        Some((offset, _)) => Err(format!(
            "has a non-ASCII or control character on line {}",
            text[..offset].matches('\n').count() + 1
        )),
        None => Ok(()),
    }
}

/// An unencrypted private key in OpenSSH or PEM format (what Flux, Argo CD and Fleet can all use).
fn check_identity(text: &str) -> Result<(), String> {
    ascii_lines(text)?;
    let begin = text
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("-----BEGIN ") && line.ends_with("PRIVATE KEY-----"))
        .ok_or("is not a private key (no `-----BEGIN … PRIVATE KEY-----` line)")?;
    let encrypted = || "is protected by a passphrase, which no GitOps engine can type".to_owned();
    if begin.contains("ENCRYPTED") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(encrypted());
    }
    if begin == "-----BEGIN OPENSSH PRIVATE KEY-----" {
        let body: String = text
            .lines()
            .map(str::trim)
            .skip_while(|line| !line.starts_with("-----BEGIN "))
            .skip(1)
            .take_while(|line| !line.starts_with("-----END "))
            .collect();
        let blob = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| "is an OpenSSH key whose body is not base64".to_owned())?;
        // openssh-key-v1 NUL, then the cipher name as a u32-length-prefixed string.
        let rest = blob
            .strip_prefix(b"openssh-key-v1\0")
            .ok_or("is not an openssh-key-v1 key")?;
        let cipher = rest
            .get(..4)
            .and_then(|len| {
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                rest.get(4..4 + len)
            })
            .ok_or("is a truncated OpenSSH key")?;
        if cipher != b"none" {
            return Err(encrypted());
        }
    }
    Ok(())
}

/// known_hosts lines: `[marker] hosts keytype base64-key [comment]`, at least one entry, ASCII only.
pub fn check_known_hosts(text: &str) -> Result<(), String> {
    if text.len() as u64 > MAX_CREDENTIAL_BYTES {
        return Err(format!(
            "is {} bytes; at most {MAX_CREDENTIAL_BYTES} are accepted",
            text.len()
        ));
    }
    ascii_lines(text)?;
    let mut entries = 0;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields: Vec<&str> = line.split_whitespace().collect();
        if fields[0].starts_with('@') {
            if !matches!(fields[0], "@cert-authority" | "@revoked") {
                return Err(format!(
                    "line {}: unknown marker `{}`",
                    index + 1,
                    fields[0]
                ));
            }
            fields.remove(0);
        }
        let key_type_ok = fields.get(1).is_some_and(|key_type| {
            key_type.starts_with("ssh-")
                || key_type.starts_with("ecdsa-")
                || key_type.starts_with("sk-")
        });
        let key_ok = fields.get(2).is_some_and(|key| {
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        });
        if !(key_type_ok && key_ok) {
            return Err(format!(
                "line {} is not `HOSTS KEYTYPE KEY` (e.g. `git.example.com ssh-ed25519 AAAA…`)",
                index + 1
            ));
        }
        entries += 1;
    }
    if entries == 0 {
        return Err("has no host key entry".to_owned());
    }
    Ok(())
}

/// `username=…` and `password=…` lines (blank lines and `#` comments ignored). Errors name lines and
/// keys, never values.
fn parse_basic_auth(text: &str) -> Result<(String, String), String> {
    let mut username = None;
    let mut password = None;
    for (index, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let number = index + 1;
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {number} is not KEY=VALUE"))?;
        let slot = match key.trim() {
            "username" => &mut username,
            "password" => &mut password,
            _ => {
                return Err(format!(
                    "line {number}: unknown key (only `username` and `password`)"
                ));
            }
        };
        if slot.is_some() {
            return Err(format!("line {number}: `{}` given twice", key.trim()));
        }
        if value.is_empty() || value.len() > MAX_BASIC_AUTH_VALUE {
            return Err(format!(
                "line {number}: the value is empty or longer than {MAX_BASIC_AUTH_VALUE} bytes"
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("line {number}: the value has a control character"));
        }
        if key.trim() == "username" && value.contains(':') {
            return Err(format!(
                "line {number}: a basic-auth user name cannot contain `:`"
            ));
        }
        *slot = Some(value.to_owned());
    }
    match (username, password) {
        (Some(username), Some(password)) => Ok((username, password)),
        (None, _) => Err("has no `username=` line".to_owned()),
        (_, None) => Err("has no `password=` line".to_owned()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// Throwaway ed25519 keys generated for the tests, used nowhere else.
    const TEST_KEY: &str = include_str!("../../tests/fixtures/gitops/deploy-key");
    const TEST_KEY_WITH_PASSPHRASE: &str =
        include_str!("../../tests/fixtures/gitops/deploy-key-with-passphrase");

    fn write(dir: &Path, name: &str, text: &str, mode: u32) {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn ssh(
        file: &str,
        known_hosts_file: Option<&str>,
        known_hosts: Option<&str>,
    ) -> GitOpsCredentials {
        GitOpsCredentials {
            kind: GitCredentialsKind::Ssh,
            file: file.to_owned(),
            known_hosts_file: known_hosts_file.map(str::to_owned),
            known_hosts: known_hosts.map(str::to_owned),
        }
    }

    #[test]
    fn ssh_key_and_known_hosts_are_read_relative_to_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "key", TEST_KEY, 0o600);
        write(
            dir.path(),
            "hosts",
            "git.example ssh-ed25519 AAAAC3Nz\n",
            0o644,
        );
        let read = read(&ssh("key", Some("hosts"), None), dir.path()).unwrap();
        let GitCredentials::Ssh {
            identity,
            known_hosts,
        } = &read
        else {
            panic!("{read:?}")
        };
        assert_eq!(identity.expose(), TEST_KEY);
        assert_eq!(known_hosts, "git.example ssh-ed25519 AAAAC3Nz\n");
        assert!(
            !format!("{read:?}").contains("AAAAtzc2gtZW"),
            "Debug redacts the key"
        );
    }

    #[test]
    fn unsafe_missing_large_or_encrypted_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inline = Some("git.example ssh-ed25519 AAAAC3Nz");
        let missing = read(&ssh("nope", None, inline), dir.path()).unwrap_err();
        assert_eq!(missing.key, "file");
        assert!(missing.message.contains("does not exist"), "{missing}");
        write(dir.path(), "key", TEST_KEY, 0o640);
        let open = read(&ssh("key", None, inline), dir.path()).unwrap_err();
        assert!(open.hint.contains("chmod 600"), "{open:?}");
        assert!(!open.message.contains("AAAAtzc2gtZW"));
        write(dir.path(), "big", &"x".repeat(70_000), 0o600);
        let big = read(&ssh("big", None, inline), dir.path()).unwrap_err();
        assert!(big.message.contains("at most 65536"), "{big}");
        write(
            dir.path(),
            "enc",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            0o600,
        );
        let encrypted = read(&ssh("enc", None, inline), dir.path()).unwrap_err();
        assert!(encrypted.message.contains("passphrase"), "{encrypted}");
        assert!(
            check_identity(TEST_KEY_WITH_PASSPHRASE)
                .unwrap_err()
                .contains("passphrase")
        );
        write(dir.path(), "pub", "ssh-ed25519 AAAAC3Nz me@host\n", 0o600);
        let public = read(&ssh("pub", None, inline), dir.path()).unwrap_err();
        assert!(public.message.contains("not a private key"), "{public}");
    }

    #[test]
    fn known_hosts_need_an_entry_and_stay_ascii() {
        assert!(check_known_hosts("git.example ssh-ed25519 AAAAC3Nz\n").is_ok());
        assert!(check_known_hosts("|1|abc=|def= ecdsa-sha2-nistp256 AAAAE2Vj\n").is_ok());
        assert!(check_known_hosts("@cert-authority *.example ssh-ed25519 AAAA\n").is_ok());
        assert!(check_known_hosts("# only a comment\n").is_err());
        assert!(check_known_hosts("git.example AAAA\n").is_err());
        assert!(check_known_hosts("git.example ssh-ed25519 AAAA\u{2028}x\n").is_err());
        assert!(check_known_hosts("git.example ssh-ed25519 AA$(id)\n").is_err());
    }

    #[test]
    fn basic_auth_files_need_both_keys_and_errors_never_show_values() {
        let ok = parse_basic_auth("# deploy bot\nusername=bot\r\npassword=ghp_abc=def\n").unwrap();
        assert_eq!(ok, ("bot".to_owned(), "ghp_abc=def".to_owned()));
        for (text, part) in [
            ("username=bot\n", "no `password=`"),
            ("password=s3cret-value\n", "no `username=`"),
            ("username=bot\npassword=a\npassword=b\n", "twice"),
            ("username=bot\ns3cret-value\n", "not KEY=VALUE"),
            ("user=s3cret-value\n", "unknown key"),
            ("username=bot\npassword=s3cret\u{1b}[2J\n", "control"),
        ] {
            let message = parse_basic_auth(text).unwrap_err();
            assert!(message.contains(part), "{text:?}: {message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
    }
}
