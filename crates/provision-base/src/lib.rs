//! The foundation every provision crate stands on: private and atomic local files, secrets that
//! never print, the process exit status, human-readable times and the security log target.

pub mod error;
pub mod exit;
pub mod files;
pub mod secret;
pub mod time;

/// The `tracing` target of warnings about trust (TLS verification off, a host key accepted on first
/// use, a token file others can read): shown even with `--quiet`, which hides progress only.
pub const SECURITY_TARGET: &str = "provision::security";
