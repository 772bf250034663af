//! The cluster token: 256 random bits, kept 0600 in the workspace secrets directory, never printed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::K3sError;
use crate::secret::Secret;

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
