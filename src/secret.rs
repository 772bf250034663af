//! The one redacting wrapper for credentials, tokens and private keys: `Debug` and `Display` never show
//! the value, so a secret cannot leak into logs, plans or error messages by formatting.

use std::fmt;

/// The `tracing` target of warnings about trust (TLS verification off, a host key accepted on first
/// use, a token file others can read): shown even with `--quiet`, which hides progress only. It
/// lives here, low, so that every layer can log to it; the reporter decides how it is shown.
pub const SECURITY_TARGET: &str = "provision::security";

/// A secret string; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the few places that must send or write it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn formatting_never_shows_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(secret.to_string(), "<redacted>");
        assert_eq!(
            format!("{:#?}", Some(&secret)),
            "Some(\n    Secret(<redacted>),\n)"
        );
        assert_eq!(secret.expose(), "hunter2");
    }
}
