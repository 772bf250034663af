//! The workspace's own `known_hosts` file for hosts provision did not create: OpenSSH format, plain host
//! names (`host` or `[host]:port`), read strictly and appended only on explicit first-use acceptance.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use russh::keys::PublicKey;

/// Errors reading or extending a known_hosts file.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot encode the host key of {host}: {message}")]
    Encode { host: String, message: String },
    /// Another user could have added a key to it; the message names the fix.
    #[error("refusing {}: {message}", path.display())]
    Untrusted { path: PathBuf, message: String },
}

/// One usable line of a known_hosts file.
#[derive(Debug, Clone)]
pub struct KnownHostEntry {
    /// Host patterns as written (`name`, `[name]:port`), comma separated in the file.
    pub patterns: Vec<String>,
    pub key: PublicKey,
    /// `@revoked` marker: this key must never be accepted.
    pub revoked: bool,
}

/// What the file says about a host's presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnownHostMatch {
    /// The presented key is listed for this host.
    Known,
    /// The host is listed, but with other keys (their `SHA256:` fingerprints).
    Mismatch { known_fingerprints: Vec<String> },
    /// The presented key is explicitly revoked.
    Revoked,
    /// The host is not in the file.
    Unknown,
}

/// A parsed known_hosts file.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    pub entries: Vec<KnownHostEntry>,
}

/// The pattern OpenSSH writes for `host:port`: the bare name for port 22, `[host]:port` otherwise.
pub fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `SHA256:…` fingerprint of a key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(russh::keys::HashAlg::Sha256).to_string()
}

/// Keys are equal when their key data is (comments do not matter).
pub fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

impl KnownHosts {
    /// Parses file content. Hashed host names (`|1|…`) and `@cert-authority` lines are rejected: this file
    /// is written by provision, and a line it cannot interpret must not be skipped silently.
    pub fn parse(path: &Path, content: &str) -> Result<Self, KnownHostsError> {
        let mut entries = Vec::new();
        for (index, raw) in content.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parse_error = |message: String| KnownHostsError::Parse {
                path: path.to_path_buf(),
                line: index + 1,
                message,
            };
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let mut revoked = false;
            if first.starts_with('@') {
                match first {
                    "@revoked" => revoked = true,
                    other => return Err(parse_error(format!("marker {other} is not supported"))),
                }
                first = fields.next().unwrap_or_default();
            }
            if first.starts_with('|') {
                return Err(parse_error(
                    "hashed host names are not supported in provision's known_hosts".to_string(),
                ));
            }
            let key_type = fields
                .next()
                .ok_or_else(|| parse_error("missing key type".to_string()))?;
            let key_base64 = fields
                .next()
                .ok_or_else(|| parse_error("missing key".to_string()))?;
            let key = PublicKey::from_openssh(&format!("{key_type} {key_base64}"))
                .map_err(|error| parse_error(format!("invalid {key_type} key: {error}")))?;
            entries.push(KnownHostEntry {
                patterns: first.split(',').map(str::to_string).collect(),
                key,
                revoked,
            });
        }
        Ok(Self { entries })
    }

    /// Loads a file; a missing file is an empty list.
    /// Refused when another user owns it or group/others may write it (they could add a key).
    pub fn load(path: &Path) -> Result<Self, KnownHostsError> {
        match provision_base::files::read_trusted(path) {
            Ok(Some(content)) => Self::parse(path, &String::from_utf8_lossy(&content)),
            Ok(None) => Ok(Self::default()),
            Err(error) if error.is_untrusted() => Err(KnownHostsError::Untrusted {
                path: path.to_path_buf(),
                message: error.source.to_string(),
            }),
            Err(error) => Err(KnownHostsError::Read {
                path: path.to_path_buf(),
                source: error.source,
            }),
        }
    }

    /// Checks the key `host:port` presented. Any listed key of another type counts as a mismatch: a host
    /// that suddenly presents a different key type is as suspicious as a changed key.
    pub fn check(&self, host: &str, port: u16, presented: &PublicKey) -> KnownHostMatch {
        let pattern = host_pattern(host, port);
        let listed: Vec<&KnownHostEntry> = self
            .entries
            .iter()
            .filter(|entry| entry.patterns.contains(&pattern))
            .collect();
        if listed
            .iter()
            .any(|entry| entry.revoked && same_key(&entry.key, presented))
        {
            return KnownHostMatch::Revoked;
        }
        let valid: Vec<&&KnownHostEntry> = listed.iter().filter(|entry| !entry.revoked).collect();
        if valid.is_empty() {
            return KnownHostMatch::Unknown;
        }
        if valid.iter().any(|entry| same_key(&entry.key, presented)) {
            KnownHostMatch::Known
        } else {
            KnownHostMatch::Mismatch {
                known_fingerprints: valid.iter().map(|entry| fingerprint(&entry.key)).collect(),
            }
        }
    }

    /// The line [`append`] writes for a host.
    pub fn line(host: &str, port: u16, key: &PublicKey) -> Result<String, KnownHostsError> {
        let mut bare = key.clone();
        bare.set_comment("");
        let encoded = bare.to_openssh().map_err(|error| KnownHostsError::Encode {
            host: host.to_string(),
            message: error.to_string(),
        })?;
        Ok(format!("{} {}\n", host_pattern(host, port), encoded.trim()))
    }
}

/// Appends `host:port key` to the file (created 0600 if missing), flushed to disk before returning.
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> Result<(), KnownHostsError> {
    let line = KnownHosts::line(host, port, key)?;
    let write_error = |source| KnownHostsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        provision_base::files::create_private_dir(parent)
            .map_err(|error| write_error(error.into_io()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(write_error)?;
    file.write_all(line.as_bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILNv9Hkqw99ZiJicqc3++6HsIi756LvF/oA/NeYxqrB2 a";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICeGI6CA4OnW6EseXNrtjn42bFwqUWART2FNArgb1PkG b";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    #[test]
    fn known_unknown_and_mismatch() {
        let file = format!("# comment\n10.0.0.5 {KEY_A}\n[10.0.0.6]:2222,node6 {KEY_B}\n");
        let known = KnownHosts::parse(Path::new("kh"), &file).unwrap();
        assert_eq!(
            known.check("10.0.0.5", 22, &key(KEY_A)),
            KnownHostMatch::Known
        );
        assert_eq!(
            known.check("10.0.0.5", 22, &key(KEY_B)),
            KnownHostMatch::Mismatch {
                known_fingerprints: vec![fingerprint(&key(KEY_A))]
            }
        );
        assert_eq!(
            known.check("10.0.0.6", 2222, &key(KEY_B)),
            KnownHostMatch::Known
        );
        assert_eq!(known.check("node6", 22, &key(KEY_B)), KnownHostMatch::Known);
        // Port matters: the same name on another port is a different host entry.
        assert_eq!(
            known.check("10.0.0.6", 22, &key(KEY_B)),
            KnownHostMatch::Unknown
        );
        assert_eq!(
            known.check("10.0.0.7", 22, &key(KEY_A)),
            KnownHostMatch::Unknown
        );
    }

    #[test]
    fn revoked_key_is_refused_even_when_also_listed() {
        let file = format!("@revoked 10.0.0.5 {KEY_A}\n10.0.0.5 {KEY_A}\n");
        let known = KnownHosts::parse(Path::new("kh"), &file).unwrap();
        assert_eq!(
            known.check("10.0.0.5", 22, &key(KEY_A)),
            KnownHostMatch::Revoked
        );
    }

    #[test]
    fn unsupported_lines_are_errors_with_line_numbers() {
        let hashed = format!("|1|abc=|def= {KEY_A}\n");
        let error = KnownHosts::parse(Path::new("kh"), &hashed).unwrap_err();
        assert!(
            error.to_string().starts_with("kh:1: hashed host names"),
            "{error}"
        );
        let broken = "\n10.0.0.5 ssh-ed25519 notbase64\n";
        let error = KnownHosts::parse(Path::new("kh"), broken).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("kh:2: invalid ssh-ed25519 key"),
            "{error}"
        );
        let missing = "10.0.0.5 ssh-ed25519\n";
        assert!(KnownHosts::parse(Path::new("kh"), missing).is_err());
    }

    #[test]
    fn a_known_hosts_file_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        append(&path, "10.0.0.5", 22, &key(KEY_A)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let error = KnownHosts::load(&path).unwrap_err();
        assert!(
            matches!(error, KnownHostsError::Untrusted { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }

    #[test]
    fn append_creates_a_private_file_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        assert!(KnownHosts::load(&path).unwrap().entries.is_empty());
        append(&path, "10.0.0.5", 22, &key(KEY_A)).unwrap();
        append(&path, "10.0.0.6", 2200, &key(KEY_B)).unwrap();
        let content = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            content,
            format!(
                "10.0.0.5 {}\n[10.0.0.6]:2200 {}\n",
                KEY_A.trim_end_matches(" a"),
                KEY_B.trim_end_matches(" b")
            )
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let known = KnownHosts::load(&path).unwrap();
        assert_eq!(
            known.check("10.0.0.6", 2200, &key(KEY_B)),
            KnownHostMatch::Known
        );
    }

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        // `ssh-keygen -lf` on KEY_A printed this.
        assert_eq!(
            fingerprint(&key(KEY_A)),
            "SHA256:S9MIE7jdkVM78+QG314XMHue9mjsFK9f6y6kG1a7fJs"
        );
    }
}
