//! Proxmox credentials: API tokens and ticket logins, and a [`Secret`] that never prints.

use std::fmt;
use std::time::{Duration, Instant};

/// A credential value (the crate-wide redacting [`provision_base::secret::Secret`]).
pub use provision_base::secret::Secret;

/// How the client proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`; no CSRF token needed.
    ApiToken {
        /// `USER@REALM!TOKENID`.
        user_realm_tokenid: String,
        secret: Secret,
    },
    /// `POST /access/ticket`, then the `PVEAuthCookie` cookie and, on writes, the
    /// `CSRFPreventionToken` header. Tickets live 2 h; the client renews them before.
    Ticket { username: String, password: Secret },
}

impl Auth {
    /// Parses `USER@REALM!TOKENID=SECRET` (the `PROXMOX_VE_API_TOKEN` form).
    pub fn parse_api_token(token: &str) -> Option<Auth> {
        let (id, secret) = token.trim().split_once('=')?;
        let (user_realm, token_name) = id.split_once('!')?;
        let (user, realm) = user_realm.split_once('@')?;
        if user.is_empty() || realm.is_empty() || token_name.is_empty() || secret.is_empty() {
            return None;
        }
        Some(Auth::ApiToken {
            user_realm_tokenid: id.to_owned(),
            secret: Secret::new(secret),
        })
    }

    /// True only for a `root@pam` ticket login: the one identity Proxmox lets set raw
    /// `hostpciN` device ids (everyone else, including root's API tokens, must use mappings).
    pub fn is_root_ticket(&self) -> bool {
        match self {
            Auth::Ticket { username, .. } => username == "root@pam",
            Auth::ApiToken { .. } => false,
        }
    }

    /// The identity for messages (`root@pam`, `provision@pve!ci`), never the secret.
    pub fn identity(&self) -> &str {
        match self {
            Auth::ApiToken {
                user_realm_tokenid, ..
            } => user_realm_tokenid,
            Auth::Ticket { username, .. } => username,
        }
    }

    /// The `Authorization` header value of a token.
    pub(crate) fn token_header(&self) -> Option<String> {
        match self {
            Auth::ApiToken {
                user_realm_tokenid,
                secret,
            } => Some(format!(
                "PVEAPIToken={user_realm_tokenid}={}",
                secret.expose()
            )),
            Auth::Ticket { .. } => None,
        }
    }
}

/// Tickets are valid for 2 h; renew well before.
pub const TICKET_RENEW_AFTER: Duration = Duration::from_secs(105 * 60);

/// A ticket obtained from `POST /access/ticket`.
#[derive(Clone)]
pub(crate) struct TicketSession {
    pub ticket: Secret,
    pub csrf_token: Secret,
    pub obtained: Instant,
}

impl TicketSession {
    pub fn is_fresh(&self, renew_after: Duration) -> bool {
        self.obtained.elapsed() < renew_after
    }
}

impl fmt::Debug for TicketSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketSession")
            .field("ticket", &self.ticket)
            .field("csrf_token", &self.csrf_token)
            .field("age", &self.obtained.elapsed())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let auth = Auth::ApiToken {
            user_realm_tokenid: "provision@pve!ci".into(),
            secret: Secret::new("0b6e-very-secret"),
        };
        let debug = format!("{auth:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
        assert!(debug.contains("provision@pve!ci"));
        assert_eq!(Secret::new("x").to_string(), "<redacted>");
        let ticket = Auth::Ticket {
            username: "root@pam".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{ticket:?}").contains("hunter2"));
    }

    #[test]
    fn parses_api_token() {
        let auth = Auth::parse_api_token("root@pam!provision=aaaa-bbbb").unwrap();
        assert_eq!(
            auth.token_header().unwrap(),
            "PVEAPIToken=root@pam!provision=aaaa-bbbb"
        );
        assert!(!auth.is_root_ticket());
        assert!(Auth::parse_api_token("root@pam=secret").is_none());
        assert!(Auth::parse_api_token("root!x=secret").is_none());
        assert!(Auth::parse_api_token("root@pam!x=").is_none());
    }

    #[test]
    fn only_root_pam_ticket_is_root() {
        let ticket = |user: &str| Auth::Ticket {
            username: user.into(),
            password: Secret::new("p"),
        };
        assert!(ticket("root@pam").is_root_ticket());
        assert!(!ticket("root@pve").is_root_ticket());
        assert!(!ticket("admin@pam").is_root_ticket());
    }
}
