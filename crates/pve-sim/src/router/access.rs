//! Authentication and the `/access` routes: API tokens, tickets and their CSRF tokens (signed
//! with the state's secret), the caller's privileges, `POST /access/ticket` and
//! `GET /access/permissions`.

use std::collections::BTreeSet;

use axum::http::{HeaderMap, Method, header};
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Reply, Request};
use crate::Shared;
use crate::state::{ApiError, ApiResult, now_ms};

/// Tickets are valid for two hours, like Proxmox's.
const TICKET_LIFETIME_S: u64 = 7200;

/// Who is calling.
pub(super) struct Identity {
    /// `root@pam` or `provision@pve!ci`.
    pub(super) user: String,
    /// `None`: every privilege.
    privileges: Option<BTreeSet<String>>,
    pub(super) root: bool,
}

impl Identity {
    pub(super) fn check(&self, path: &str, privilege: &str) -> ApiResult<()> {
        match &self.privileges {
            None => Ok(()),
            Some(set) if set.contains(privilege) => Ok(()),
            Some(_) => Err(ApiError::forbidden(path, privilege)),
        }
    }

    /// PVE::RPCEnvironment::check_any: one of `privileges` suffices; the error lists them all
    /// joined by `|`.
    pub(super) fn check_any(&self, path: &str, privileges: &[&str]) -> ApiResult<()> {
        match &self.privileges {
            None => Ok(()),
            Some(set) if privileges.iter().any(|p| set.contains(*p)) => Ok(()),
            Some(_) => Err(ApiError::forbidden(path, &privileges.join("|"))),
        }
    }
}

fn privileges(list: &[String]) -> Option<BTreeSet<String>> {
    if list.iter().any(|p| p == "*") {
        None
    } else {
        Some(list.iter().cloned().collect())
    }
}

fn sign(secret: &str, data: &str) -> String {
    let digest = Sha256::digest(format!("{secret}:{data}").as_bytes());
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
}

pub(super) fn authenticate(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
) -> ApiResult<Identity> {
    let state = shared.state();
    if let Some(authorization) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let Some(token) = authorization
            .strip_prefix("PVEAPIToken=")
            .or_else(|| authorization.strip_prefix("PVEAPIToken "))
        else {
            return Err(ApiError::unauthorized("authentication failure"));
        };
        let Some((tokenid, secret)) = token.split_once('=') else {
            return Err(ApiError::unauthorized("authentication failure"));
        };
        let Some(spec) = state
            .inventory
            .tokens
            .iter()
            .find(|t| t.tokenid == tokenid && t.secret == secret)
        else {
            return Err(ApiError::unauthorized("authentication failure"));
        };
        return Ok(Identity {
            user: spec.tokenid.clone(),
            privileges: privileges(&spec.privileges),
            root: false,
        });
    }
    let ticket = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("PVEAuthCookie=").map(str::to_owned));
    let Some(ticket) = ticket else {
        return Err(ApiError::unauthorized("No ticket"));
    };
    let ticket = percent_decode_str(&ticket).decode_utf8_lossy().into_owned();
    let user = verify_ticket(&state.secret, &ticket)
        .ok_or_else(|| ApiError::unauthorized("authentication failure"))?;
    if *method != Method::GET {
        let csrf = headers
            .get("CSRFPreventionToken")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !verify_csrf(&state.secret, &user, csrf) {
            return Err(ApiError::unauthorized(
                "Permission denied - invalid csrf token",
            ));
        }
    }
    let root = user == "root@pam";
    let privileges = if root {
        None
    } else {
        state
            .inventory
            .users
            .iter()
            .find(|u| u.userid == user)
            .map_or(Some(BTreeSet::new()), |u| privileges(&u.privileges))
    };
    Ok(Identity {
        user,
        privileges,
        root,
    })
}

fn make_ticket(secret: &str, user: &str, time: u64) -> String {
    let data = format!("PVE:{user}:{time:08X}");
    format!("{data}::{}", sign(secret, &data))
}

fn verify_ticket(secret: &str, ticket: &str) -> Option<String> {
    let (data, signature) = ticket.split_once("::")?;
    let mut parts = data.split(':');
    let (Some("PVE"), Some(user), Some(time), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let time = u64::from_str_radix(time, 16).ok()?;
    let now = now_ms() / 1000;
    (sign(secret, data) == signature && now.saturating_sub(time) < TICKET_LIFETIME_S)
        .then(|| user.to_owned())
}

fn make_csrf(secret: &str, user: &str, time: u64) -> String {
    format!(
        "{time:08X}:{}",
        sign(secret, &format!("csrf:{user}:{time:08X}"))
    )
}

fn verify_csrf(secret: &str, user: &str, token: &str) -> bool {
    let Some((time, _)) = token.split_once(':') else {
        return false;
    };
    let Ok(time) = u64::from_str_radix(time, 16) else {
        return false;
    };
    make_csrf(secret, user, time) == token && now_ms() / 1000 - time < TICKET_LIFETIME_S
}

pub(super) fn login(shared: &Shared, params: &Map<String, Value>) -> ApiResult<Reply> {
    let text = |key: &str| params.get(key).and_then(Value::as_str).unwrap_or("");
    let mut username = text("username").to_owned();
    if !username.contains('@') {
        let realm = match text("realm") {
            "" => "pam",
            realm => realm,
        };
        username = format!("{username}@{realm}");
    }
    let password = text("password");
    let state = shared.state();
    if !state
        .inventory
        .users
        .iter()
        .any(|u| u.userid == username && u.password == password)
    {
        return Err(ApiError::unauthorized("authentication failure"));
    }
    let now = now_ms() / 1000;
    let ticket = make_ticket(&state.secret, &username, now);
    let csrf = make_csrf(&state.secret, &username, now);
    let encoded: String =
        percent_encoding::utf8_percent_encode(&ticket, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    Ok(Reply {
        data: json!({
            "username": username,
            "ticket": ticket,
            "CSRFPreventionToken": csrf,
            "cap": {},
        }),
        cookie: Some(format!(
            "PVEAuthCookie={encoded}; path=/; secure; HttpOnly; SameSite=Lax"
        )),
        total: None,
    })
}

/// Every privilege Proxmox VE 9 knows (pve-access-control, `PVE::AccessControl`'s role
/// definitions): what `GET /access/permissions` lists for an identity holding all of them.
const ALL_PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

impl Request<'_> {
    /// `GET /access/permissions`: the caller's privileges. The inventory grants them on `/`
    /// with propagation, so every path has the same set (pve-access-control's
    /// `PVE::API2::AccessControl::permissions` answers path → privilege → propagate flag).
    /// Another user's permissions need Sys.Audit on /access, as in Proxmox.
    pub(super) fn permissions(&self) -> ApiResult<Reply> {
        if let Some(userid) = self.text("userid")
            && userid != self.identity.user
            && !userid.starts_with(&format!("{}!", self.identity.user))
        {
            self.identity.check("/access", "Sys.Audit")?;
        }
        let privileges: Vec<String> = match &self.identity.privileges {
            None => ALL_PRIVILEGES.iter().map(|p| (*p).to_owned()).collect(),
            Some(set) => set.iter().cloned().collect(),
        };
        let entry: Map<String, Value> = privileges
            .into_iter()
            .map(|privilege| (privilege, json!(1)))
            .collect();
        let path = self.text("path").unwrap_or("/").to_owned();
        Reply::data(json!({ path: entry }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_round_trip() {
        let ticket = make_ticket("s3cret", "root@pam", now_ms() / 1000);
        assert_eq!(
            verify_ticket("s3cret", &ticket).as_deref(),
            Some("root@pam")
        );
        assert!(verify_ticket("other", &ticket).is_none());
        let csrf = make_csrf("s3cret", "root@pam", now_ms() / 1000);
        assert!(verify_csrf("s3cret", "root@pam", &csrf));
        assert!(!verify_csrf("s3cret", "ci@pve", &csrf));
    }
}
