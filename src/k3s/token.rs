//! The cluster token: 256 random bits, kept 0600 in the workspace secrets directory, never printed.
//!
//! The bootstrap server starts with the bare secret; every node that joins gets the secure form
//! `K10<sha256 of the cluster CA certificate>::server:<secret>`, so it refuses a server (or a VIP
//! holder) that does not present this cluster's CA. The hash is read from the bootstrap server's
//! `server-ca.crt` ([`read_ca_command`], [`parse_ca_output`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

use sha2::{Digest, Sha256};

use super::K3sError;
use crate::nodeprep::shell::quote;
use crate::secret::Secret;

/// The cluster CA certificate k3s writes on every server; a secure token carries its SHA-256.
pub const SERVER_CA_PATH: &str = "/var/lib/rancher/k3s/server/tls/server-ca.crt";

/// File name of the token inside the secrets directory (`.provision/secrets/`).
pub const TOKEN_FILE_NAME: &str = "k3s-token";

/// The shared secret servers and agents join with (a [`Secret`]). `Debug` is redacted; there is no
/// `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct K3sToken(Secret);

impl std::fmt::Debug for K3sToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("K3sToken(<redacted>)")
    }
}

impl K3sToken {
    /// 32 random bytes, hex encoded.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(Secret::new(hex::encode(bytes)))
    }

    /// Wrap a known secret (tests, or a token imported from an existing cluster).
    pub fn from_secret(secret: impl Into<String>) -> Self {
        Self(Secret::new(secret))
    }

    /// The secret itself: only for writing it into config.yaml (0600) or stdin of a remote command.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The secure join form `K10<ca hash>::server:<secret>`: a joining node checks that the server it
    /// reaches presents the CA with this hash before it sends anything.
    pub fn secure_form(&self, ca_hash: &CaHash) -> Self {
        Self::from_secret(format!("K10{}::server:{}", ca_hash.as_str(), self.expose()))
    }

    /// Whether the content of a server token file (`K10<ca hash>::server:<secret>`, or the bare secret)
    /// carries this secret.
    pub fn matches_token_file(&self, content: &str) -> bool {
        let content = content.trim();
        let secret = content
            .rsplit_once("::server:")
            .or_else(|| content.rsplit_once("::node:"))
            .map_or(content, |(_, secret)| secret);
        !secret.is_empty() && secret == self.0.expose()
    }

    /// Path of the token file in `secrets_dir`.
    pub fn path(secrets_dir: &Path) -> PathBuf {
        secrets_dir.join(TOKEN_FILE_NAME)
    }

    /// Read the workspace token, creating it (0600, directory 0700) on first use.
    pub fn load_or_create(secrets_dir: &Path) -> Result<Self, K3sError> {
        let path = Self::path(secrets_dir);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| K3sError::Io { path, source }
        };
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => return Ok(Self::from_secret(text.trim())),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io(&path)(error)),
        }
        crate::files::create_private_dir(secrets_dir).map_err(K3sError::from)?;
        std::fs::set_permissions(secrets_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(secrets_dir))?;
        let token = Self::generate();
        crate::files::write_atomic(&path, format!("{}\n", token.expose()).as_bytes(), 0o600)?;
        Ok(token)
    }
}

/// SHA-256 (lower-case hex) of the cluster CA certificate file, as k3s computes it for `K10` tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaHash(String);

impl CaHash {
    /// Hash of the CA file's exact bytes (k3s hashes the bytes it serves at `/cacerts`: the file).
    pub fn of_certificate(pem: &[u8]) -> Result<Self, K3sError> {
        let text = std::str::from_utf8(pem).map_err(|_| K3sError::CaCertificate {
            message: "not text".to_owned(),
        })?;
        if !text.contains("-----BEGIN CERTIFICATE-----")
            || !text.contains("-----END CERTIFICATE-----")
        {
            return Err(K3sError::CaCertificate {
                message: "no PEM certificate in it".to_owned(),
            });
        }
        Ok(Self(hex::encode(Sha256::digest(pem))))
    }

    /// 64 hex digits (any case; kept lower-case).
    pub fn parse(hex_digits: &str) -> Option<Self> {
        (hex_digits.len() == 64 && hex_digits.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(hex_digits.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A token's parts: `K10<ca hash>::<user>:<secret>` gives the CA hash, the bare form gives none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenParts<'a> {
    pub ca_hash: Option<CaHash>,
    /// `server` or `node` (agent token); `None` for a bare secret.
    pub user: Option<&'a str>,
    pub secret: &'a str,
}

/// Split a token as k3s does; `None` for a `K10` form whose hash or user is malformed.
pub fn parse_token(token: &str) -> Option<TokenParts<'_>> {
    let token = token.trim();
    let Some(rest) = token.strip_prefix("K10") else {
        return Some(TokenParts {
            ca_hash: None,
            user: None,
            secret: token,
        });
    };
    let (hash, credentials) = rest.split_once("::")?;
    let (user, secret) = credentials.split_once(':')?;
    if !matches!(user, "server" | "node") || secret.is_empty() {
        return None;
    }
    Some(TokenParts {
        ca_hash: Some(CaHash::parse(hash)?),
        user: Some(user),
        secret,
    })
}

/// Prints the bootstrap server's CA certificate (nothing secret: it is the public CA).
pub fn read_ca_command() -> String {
    format!("cat -- {}", quote(SERVER_CA_PATH))
}

/// The hash of [`read_ca_command`]'s output.
pub fn parse_ca_output(stdout: &[u8]) -> Result<CaHash, K3sError> {
    CaHash::of_certificate(stdout)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_256_bit_and_redacted() {
        let token = K3sToken::generate();
        assert_eq!(token.expose().len(), 64);
        assert_ne!(token, K3sToken::generate());
        assert_eq!(format!("{token:?}"), "K3sToken(<redacted>)");
    }

    #[test]
    fn token_file_forms_match() {
        let token = K3sToken::from_secret("abc123");
        assert!(token.matches_token_file("K10deadbeef::server:abc123\n"));
        assert!(token.matches_token_file("abc123"));
        assert!(!token.matches_token_file("K10deadbeef::server:other"));
        assert!(!token.matches_token_file(""));
    }

    const PEM: &[u8] =
        b"-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQD\n-----END CERTIFICATE-----\n";

    #[test]
    fn secure_form_pins_the_ca_hash_of_the_exact_file() {
        let ca = parse_ca_output(PEM).unwrap();
        assert_eq!(ca.as_str(), hex::encode(Sha256::digest(PEM)));
        // A trailing newline more is another file, hence another hash: nothing is trimmed.
        let mut other = PEM.to_vec();
        other.push(b'\n');
        assert_ne!(parse_ca_output(&other).unwrap(), ca);
        let token = K3sToken::from_secret("abc123").secure_form(&ca);
        assert_eq!(token.expose(), format!("K10{}::server:abc123", ca.as_str()));
        assert_eq!(format!("{token:?}"), "K3sToken(<redacted>)");
        let parts = parse_token(token.expose()).unwrap();
        assert_eq!(parts.ca_hash, Some(ca));
        assert_eq!(parts.user, Some("server"));
        assert_eq!(parts.secret, "abc123");
        assert!(K3sToken::from_secret("abc123").matches_token_file(token.expose()));
    }

    #[test]
    fn tokens_parse_like_k3s() {
        let bare = parse_token("abc123\n").unwrap();
        assert_eq!(
            (bare.ca_hash, bare.user, bare.secret),
            (None, None, "abc123")
        );
        let hash = "AB".repeat(32);
        let agent_token = format!("K10{hash}::node:s3cret");
        let agent = parse_token(&agent_token).unwrap();
        assert_eq!(agent.ca_hash.unwrap().as_str(), "ab".repeat(32));
        assert_eq!(agent.user, Some("node"));
        for bad in [
            "K10abc::server:x".to_owned(),
            format!("K10{hash}::admin:x"),
            format!("K10{hash}::server:"),
            format!("K10{hash}:server:x"),
        ] {
            assert!(parse_token(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ca_output_must_be_a_certificate() {
        assert!(parse_ca_output(b"").is_err());
        assert!(parse_ca_output(b"cat: no such file\n").is_err());
        assert!(parse_ca_output(&[0xff, 0xfe]).is_err());
        assert_eq!(
            read_ca_command(),
            "cat -- /var/lib/rancher/k3s/server/tls/server-ca.crt"
        );
    }

    #[test]
    fn stored_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        let first = K3sToken::load_or_create(&secrets).unwrap();
        let mode = std::fs::metadata(K3sToken::path(&secrets))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(K3sToken::load_or_create(&secrets).unwrap(), first);
    }
}
