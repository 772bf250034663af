//! The HTTP face of the simulator: authentication, parameter parsing and validation, the route
//! table, and Proxmox-style answers (`{"data": …}`, 400 with an `errors` map, other errors with
//! the message in the status line).
//!
//! Routes (all below `/api2/json`):
//!
//! Paths are percent-decoded per segment; a `/` inside one segment (a volume id such as
//! `local:iso/seed.iso`) stays `%2F` in the request log. The content routes also take a volume
//! id with its slash unencoded (`…/content/local:import/debian.qcow2`), as pve-storage does.
//!
//! | Method | Path                                                   | Answer / task type        |
//! |--------|--------------------------------------------------------|---------------------------|
//! | POST   | /access/ticket                                         | ticket + CSRF token       |
//! | GET    | /version                                               | version                   |
//! | GET    | /cluster/status                                        | cluster + node entries    |
//! | GET    | /cluster/resources[?type=vm\|node\|storage\|pool]      | resources                 |
//! | GET    | /cluster/nextid[?vmid=N]                               | id (not reserved)         |
//! | GET    | /cluster/mapping/pci                                   | mappings                  |
//! | POST   | /cluster/mapping/pci                                   | null                      |
//! | GET    | /cluster/mapping/pci/{id}                              | mapping                   |
//! | PUT    | /cluster/mapping/pci/{id}                              | null                      |
//! | DELETE | /cluster/mapping/pci/{id}                              | null                      |
//! | GET    | /nodes                                                 | nodes                     |
//! | GET    | /nodes/{node}/status                                   | cpu, memory               |
//! | GET    | /nodes/{node}/hardware/pci                             | PCI functions             |
//! | GET    | /nodes/{node}/storage                                  | storages                  |
//! | GET    | /nodes/{node}/storage/{storage}/status                 | storage status            |
//! | GET    | /nodes/{node}/storage/{storage}/content                | volumes                   |
//! | DELETE | /nodes/{node}/storage/{storage}/content/{volume}       | UPID imgdel               |
//! | POST   | /nodes/{node}/storage/{storage}/download-url           | UPID download             |
//! | POST   | /nodes/{node}/storage/{storage}/upload                 | UPID imgcopy (multipart)  |
//! | GET    | /nodes/{node}/qemu                                     | VMs                       |
//! | POST   | /nodes/{node}/qemu                                     | UPID qmcreate             |
//! | DELETE | /nodes/{node}/qemu/{vmid}                              | UPID qmdestroy            |
//! | GET    | /nodes/{node}/qemu/{vmid}/config                       | config (+digest)          |
//! | PUT    | /nodes/{node}/qemu/{vmid}/config                       | null (synchronous)        |
//! | POST   | /nodes/{node}/qemu/{vmid}/config                       | UPID qmconfig             |
//! | GET    | /nodes/{node}/qemu/{vmid}/pending                      | pending entries           |
//! | POST   | /nodes/{node}/qemu/{vmid}/clone                        | UPID qmclone              |
//! | PUT    | /nodes/{node}/qemu/{vmid}/resize                       | UPID qmresize             |
//! | GET    | /nodes/{node}/qemu/{vmid}/status/current               | status                    |
//! | POST   | /nodes/{node}/qemu/{vmid}/status/start                 | UPID qmstart              |
//! | POST   | /nodes/{node}/qemu/{vmid}/status/stop                  | UPID qmstop               |
//! | POST   | /nodes/{node}/qemu/{vmid}/status/shutdown              | UPID qmshutdown           |
//! | POST   | /nodes/{node}/qemu/{vmid}/agent/ping                   | {result:{}}               |
//! | GET    | /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces | {result:[…]}              |
//! | GET    | /nodes/{node}/qemu/{vmid}/agent/file-read?file=        | {content, bytes-read}     |
//! | GET    | /nodes/{node}/tasks/{upid}/status                      | task status               |
//! | GET    | /nodes/{node}/tasks/{upid}/log                         | [{n, t}]                  |
//! | GET    | /pools                                                 | pools                     |
//! | POST   | /pools                                                 | null                      |
//! | GET    | /pools/{poolid}                                        | members, comment          |
//! | PUT    | /pools/{poolid}                                        | null (vms, storage, delete)|
//! | DELETE | /pools/{poolid}                                        | null (empty pools only)   |
//! | GET    | /storage                                               | storage configuration     |
//! | GET    | /nodes/{node}/network                                  | interfaces (bridges)      |
//! | GET    | /nodes/{node}/query-url-metadata?url=                  | filename, size, mimetype  |
//! | GET    | /nodes/{node}/tasks                                    | tasks (source, vmid, …)   |
//! | GET    | /nodes/{node}/hardware/pci/{pci-id-or-mapping}         | [{method: mdev}]          |
//! | GET    | /nodes/{node}/storage/{storage}/content/{volume}       | path, size, used, format  |
//! | GET    | /nodes/{node}/qemu/{vmid}                              | directory index           |
//! | GET    | /nodes/{node}/qemu/{vmid}/status                       | directory index           |
//! | GET    | /nodes/{node}/qemu/{vmid}/agent                        | agent commands            |
//! | GET    | /nodes/{node}/qemu/{vmid}/cloudinit/dump?type=         | user/network/meta text    |
//! | PUT    | /nodes/{node}/qemu/{vmid}/unlink                       | null                      |

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::state::{
    ApiError, ApiResult, PowerState, State, TaskAction, TaskSpec, Vm, Volume, durations,
    find_volume, format_size, is_disk_key, mac_address, now_ms, parse_size, referenced_volumes,
    reserve_for_start, set_entry, uuid, volume_key,
};
use crate::{LoggedRequest, Shared, guest, propstring, schema};

pub(crate) fn app(shared: Shared) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// Tickets are valid for two hours, like Proxmox's.
const TICKET_LIFETIME_S: u64 = 7200;

async fn handle(
    AxumState(shared): AxumState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if shared.config.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(shared.config.latency_ms)).await;
    }
    shared.advance();
    let raw_path = uri.path();
    let path = api_path(raw_path);
    let route = if raw_path.starts_with("/api2/json") {
        find_route(&method, &path)
    } else {
        None
    };
    let Some((template, vars)) = route else {
        let error = ApiError::not_implemented(method.as_str(), &path);
        return finish(&shared, &method, &path, Map::new(), Err(error));
    };
    // Authentication comes from the headers alone and is checked before the body is read: an
    // anonymous client cannot make the simulator buffer or parse anything.
    let identity = if template == LOGIN {
        None
    } else {
        match authenticate(&shared, &method, &headers) {
            Ok(identity) => Some(identity),
            Err(error) => return finish(&shared, &method, &path, Map::new(), Err(error)),
        }
    };
    let body = match read_body(&shared, body, template).await {
        Ok(body) => body,
        Err(error) => return finish(&shared, &method, &path, Map::new(), Err(error)),
    };
    let (params, upload) = match parse_params(&method, &uri, &headers, &body) {
        Ok(parsed) => parsed,
        Err(error) => return finish(&shared, &method, &path, Map::new(), Err(error)),
    };
    wait_for_config_lock(&shared, &method, &path).await;
    let result = match identity {
        None => login_route(&shared, &method, template, &vars, &params),
        Some(identity) => dispatch(
            &shared, &method, template, &vars, &identity, &params, upload,
        ),
    };
    finish(&shared, &method, &path, params, result)
}

/// The path below `/api2/json`, percent-decoded except that a `/` inside a segment (a volume
/// id) stays `%2F`, without a trailing `/`.
fn api_path(raw_path: &str) -> String {
    let path: String = raw_path
        .strip_prefix("/api2/json")
        .unwrap_or(raw_path)
        .split('/')
        .map(|segment| {
            percent_decode_str(segment)
                .decode_utf8_lossy()
                .replace('/', "%2F")
        })
        .collect::<Vec<_>>()
        .join("/");
    if path.len() > 1 {
        path.trim_end_matches('/').to_owned()
    } else {
        path
    }
}

/// The only route served without authentication.
const LOGIN: &str = "/access/ticket";

/// Largest body of an upload (a NoCloud seed is a few hundred KiB).
pub(crate) const MAX_UPLOAD_BODY: usize = 16 << 20;
/// Largest body of any other request (parameters only).
pub(crate) const MAX_BODY: usize = 1 << 20;

/// Reads the body, refusing more than the route's limit (413) without buffering it.
async fn read_body(shared: &Shared, body: Body, template: &str) -> ApiResult<Bytes> {
    let limit = if template.ends_with("/upload") {
        MAX_UPLOAD_BODY
    } else {
        MAX_BODY
    };
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError {
            status: 413,
            message: format!("request body larger than {limit} bytes or unreadable"),
            errors: None,
        })?;
    shared.count_body_bytes(bytes.len());
    Ok(bytes)
}

fn finish(
    shared: &Shared,
    method: &Method,
    path: &str,
    mut params: Map<String, Value>,
    result: ApiResult<Reply>,
) -> Response {
    for secret in ["password", "new-password"] {
        if params.contains_key(secret) {
            params.insert(secret.to_owned(), json!("********"));
        }
    }
    let (status, response) = match result {
        Ok(reply) => (200, reply.into_response()),
        Err(error) => (error.status, error_response(&error)),
    };
    shared.log_request(LoggedRequest {
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        params,
        status,
    });
    response
}

/// A successful answer: `{"data": …}` plus cookies for a ticket login.
struct Reply {
    data: Value,
    cookie: Option<String>,
}

impl Reply {
    fn data(data: Value) -> ApiResult<Reply> {
        Ok(Reply { data, cookie: None })
    }

    fn into_response(self) -> Response {
        let mut response = axum::Json(json!({ "data": self.data })).into_response();
        if let Some(cookie) = self.cookie
            && let Ok(value) = cookie.parse()
        {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        response
    }
}

fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = json!({ "data": null, "message": format!("{}\n", error.message) });
    if let Some(errors) = &error.errors {
        body["errors"] = json!(errors);
    }
    let mut response = (status, axum::Json(body)).into_response();
    let phrase: String = error
        .message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .collect();
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(phrase) {
        response.extensions_mut().insert(reason);
    }
    response
}

/// The uploaded file of a multipart request.
pub(crate) struct Upload {
    pub filename: String,
    pub data: Vec<u8>,
}

fn parse_params(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<(Map<String, Value>, Option<Upload>)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(query) = uri.query() {
        pairs.extend(
            serde_urlencoded::from_str::<Vec<(String, String)>>(query)
                .map_err(|e| ApiError::param("query", e.to_string()))?,
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut upload = None;
    if *method != Method::GET && !body.is_empty() {
        if let Some(parameters) = content_type.strip_prefix("multipart/form-data") {
            let boundary = multipart_boundary(parameters)?;
            let (fields, file) = parse_multipart(body, boundary)?;
            pairs.extend(fields);
            upload = file;
        } else if content_type.starts_with("application/json") {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::param("body", format!("invalid JSON - {e}")))?;
            if let Value::Object(object) = value {
                for (key, value) in object {
                    let text = match value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    pairs.push((key, text));
                }
            }
        } else {
            pairs.extend(
                serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
                    .map_err(|e| ApiError::param("body", e.to_string()))?,
            );
        }
    }
    let mut params = Map::new();
    for (key, value) in pairs {
        match params.get_mut(&key) {
            Some(Value::Array(list)) => list.push(Value::String(value)),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(value)]);
            }
            None => {
                params.insert(key, Value::String(value));
            }
        }
    }
    Ok((params, upload))
}

/// RFC 2046 §5.1.1: a boundary is 1 to 70 of these characters, not ending in a space.
const MAX_BOUNDARY: usize = 70;

/// The `boundary` parameter of a `multipart/form-data` content type (after the media type).
fn multipart_boundary(parameters: &str) -> ApiResult<&str> {
    let boundary = parameters
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim().trim_matches('"'))
        .unwrap_or("");
    let allowed = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
    if boundary.is_empty()
        || boundary.len() > MAX_BOUNDARY
        || boundary.ends_with(' ')
        || !boundary.chars().all(allowed)
    {
        return Err(ApiError::param(
            "body",
            format!("invalid multipart boundary (1 to {MAX_BOUNDARY} characters, RFC 2046)"),
        ));
    }
    Ok(boundary)
}

type MultipartParts = (Vec<(String, String)>, Option<Upload>);

fn parse_multipart(body: &[u8], boundary: &str) -> ApiResult<MultipartParts> {
    let delimiter = format!("--{boundary}");
    let mut fields = Vec::new();
    let mut upload = None;
    let mut rest = body;
    let find = |haystack: &[u8], needle: &[u8]| {
        haystack
            .windows(needle.len())
            .position(|window| window == needle)
    };
    let Some(start) = find(rest, delimiter.as_bytes()) else {
        return Err(ApiError::param("body", "malformed multipart body"));
    };
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
        let Some(header_end) = find(rest, b"\r\n\r\n") else {
            return Err(ApiError::param("body", "malformed multipart part"));
        };
        let head = String::from_utf8_lossy(&rest[..header_end]).into_owned();
        let after = &rest[header_end + 4..];
        let closing = format!("\r\n{delimiter}");
        let Some(end) = find(after, closing.as_bytes()) else {
            return Err(ApiError::param("body", "unterminated multipart part"));
        };
        let content = &after[..end];
        rest = &after[end + closing.len()..];
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .unwrap_or("");
        let attribute = |name: &str| {
            disposition.split(';').find_map(|part| {
                part.trim()
                    .strip_prefix(&format!("{name}="))
                    .map(|v| v.trim_matches('"').to_owned())
            })
        };
        let Some(name) = attribute("name") else {
            continue;
        };
        match attribute("filename") {
            Some(filename) => {
                fields.push((name, filename.clone()));
                upload = Some(Upload {
                    filename,
                    data: content.to_vec(),
                });
            }
            None => fields.push((name, String::from_utf8_lossy(content).into_owned())),
        }
    }
    Ok((fields, upload))
}

/// Who is calling.
struct Identity {
    /// `root@pam` or `provision@pve!ci`.
    user: String,
    /// `None`: every privilege.
    privileges: Option<BTreeSet<String>>,
    root: bool,
}

impl Identity {
    fn check(&self, path: &str, privilege: &str) -> ApiResult<()> {
        match &self.privileges {
            None => Ok(()),
            Some(set) if set.contains(privilege) => Ok(()),
            Some(_) => Err(ApiError::forbidden(path, privilege)),
        }
    }

    /// PVE::RPCEnvironment::check_any: one of `privileges` suffices; the error lists them all
    /// joined by `|`.
    fn check_any(&self, path: &str, privileges: &[&str]) -> ApiResult<()> {
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

fn authenticate(shared: &Shared, method: &Method, headers: &HeaderMap) -> ApiResult<Identity> {
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

fn login(shared: &Shared, params: &Map<String, Value>) -> ApiResult<Reply> {
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
    })
}

/// Matches a concrete path against a template (`/nodes/{node}/qemu/{vmid}`), returning the
/// template's variables.
fn matches(template: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let template_parts: Vec<&str> = template.trim_matches('/').split('/').collect();
    let mut path_parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    // pve-storage mounts the content subtree with no fragment delimiter: a volume id's slash
    // may come unencoded (`…/content/local:import/debian.qcow2`).
    if template_parts.last() == Some(&"{volume}") && path_parts.len() > template_parts.len() {
        let rest = path_parts.split_off(template_parts.len() - 1).join("/");
        path_parts.push(rest);
    }
    if template_parts.len() != path_parts.len() {
        return None;
    }
    let mut vars = BTreeMap::new();
    for (t, p) in template_parts
        .iter()
        .zip(path_parts.iter().map(String::as_str))
    {
        if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            if p.is_empty() {
                return None;
            }
            vars.insert(name.to_owned(), p.replace("%2F", "/"));
        } else if *t != p {
            return None;
        }
    }
    Some(vars)
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

/// Every route the simulator serves: (method, template).
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("POST", "/access/ticket"),
    ("GET", "/access/permissions"),
    ("GET", "/version"),
    ("GET", "/cluster/status"),
    ("GET", "/cluster/resources"),
    ("GET", "/cluster/nextid"),
    ("GET", "/cluster/mapping/pci"),
    ("POST", "/cluster/mapping/pci"),
    ("GET", "/cluster/mapping/pci/{id}"),
    ("PUT", "/cluster/mapping/pci/{id}"),
    ("DELETE", "/cluster/mapping/pci/{id}"),
    ("GET", "/nodes"),
    ("GET", "/nodes/{node}/status"),
    ("GET", "/nodes/{node}/network"),
    ("GET", "/nodes/{node}/hardware/pci"),
    ("GET", "/nodes/{node}/storage"),
    ("GET", "/nodes/{node}/storage/{storage}/status"),
    ("GET", "/nodes/{node}/storage/{storage}/content"),
    ("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}"),
    ("POST", "/nodes/{node}/storage/{storage}/download-url"),
    ("POST", "/nodes/{node}/storage/{storage}/upload"),
    ("GET", "/nodes/{node}/qemu"),
    ("POST", "/nodes/{node}/qemu"),
    ("DELETE", "/nodes/{node}/qemu/{vmid}"),
    ("GET", "/nodes/{node}/qemu/{vmid}/config"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/config"),
    ("POST", "/nodes/{node}/qemu/{vmid}/config"),
    ("GET", "/nodes/{node}/qemu/{vmid}/pending"),
    ("POST", "/nodes/{node}/qemu/{vmid}/clone"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize"),
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown"),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping"),
    (
        "GET",
        "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
    ),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/file-read"),
    ("GET", "/nodes/{node}/tasks/{upid}/status"),
    ("GET", "/nodes/{node}/tasks/{upid}/log"),
    ("GET", "/pools"),
    ("POST", "/pools"),
    ("GET", "/pools/{poolid}"),
    ("PUT", "/pools/{poolid}"),
    ("DELETE", "/pools/{poolid}"),
    ("GET", "/storage"),
    ("GET", "/nodes/{node}/query-url-metadata"),
    ("GET", "/nodes/{node}/tasks"),
    ("GET", "/nodes/{node}/hardware/pci/{pci-id-or-mapping}"),
    ("GET", "/nodes/{node}/storage/{storage}/content/{volume}"),
    ("GET", "/nodes/{node}/qemu/{vmid}"),
    ("GET", "/nodes/{node}/qemu/{vmid}/status"),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent"),
    ("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/unlink"),
];

/// The route template `path` matches for `method`, and its variables.
fn find_route(method: &Method, path: &str) -> Option<(&'static str, BTreeMap<String, String>)> {
    ROUTES.iter().find_map(|(m, template)| {
        (*m == method.as_str())
            .then(|| matches(template, path).map(|vars| (*template, vars)))
            .flatten()
    })
}

fn login_route(
    shared: &Shared,
    method: &Method,
    template: &str,
    vars: &BTreeMap<String, String>,
    params: &Map<String, Value>,
) -> ApiResult<Reply> {
    if let Err(errors) = schema::validate(method.as_str(), template, &with_vars(params, vars)) {
        return Err(ApiError::params(errors));
    }
    login(shared, params)
}

fn dispatch(
    shared: &Shared,
    method: &Method,
    template: &str,
    vars: &BTreeMap<String, String>,
    identity: &Identity,
    params: &Map<String, Value>,
    upload: Option<Upload>,
) -> ApiResult<Reply> {
    let all = with_vars(params, vars);
    if let Err(errors) = schema::validate(method.as_str(), template, &all) {
        return Err(ApiError::params(errors));
    }
    if shared.config.fail_rate > 0.0 && shared.random_unit() < shared.config.fail_rate {
        return Err(ApiError::internal("simulated internal error (--fail-rate)"));
    }
    let request = Request {
        shared,
        identity,
        params: &all,
        vars,
    };
    let reply = request.route(method.as_str(), template, upload);
    if method != Method::GET && reply.is_ok() {
        shared.save();
    }
    reply
}

fn with_vars(params: &Map<String, Value>, vars: &BTreeMap<String, String>) -> Map<String, Value> {
    let mut all = params.clone();
    for (key, value) in vars {
        all.insert(key.clone(), Value::String(value.clone()));
    }
    all
}

struct Request<'a> {
    shared: &'a Shared,
    identity: &'a Identity,
    params: &'a Map<String, Value>,
    vars: &'a BTreeMap<String, String>,
}

fn bool_value(value: &str) -> bool {
    matches!(value, "1" | "true" | "yes" | "on")
}

impl Request<'_> {
    fn text(&self, key: &str) -> Option<&str> {
        self.params.get(key).and_then(Value::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        self.text(key).is_some_and(bool_value)
    }

    fn node(&self) -> &str {
        self.vars.get("node").map_or("", String::as_str)
    }

    fn vmid(&self) -> u32 {
        self.vars
            .get("vmid")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn route(&self, method: &str, template: &str, upload: Option<Upload>) -> ApiResult<Reply> {
        match (method, template) {
            ("GET", "/access/permissions") => self.permissions(),
            ("GET", "/version") => Reply::data(self.version()),
            ("GET", "/cluster/status") => self.cluster_status(),
            ("GET", "/cluster/resources") => self.cluster_resources(),
            ("GET", "/cluster/nextid") => self.next_id(),
            ("GET", "/cluster/mapping/pci") => self.mappings(),
            ("POST", "/cluster/mapping/pci") => self.mapping_create(),
            ("GET", "/cluster/mapping/pci/{id}") => self.mapping_get(),
            ("PUT", "/cluster/mapping/pci/{id}") => self.mapping_update(),
            ("DELETE", "/cluster/mapping/pci/{id}") => self.mapping_delete(),
            ("GET", "/nodes") => self.nodes(),
            ("GET", "/nodes/{node}/status") => self.node_status(),
            ("GET", "/nodes/{node}/network") => self.node_network(),
            ("GET", "/nodes/{node}/hardware/pci") => self.hardware_pci(),
            ("GET", "/nodes/{node}/storage") => self.storages(),
            ("GET", "/nodes/{node}/storage/{storage}/status") => self.storage_status(),
            ("GET", "/nodes/{node}/storage/{storage}/content") => self.storage_content(),
            ("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}") => self.volume_delete(),
            ("POST", "/nodes/{node}/storage/{storage}/download-url") => self.download_url(),
            ("POST", "/nodes/{node}/storage/{storage}/upload") => self.upload(upload),
            ("GET", "/nodes/{node}/qemu") => self.vm_list(),
            ("POST", "/nodes/{node}/qemu") => self.vm_create(),
            ("DELETE", "/nodes/{node}/qemu/{vmid}") => self.vm_delete(),
            ("GET", "/nodes/{node}/qemu/{vmid}/config") => self.vm_config(),
            ("PUT", "/nodes/{node}/qemu/{vmid}/config") => self.vm_config_update(false),
            ("POST", "/nodes/{node}/qemu/{vmid}/config") => self.vm_config_update(true),
            ("GET", "/nodes/{node}/qemu/{vmid}/pending") => self.vm_pending(),
            ("POST", "/nodes/{node}/qemu/{vmid}/clone") => self.vm_clone(),
            ("PUT", "/nodes/{node}/qemu/{vmid}/resize") => self.vm_resize(),
            ("GET", "/nodes/{node}/qemu/{vmid}/status/current") => self.vm_status(),
            ("POST", "/nodes/{node}/qemu/{vmid}/status/start") => self.vm_start(),
            ("POST", "/nodes/{node}/qemu/{vmid}/status/stop") => self.vm_stop("qmstop"),
            ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown") => self.vm_stop("qmshutdown"),
            ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping") => {
                self.agent(|_, _| Ok(json!({ "result": {} })))
            }
            ("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces") => {
                self.agent(|state, vm| Ok(guest::interfaces_json(state, vm)))
            }
            ("GET", "/nodes/{node}/qemu/{vmid}/agent/file-read") => self.agent_file_read(),
            ("GET", "/nodes/{node}/tasks/{upid}/status") => self.task_status(),
            ("GET", "/nodes/{node}/tasks/{upid}/log") => self.task_log(),
            ("GET", "/pools") => self.pools(),
            ("POST", "/pools") => self.pool_create(),
            ("GET", "/pools/{poolid}") => self.pool_get(),
            ("PUT", "/pools/{poolid}") => self.pool_update(),
            ("DELETE", "/pools/{poolid}") => self.pool_delete(),
            ("GET", "/storage") => self.storage_config_list(),
            ("GET", "/nodes/{node}/query-url-metadata") => self.query_url_metadata(),
            ("GET", "/nodes/{node}/tasks") => self.task_list(),
            ("GET", "/nodes/{node}/hardware/pci/{pci-id-or-mapping}") => self.hardware_pci_index(),
            ("GET", "/nodes/{node}/storage/{storage}/content/{volume}") => self.volume_get(),
            ("GET", "/nodes/{node}/qemu/{vmid}") => self.vm_index(&VM_SUBDIRS, "subdir"),
            ("GET", "/nodes/{node}/qemu/{vmid}/status") => {
                self.vm_index(&VM_STATUS_SUBDIRS, "subdir")
            }
            ("GET", "/nodes/{node}/qemu/{vmid}/agent") => self.vm_index(&AGENT_COMMANDS, "name"),
            ("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump") => self.cloudinit_dump(),
            ("PUT", "/nodes/{node}/qemu/{vmid}/unlink") => self.vm_unlink(),
            _ => Err(ApiError::not_implemented(method, template)),
        }
    }

    /// `GET /access/permissions`: the caller's privileges. The inventory grants them on `/`
    /// with propagation, so every path has the same set (pve-access-control's
    /// `PVE::API2::AccessControl::permissions` answers path → privilege → propagate flag).
    /// Another user's permissions need Sys.Audit on /access, as in Proxmox.
    fn permissions(&self) -> ApiResult<Reply> {
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

    fn version(&self) -> Value {
        let version = self.shared.state().inventory.version.clone();
        let release = version.rsplitn(2, '.').last().unwrap_or("9.1").to_owned();
        json!({ "version": version, "release": release, "repoid": "ec58e45e1bcdf2ac" })
    }

    fn cluster_status(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        let inventory = &state.inventory;
        let mut entries = Vec::new();
        if !inventory.cluster_name.is_empty() {
            entries.push(json!({
                "type": "cluster", "id": "cluster", "name": inventory.cluster_name,
                "nodes": inventory.nodes.len(), "quorate": 1, "version": inventory.nodes.len() + 2,
            }));
        }
        for (index, node) in inventory.nodes.iter().enumerate() {
            entries.push(json!({
                "type": "node", "id": format!("node/{}", node.name), "name": node.name,
                "nodeid": index + 1, "ip": format!("10.10.0.{}", index + 11), "online": 1,
                "local": u8::from(index == 0), "level": "",
            }));
        }
        Reply::data(json!(entries))
    }

    fn cluster_resources(&self) -> ApiResult<Reply> {
        let kind = self.text("type");
        let state = self.shared.state();
        let mut entries = Vec::new();
        let uptime = (now_ms() - state.boot_ms) / 1000;
        if kind.is_none() || kind == Some("node") {
            for node in &state.inventory.nodes {
                entries.push(json!({
                    "id": format!("node/{}", node.name), "type": "node", "node": node.name,
                    "status": "online", "maxcpu": node.cpus, "cpu": 0.02,
                    "maxmem": node.memory_gib << 30,
                    "mem": state.memory_used_mib(node) << 20, "uptime": uptime, "level": "",
                    "maxdisk": 100u64 << 30, "disk": 10u64 << 30,
                }));
            }
        }
        if kind.is_none() || kind == Some("vm") {
            for vm in state.vms.values() {
                let mut entry = state.json_vm_status(vm);
                entry["id"] = json!(format!("qemu/{}", vm.vmid));
                entry["type"] = json!("qemu");
                entry["node"] = json!(vm.node);
                entry["template"] = json!(u8::from(vm.is_template()));
                entry["maxcpu"] = json!(vm.cpus());
                if let Some(pool) = &vm.pool {
                    entry["pool"] = json!(pool);
                }
                entries.push(entry);
            }
        }
        if kind.is_none() || kind == Some("storage") {
            for node in &state.inventory.nodes {
                for storage in &state.inventory.storages {
                    let used = state.storage_used(&node.name, &storage.name);
                    entries.push(json!({
                        "id": format!("storage/{}/{}", node.name, storage.name),
                        "type": "storage", "storage": storage.name, "node": node.name,
                        "plugintype": storage.kind, "content": storage.content.join(","),
                        "maxdisk": storage.size_gib << 30, "disk": used,
                        "status": "available", "shared": u8::from(storage.shared),
                    }));
                }
            }
        }
        if kind.is_none() || kind == Some("pool") {
            for pool in state.pools.values() {
                entries.push(json!({
                    "id": format!("/pool/{}", pool.poolid), "type": "pool", "pool": pool.poolid,
                }));
            }
        }
        Reply::data(json!(entries))
    }

    fn next_id(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        if let Some(vmid) = self.text("vmid") {
            let vmid: u32 = vmid.parse().unwrap_or(0);
            if state.vms.contains_key(&vmid) {
                return Err(ApiError::param("vmid", format!("VM {vmid} already exists")));
            }
            return Reply::data(json!(vmid.to_string()));
        }
        let free = (100..)
            .find(|id| !state.vms.contains_key(id))
            .unwrap_or(100);
        Reply::data(json!(free.to_string()))
    }

    fn mappings(&self) -> ApiResult<Reply> {
        self.identity.check("/mapping/pci", "Mapping.Audit")?;
        let state = self.shared.state();
        let entries: Vec<Value> = state
            .mappings
            .values()
            .map(|m| {
                let mut entry = json!({ "id": m.id, "map": m.map, "type": "pci" });
                if let Some(description) = &m.description {
                    entry["description"] = json!(description);
                }
                entry
            })
            .collect();
        Reply::data(json!(entries))
    }

    fn map_entries(&self) -> Vec<String> {
        match self.params.get("map") {
            Some(Value::String(s)) => s
                .split('\n')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(_) | None => Vec::new(),
        }
    }

    fn check_map_entries(&self, state: &State, entries: &[String]) -> ApiResult<()> {
        for entry in entries {
            let parsed = propstring::parse(entry)
                .map_err(|e| ApiError::param("map", format!("invalid format - {e}")))?;
            let node = propstring::get(&parsed, "node", None).unwrap_or("");
            let path = propstring::get(&parsed, "path", None).unwrap_or("");
            let id = propstring::get(&parsed, "id", None).unwrap_or("");
            let spec = state.node(node)?;
            let device = spec
                .pci_devices
                .iter()
                .find(|p| p.id.starts_with(&format!("{path}.")) || p.id == path)
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "PCI device '{path}' does not exist on node '{node}'"
                    ))
                })?;
            let actual = format!(
                "{}:{}",
                device.vendor.trim_start_matches("0x"),
                device.device.trim_start_matches("0x")
            );
            if actual != id {
                return Err(ApiError::internal(format!(
                    "PCI device '{path}' on node '{node}' has id '{actual}', not '{id}'"
                )));
            }
        }
        Ok(())
    }

    fn mapping_create(&self) -> ApiResult<Reply> {
        self.identity.check("/mapping/pci", "Mapping.Modify")?;
        let id = self.text("id").unwrap_or("").to_owned();
        let mut state = self.shared.state();
        if state.mappings.contains_key(&id) {
            return Err(ApiError::internal(format!(
                "pci mapping '{id}' already defined"
            )));
        }
        let map = self.map_entries();
        self.check_map_entries(&state, &map)?;
        state.mappings.insert(
            id.clone(),
            crate::state::Mapping {
                id,
                description: self.text("description").map(str::to_owned),
                map,
            },
        );
        Reply::data(Value::Null)
    }

    fn mapping_get(&self) -> ApiResult<Reply> {
        let id = self.vars.get("id").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/mapping/pci/{id}"), "Mapping.Audit")?;
        let state = self.shared.state();
        let mapping = state
            .mappings
            .get(&id)
            .ok_or_else(|| ApiError::internal(format!("PCI mapping '{id}' not found")))?;
        let mut entry = json!({ "id": mapping.id, "map": mapping.map, "type": "pci",
            "digest": State::digest(&BTreeMap::from([("map".to_owned(), mapping.map.join("\n"))])) });
        if let Some(description) = &mapping.description {
            entry["description"] = json!(description);
        }
        Reply::data(entry)
    }

    fn mapping_update(&self) -> ApiResult<Reply> {
        let id = self.vars.get("id").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/mapping/pci/{id}"), "Mapping.Modify")?;
        let mut state = self.shared.state();
        let map = self.map_entries();
        self.check_map_entries(&state, &map)?;
        let mapping = state
            .mappings
            .get_mut(&id)
            .ok_or_else(|| ApiError::internal(format!("PCI mapping '{id}' not found")))?;
        if !map.is_empty() {
            mapping.map = map;
        }
        if let Some(description) = self.text("description") {
            mapping.description = Some(description.to_owned());
        }
        if self
            .text("delete")
            .is_some_and(|d| d.split(',').any(|k| k == "description"))
        {
            mapping.description = None;
        }
        Reply::data(Value::Null)
    }

    fn mapping_delete(&self) -> ApiResult<Reply> {
        let id = self.vars.get("id").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/mapping/pci/{id}"), "Mapping.Modify")?;
        let mut state = self.shared.state();
        state
            .mappings
            .remove(&id)
            .ok_or_else(|| ApiError::internal(format!("PCI mapping '{id}' not found")))?;
        Reply::data(Value::Null)
    }

    fn nodes(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        let uptime = (now_ms() - state.boot_ms) / 1000;
        let entries: Vec<Value> = state
            .inventory
            .nodes
            .iter()
            .map(|node| {
                json!({
                    "node": node.name, "status": "online", "id": format!("node/{}", node.name),
                    "type": "node", "level": "", "cpu": 0.02, "maxcpu": node.cpus,
                    "mem": state.memory_used_mib(node) << 20, "maxmem": node.memory_gib << 30,
                    "uptime": uptime, "maxdisk": 100u64 << 30, "disk": 10u64 << 30,
                })
            })
            .collect();
        Reply::data(json!(entries))
    }

    fn node_status(&self) -> ApiResult<Reply> {
        let path = format!("/nodes/{}", self.node());
        self.identity.check(&path, "Sys.Audit")?;
        let state = self.shared.state();
        let node = state.node(self.node())?;
        let total = node.memory_gib << 30;
        let used = state.memory_used_mib(node) << 20;
        let version = &state.inventory.version;
        let mut flags = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl cpuid pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand lahf_lm svm avx2 bmi1 bmi2".to_owned();
        for flag in &node.cpu_flags {
            flags.push(' ');
            flags.push_str(flag);
        }
        if !node.hvm {
            flags = flags.replace(" svm", "");
        }
        let hvm = if node.hvm { "1" } else { "0" };
        Reply::data(json!({
            "cpuinfo": {
                "cpus": node.cpus, "cores": node.cores, "sockets": node.sockets,
                "model": node.cpu_model, "mhz": "2450.000", "hvm": hvm, "user_hz": 100,
                "flags": flags,
            },
            "memory": { "total": total, "used": used, "free": total.saturating_sub(used),
                        "available": total.saturating_sub(used) },
            "swap": { "total": 8u64 << 30, "used": 0, "free": 8u64 << 30 },
            "uptime": (now_ms() - state.boot_ms) / 1000,
            "loadavg": ["0.12", "0.10", "0.08"],
            "cpu": 0.02, "wait": 0.0,
            "kversion": "Linux 6.14.11-4-pve #1 SMP PREEMPT_DYNAMIC PMX 6.14.11-4 (2025-10-10T08:04Z)",
            "pveversion": format!("pve-manager/{version}/ec58e45e1bcdf2ac"),
            "boot-info": { "mode": "efi", "secureboot": 0 },
            "current-kernel": { "sysname": "Linux", "release": "6.14.11-4-pve", "machine": "x86_64",
                                "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.14.11-4 (2025-10-10T08:04Z)" },
            "rootfs": { "total": 100u64 << 30, "used": 10u64 << 30, "avail": 90u64 << 30, "free": 90u64 << 30 },
            "ksm": { "shared": 0 },
        }))
    }

    fn hardware_pci(&self) -> ApiResult<Reply> {
        self.identity
            .check(&format!("/nodes/{}", self.node()), "Sys.Audit")?;
        let state = self.shared.state();
        let node = state.node(self.node())?;
        let blacklist: Vec<String> = self
            .text("pci-class-blacklist")
            .unwrap_or("05;06;0b")
            .split([';', ','])
            .filter(|c| !c.is_empty())
            .map(str::to_lowercase)
            .collect();
        let entries: Vec<Value> = node
            .pci_devices
            .iter()
            .filter(|p| {
                let class = p.class.trim_start_matches("0x").to_lowercase();
                !blacklist.iter().any(|prefix| class.starts_with(prefix.as_str()))
            })
            .map(|p| {
                let mut entry = json!({
                    "id": p.id, "class": p.class, "vendor": p.vendor, "device": p.device,
                    "iommugroup": p.iommugroup,
                    "subsystem_vendor": p.subsystem_vendor.clone().unwrap_or_else(|| p.vendor.clone()),
                    "subsystem_device": p.subsystem_device.clone().unwrap_or_else(|| "0x0000".to_owned()),
                });
                if let Some(name) = &p.vendor_name {
                    entry["vendor_name"] = json!(name);
                }
                if let Some(name) = &p.device_name {
                    entry["device_name"] = json!(name);
                }
                entry
            })
            .collect();
        Reply::data(json!(entries))
    }

    fn storage_entry(state: &State, node: &str, storage: &crate::inventory::StorageSpec) -> Value {
        let total = storage.size_gib << 30;
        let used = state.storage_used(node, &storage.name).min(total);
        json!({
            "storage": storage.name, "type": storage.kind, "content": storage.content.join(","),
            "active": 1, "enabled": 1, "shared": u8::from(storage.shared),
            "total": total, "used": used, "avail": total - used,
            "used_fraction": used as f64 / total.max(1) as f64,
        })
    }

    fn storages(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        state.node(self.node())?;
        let content = self.text("content");
        let entries: Vec<Value> = state
            .inventory
            .storages
            .iter()
            .filter(|s| {
                content.is_none_or(|c| c.split(',').all(|c| s.content.iter().any(|x| x == c)))
            })
            .filter(|s| self.text("storage").is_none_or(|name| s.name == name))
            .map(|s| Self::storage_entry(&state, self.node(), s))
            .collect();
        Reply::data(json!(entries))
    }

    fn storage_status(&self) -> ApiResult<Reply> {
        let storage_name = self.vars.get("storage").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/storage/{storage_name}"), "Datastore.Audit")?;
        let state = self.shared.state();
        state.node(self.node())?;
        let storage = state.storage(&storage_name)?;
        Reply::data(Self::storage_entry(&state, self.node(), storage))
    }

    fn storage_content(&self) -> ApiResult<Reply> {
        let storage_name = self.vars.get("storage").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/storage/{storage_name}"), "Datastore.Audit")?;
        let state = self.shared.state();
        state.node(self.node())?;
        let storage = state.storage(&storage_name)?;
        let content = self.text("content");
        let vmid: Option<u32> = self.text("vmid").and_then(|v| v.parse().ok());
        let entries: Vec<Value> = state
            .volumes
            .values()
            .filter(|v| v.volid.split(':').next() == Some(storage.name.as_str()))
            .filter(|v| storage.shared || v.node.as_deref() == Some(self.node()))
            .filter(|v| content.is_none_or(|c| v.content == c))
            .filter(|v| vmid.is_none_or(|id| v.vmid == Some(id)))
            .map(|v| {
                let mut entry = json!({
                    "volid": v.volid, "content": v.content, "format": v.format,
                    "size": v.size, "ctime": v.ctime,
                });
                if let Some(vmid) = v.vmid {
                    entry["vmid"] = json!(vmid);
                }
                entry
            })
            .collect();
        Reply::data(json!(entries))
    }

    // Every argument is a distinct part of the task (identity, timing, effect, outcome, log);
    // a struct for them would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        state: &mut State,
        kind: &str,
        id: &str,
        seconds: f64,
        action: TaskAction,
        doomed: Option<String>,
        log: Vec<String>,
    ) -> String {
        let (seconds, doomed) = match self.lock_wait(state, kind, id) {
            LockWait::Free => (seconds, doomed),
            LockWait::After(wait) => (seconds + wait, doomed),
            LockWait::Timeout(vmid) => (
                CONFIG_LOCK_TIMEOUT_S,
                doomed.or_else(|| Some(lock_timeout(vmid).message)),
            ),
        };
        self.shared.spawn_task(
            state,
            TaskSpec {
                node: self.node().to_owned(),
                kind: kind.to_owned(),
                id: id.to_owned(),
                user: self.identity.user.clone(),
                seconds,
                log,
            },
            action,
            doomed,
        )
    }

    /// A worker that runs inside `lock_config` (qemu-server: config, resize, start, stop,
    /// shutdown, destroy) waits for a config change holding the VM's lock, at most
    /// PVE::AbstractConfig's 10 s, then dies with "can't lock file … got timeout".
    fn lock_wait(&self, state: &State, kind: &str, id: &str) -> LockWait {
        if !matches!(
            kind,
            "qmconfig" | "qmresize" | "qmstart" | "qmstop" | "qmshutdown" | "qmdestroy"
        ) {
            return LockWait::Free;
        }
        let Ok(vmid) = id.parse::<u32>() else {
            return LockWait::Free;
        };
        let Some(holder) = state.config_lock_holder(vmid) else {
            return LockWait::Free;
        };
        let scale = self.shared.config.time_scale.max(f64::MIN_POSITIVE);
        let remaining_ms = holder.due_ms.saturating_sub(now_ms());
        let remaining_s = remaining_ms as f64 / 1000.0 / scale;
        if holder.held || holder.due_ms == u64::MAX || remaining_s > CONFIG_LOCK_TIMEOUT_S {
            LockWait::Timeout(vmid)
        } else {
            LockWait::After(remaining_s)
        }
    }

    fn volume_delete(&self) -> ApiResult<Reply> {
        let storage = self.vars.get("storage").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/storage/{storage}"), "Datastore.Allocate")?;
        let volume = self.vars.get("volume").cloned().unwrap_or_default();
        let volid = if volume.contains(':') {
            volume
        } else {
            format!("{storage}:{volume}")
        };
        let mut state = self.shared.state();
        state.node(self.node())?;
        let Some(found) = find_volume(&state, self.node(), &volid) else {
            return Err(ApiError::internal(format!(
                "volume '{volid}' does not exist"
            )));
        };
        if let Some(vmid) = found.vmid
            && found.content == "images"
            && state
                .vms
                .get(&vmid)
                .is_some_and(|vm| referenced_volumes(&vm.config).contains(&volid))
        {
            return Err(ApiError::internal(format!(
                "volume '{volid}' is still in use by VM {vmid}"
            )));
        }
        let key = volume_key(found.node.as_deref(), &volid);
        let upid = self.spawn(
            &mut state,
            "imgdel",
            &volid,
            durations::VOLUME_DELETE,
            TaskAction::DeleteVolume { key },
            None,
            Vec::new(),
        );
        Reply::data(json!(upid))
    }

    fn check_content(storage: &crate::inventory::StorageSpec, content: &str) -> ApiResult<()> {
        if storage.content.iter().any(|c| c == content) {
            Ok(())
        } else {
            Err(ApiError::internal(format!(
                "storage '{}' does not support content-type '{content}'",
                storage.name
            )))
        }
    }

    fn download_url(&self) -> ApiResult<Reply> {
        let storage_name = self.vars.get("storage").cloned().unwrap_or_default();
        self.identity.check(
            &format!("/storage/{storage_name}"),
            "Datastore.AllocateTemplate",
        )?;
        self.identity.check("/", "Sys.Modify")?;
        let content = self.text("content").unwrap_or("").to_owned();
        let filename = self.text("filename").unwrap_or("").to_owned();
        let url = self.text("url").unwrap_or("").to_owned();
        let mut state = self.shared.state();
        state.node(self.node())?;
        let storage = state.storage(&storage_name)?.clone();
        Self::check_content(&storage, &content)?;
        let volid = format!("{storage_name}:{content}/{filename}");
        if find_volume(&state, self.node(), &volid).is_some() {
            return Err(ApiError::internal(format!(
                "refusing to override existing file '{filename}'"
            )));
        }
        // No network: a known image has its size and checksums; any other URL a size derived
        // from it so repeated runs agree.
        let known = state
            .inventory
            .images
            .iter()
            .find(|i| i.url == url)
            .cloned();
        let size = known.as_ref().map_or_else(|| url_size(&url), |i| i.size);
        let volume = Volume {
            volid: volid.clone(),
            node: (!storage.shared).then(|| self.node().to_owned()),
            content: content.clone(),
            format: format_of(&filename),
            size,
            vmid: None,
            ctime: now_ms() / 1000,
            data: None,
        };
        let log = vec![
            format!("downloading {url} to /var/lib/vz/template/{content}/{filename}.tmp"),
            "download finished".to_owned(),
        ];
        // pve-common PVE::Tools `download_file_from_url`: "calculating checksum..." then
        // "OK, checksum verified" or die "checksum mismatch: got '…' != expect '…'".
        let mut log = log;
        let mut doomed = None;
        if let Some(expected) = self.text("checksum") {
            let algorithm = self.text("checksum-algorithm").unwrap_or("sha256");
            match known.as_ref().and_then(|i| i.checksums.get(algorithm)) {
                Some(actual) if !actual.eq_ignore_ascii_case(expected) => {
                    log.push("calculating checksum...".to_owned());
                    doomed = Some(format!(
                        "checksum mismatch: got '{actual}' != expect '{expected}'"
                    ));
                }
                Some(_) | None => {
                    log.push("calculating checksum...OK, checksum verified".to_owned());
                }
            }
        }
        let upid = self.spawn(
            &mut state,
            "download",
            &filename,
            durations::DOWNLOAD,
            TaskAction::AddVolume {
                volume: Box::new(volume),
            },
            doomed,
            log,
        );
        Reply::data(json!(upid))
    }

    fn upload(&self, upload: Option<Upload>) -> ApiResult<Reply> {
        let storage_name = self.vars.get("storage").cloned().unwrap_or_default();
        self.identity.check(
            &format!("/storage/{storage_name}"),
            "Datastore.AllocateTemplate",
        )?;
        let Some(upload) = upload else {
            return Err(ApiError::param("filename", "missing file content"));
        };
        let content = self.text("content").unwrap_or("").to_owned();
        let mut state = self.shared.state();
        state.node(self.node())?;
        let storage = state.storage(&storage_name)?.clone();
        Self::check_content(&storage, &content)?;
        let filename = upload.filename.clone();
        let volid = format!("{storage_name}:{content}/{filename}");
        let mut doomed = None;
        let actual = hex::encode(Sha256::digest(&upload.data));
        if let Some(expected) = self.text("checksum") {
            let algorithm = self.text("checksum-algorithm").unwrap_or("sha256");
            if algorithm != "sha256" {
                doomed = Some(format!("checksum algorithm '{algorithm}' not simulated"));
            } else if !expected.eq_ignore_ascii_case(&actual) {
                doomed = Some(format!(
                    "checksum mismatch: got '{actual}' != expect '{expected}'"
                ));
            }
        }
        let volume = Volume {
            volid,
            node: (!storage.shared).then(|| self.node().to_owned()),
            content,
            format: format_of(&filename),
            size: upload.data.len() as u64,
            vmid: None,
            ctime: now_ms() / 1000,
            data: Some(upload.data),
        };
        let upid = self.spawn(
            &mut state,
            "imgcopy",
            "",
            durations::UPLOAD,
            TaskAction::AddVolume {
                volume: Box::new(volume),
            },
            doomed,
            vec![format!(
                "starting file import from: /var/tmp/pveupload-{}",
                &actual[..16]
            )],
        );
        Reply::data(json!(upid))
    }

    fn vm_list(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        state.node(self.node())?;
        let entries: Vec<Value> = state
            .vms
            .values()
            .filter(|vm| vm.node == self.node())
            .map(|vm| state.json_vm_status(vm))
            .collect();
        Reply::data(json!(entries))
    }

    /// Permission checks of a create or config request, the way qemu-server does them
    /// (src/PVE/API2/Qemu.pm: `check_vm_modify_config_perm` for every key, then the
    /// value-dependent `check_vm_create_serial_perm`, `check_usb_perm`, `check_hostpci_perm`,
    /// `check_rng_perm`, and `check_storage_access` / `check_drive_perms` for drives).
    /// `values` holds the value of each key (the current one for a deleted key). `root@pam`
    /// (a ticket, never a token) skips every check.
    fn check_config_permissions(
        &self,
        vmid: u32,
        keys: &[String],
        values: &BTreeMap<String, String>,
        creating: bool,
    ) -> ApiResult<()> {
        if self.identity.root {
            return Ok(());
        }
        let path = format!("/vms/{vmid}");
        let mut sorted: Vec<&String> = keys.iter().collect();
        sorted.sort();
        for key in &sorted {
            match config_category(key) {
                ConfigCategory::Privilege(privilege) => self.identity.check(&path, privilege)?,
                ConfigCategory::Startup => {
                    self.identity.check(&path, "VM.Config.Options")?;
                    self.identity.check("/", "Sys.Modify")?;
                }
                ConfigCategory::CloudinitOrNetwork => self
                    .identity
                    .check_any(&path, &["VM.Config.Cloudinit", "VM.Config.Network"])?,
                ConfigCategory::Vmstate => {
                    self.identity.check(&path, "VM.Config.Disk")?;
                    self.identity.check(&path, "VM.PowerMgmt")?;
                }
                ConfigCategory::ValueDependent => {}
                ConfigCategory::RootOnly => {
                    return Err(ApiError::internal(format!(
                        "only root can set '{key}' config"
                    )));
                }
            }
        }
        for key in &sorted {
            let value = values.get(key.as_str()).map_or("", String::as_str);
            self.check_value_permission(vmid, key, value, creating)?;
        }
        Ok(())
    }

    /// The checks qemu-server makes on a key's value rather than its name.
    fn check_value_permission(
        &self,
        vmid: u32,
        key: &str,
        value: &str,
        creating: bool,
    ) -> ApiResult<()> {
        let path = format!("/vms/{vmid}");
        let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
        let entries = propstring::parse(value).unwrap_or_default();
        match base {
            // `check_vm_create_serial_perm`: a socket is hardware config, a host device is root's.
            "serial" if key != base => {
                if value == "socket" {
                    self.identity.check(&path, "VM.Config.HWType")
                } else {
                    Err(ApiError::internal(format!(
                        "only root can set '{key}' config for real devices"
                    )))
                }
            }
            // `check_usb_perm`
            "usb" if key != base => {
                self.identity.check(&path, "VM.Config.HWType")?;
                if let Some(host) = propstring::get(&entries, "host", Some("host")) {
                    if !host.eq_ignore_ascii_case("spice") {
                        return Err(ApiError::internal(format!(
                            "only root can set '{key}' config for real devices"
                        )));
                    }
                    Ok(())
                } else if let Some(mapping) = propstring::get(&entries, "mapping", None) {
                    self.identity
                        .check(&format!("/mapping/usb/{mapping}"), "Mapping.Use")
                } else {
                    Err(ApiError::internal(
                        "either 'host' or 'mapping' must be set.",
                    ))
                }
            }
            // `check_hostpci_perm`
            "hostpci" if key != base => {
                if propstring::get(&entries, "host", Some("host")).is_some() {
                    return Err(ApiError::internal(format!(
                        "only root can set '{key}' config for non-mapped devices"
                    )));
                }
                let Some(mapping) = propstring::get(&entries, "mapping", None) else {
                    return Err(ApiError::internal(
                        "either 'host' or 'mapping' must be set.",
                    ));
                };
                self.identity
                    .check(&format!("/mapping/pci/{mapping}"), "Mapping.Use")?;
                self.identity.check(&path, "VM.Config.HWType")?;
                if propstring::get(&entries, "romfile", None).is_some() {
                    return Err(ApiError::param(
                        key,
                        "only root@pam can set 'romfile' option",
                    ));
                }
                Ok(())
            }
            // `check_rng_perm`
            "rng" if key != base => {
                if propstring::get(&entries, "source", Some("source")) == Some("/dev/hwrng") {
                    self.identity.check("/mapping/hwrng", "Mapping.Use")?;
                }
                Ok(())
            }
            // `check_dir_perm`
            "virtiofs" if key != base => {
                self.identity.check(&path, "VM.Config.Disk")?;
                let dirid = propstring::get(&entries, "dirid", Some("dirid")).unwrap_or("");
                self.identity
                    .check(&format!("/mapping/dir/{dirid}"), "Mapping.Use")
            }
            // PVE::GuestHelpers `assert_tag_permissions` with the default `user-tag-access`
            // (free): VM.Config.Options.
            "tags" => self.identity.check(&path, "VM.Config.Options"),
            _ if is_disk_key(key) || key == "cdrom" => {
                self.check_drive_permission(key, &entries, creating)
            }
            _ => Ok(()),
        }
    }

    /// Drives: `check_storage_access` on create (Datastore.AllocateSpace for a new disk),
    /// `check_drive_perms` on a config change (cloud-init / CD-ROM / disk privileges).
    fn check_drive_permission(
        &self,
        key: &str,
        entries: &[propstring::Entry],
        creating: bool,
    ) -> ApiResult<()> {
        let path = format!("/vms/{}", self.vmid_or_param());
        let file = propstring::get(entries, "file", Some("file")).unwrap_or("");
        let cdrom = key == "cdrom" || propstring::get(entries, "media", None) == Some("cdrom");
        let cloudinit = file.ends_with(":cloudinit") || file.ends_with("-cloudinit");
        let new_disk = file
            .split_once(':')
            .is_some_and(|(_, size)| size.parse::<f64>().is_ok());
        if new_disk && !cdrom {
            let storage = file.split(':').next().unwrap_or("");
            self.identity
                .check(&format!("/storage/{storage}"), "Datastore.AllocateSpace")?;
        }
        if creating {
            return Ok(());
        }
        if cloudinit {
            self.identity.check(&path, "VM.Config.Cloudinit")?;
            self.identity.check(&path, "VM.Config.CDROM")
        } else if cdrom {
            self.identity.check(&path, "VM.Config.CDROM")
        } else {
            self.identity.check(&path, "VM.Config.Disk")
        }
    }

    fn vmid_or_param(&self) -> u32 {
        match self.vmid() {
            0 => self.text("vmid").and_then(|v| v.parse().ok()).unwrap_or(0),
            vmid => vmid,
        }
    }

    /// Turns requested config values into what Proxmox stores: disks allocated, MACs set.
    /// `net0: virtio,bridge=…` gets a MAC (qemu-server `add_random_macs`), kept on an edit.
    fn with_mac(
        &self,
        key: &str,
        value: &str,
        existing: &BTreeMap<String, String>,
    ) -> ApiResult<String> {
        let mut entries = propstring::parse(value)
            .map_err(|e| ApiError::param(key, format!("invalid format - {e}")))?;
        if let Some(index) = entries.iter().position(|(k, _)| k.is_none()) {
            let model = entries[index].1.clone();
            let keep = existing.get(key).and_then(|old| {
                let old = propstring::parse(old).ok()?;
                old.iter()
                    .find(|(k, _)| k.as_deref() == Some(model.as_str()))
                    .map(|(_, v)| v.clone())
            });
            let mac = keep.unwrap_or_else(|| mac_address(self.shared.random_bytes()));
            entries[index] = (Some(model), mac);
        }
        Ok(propstring::serialize(&entries))
    }

    fn materialize(
        &self,
        state: &mut State,
        vmid: u32,
        key: &str,
        value: &str,
        existing: &BTreeMap<String, String>,
        reserved: &mut BTreeSet<String>,
    ) -> ApiResult<(String, Vec<Volume>, bool)> {
        let node = self.node().to_owned();
        let value = &schema::normalize_booleans(key, value);
        if key == "tags" {
            return Ok((unique_tags(value), Vec::new(), false));
        }
        if key.starts_with("net") {
            return Ok((self.with_mac(key, value, existing)?, Vec::new(), false));
        }
        if !is_disk_key(key) {
            return Ok((value.to_owned(), Vec::new(), false));
        }
        let mut entries = propstring::parse(value)
            .map_err(|e| ApiError::param(key, format!("invalid format - {e}")))?;
        let Some(file) = propstring::get(&entries, "file", Some("file")).map(str::to_owned) else {
            return Ok((value.to_owned(), Vec::new(), false));
        };
        if file == "none" || file == "cdrom" {
            return Ok((value.to_owned(), Vec::new(), false));
        }
        let Some((storage_name, volume_name)) = file.split_once(':') else {
            return Err(ApiError::internal(format!(
                "unable to parse volume ID '{file}'"
            )));
        };
        let storage = state.storage(storage_name)?.clone();
        let import_from = propstring::get(&entries, "import-from", None).map(str::to_owned);
        let is_new_size = volume_name.parse::<f64>().is_ok();
        if volume_name == "cloudinit" {
            Self::check_content(&storage, "images")?;
            let volid = format!("{storage_name}:vm-{vmid}-cloudinit");
            let volume = self.new_volume(&storage, &volid, vmid, 4 << 20);
            return Ok((format!("{volid},media=cdrom"), vec![volume], false));
        }
        if !is_new_size {
            if find_volume(state, &node, &file).is_none() {
                return Err(ApiError::internal(format!(
                    "volume '{file}' does not exist"
                )));
            }
            return Ok((value.to_owned(), Vec::new(), false));
        }
        Self::check_content(&storage, "images")?;
        let requested_gib: f64 = volume_name.parse().unwrap_or(0.0);
        let mut bytes = (requested_gib * (1u64 << 30) as f64) as u64;
        let mut imported = false;
        if let Some(source) = &import_from {
            let Some(source_volume) = find_volume(state, &node, source) else {
                return Err(ApiError::internal(format!(
                    "{key}: import-from: volume '{source}' does not exist"
                )));
            };
            if source_volume.content != "import" && source_volume.content != "images" {
                return Err(ApiError::internal(format!(
                    "{key}: import-from: '{source}' has content type '{}', expected 'import' or 'images'",
                    source_volume.content
                )));
            }
            // qcow2 cloud images are ~2.2 GiB virtual; the import keeps the virtual size.
            bytes = bytes.max(2252 << 20);
            imported = true;
        }
        if key.starts_with("efidisk") {
            let efitype = propstring::get(&entries, "efitype", None).unwrap_or("2m");
            bytes = if efitype == "4m" { 4 << 20 } else { 528 << 10 };
        } else if key.starts_with("tpmstate") {
            bytes = 4 << 20;
        }
        let volid = next_disk_name(state, &storage, &node, vmid, reserved);
        reserved.insert(volid.clone());
        let volume = self.new_volume(&storage, &volid, vmid, bytes);
        // Block storages have no image format: qemu-server's print_drive of the allocated
        // volume carries no `format` (PVE::Storage volume_size_info reports raw).
        let block = matches!(
            storage.kind.as_str(),
            "lvmthin" | "lvm" | "zfspool" | "rbd" | "iscsidirect" | "zfs"
        );
        entries.retain(|(k, _)| {
            k.is_some()
                && k.as_deref() != Some("import-from")
                && !(block && k.as_deref() == Some("format"))
        });
        entries.insert(0, (None, volid));
        set_entry(&mut entries, "size", &format_size(bytes));
        Ok((propstring::serialize(&entries), vec![volume], imported))
    }

    fn new_volume(
        &self,
        storage: &crate::inventory::StorageSpec,
        volid: &str,
        vmid: u32,
        size: u64,
    ) -> Volume {
        Volume {
            volid: volid.to_owned(),
            node: (!storage.shared).then(|| self.node().to_owned()),
            content: "images".to_owned(),
            format: "raw".to_owned(),
            size,
            vmid: Some(vmid),
            ctime: now_ms() / 1000,
            data: None,
        }
    }

    /// A requested config value; `cdrom` is an alias of `ide2` (qemu-server
    /// `$resolve_cdrom_alias`: `ide2: VALUE,media=cdrom`).
    fn config_value(&self, key: &str) -> Option<(String, String)> {
        let value = self.text(key)?;
        if key == "cdrom" {
            return Some(("ide2".to_owned(), format!("{value},media=cdrom")));
        }
        Some((key.to_owned(), value.to_owned()))
    }

    fn config_keys(&self) -> Vec<String> {
        const CONTROL: &[&str] = &[
            "node",
            "vmid",
            "start",
            "pool",
            "digest",
            "delete",
            "revert",
            "skiplock",
            "background_delay",
            "force",
            "unique",
            "archive",
            "storage",
            "live-restore",
            "bwlimit",
            "import-working-storage",
            "ha-managed",
        ];
        // Sorted like qemu-server's `$foreach_volume_with_alloc` (`sort keys`), which decides
        // the order disks are allocated in.
        let mut keys: Vec<String> = self
            .params
            .keys()
            .filter(|k| !CONTROL.contains(&k.as_str()))
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn vm_create(&self) -> ApiResult<Reply> {
        let vmid: u32 = self.text("vmid").and_then(|v| v.parse().ok()).unwrap_or(0);
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.Allocate")?;
        let keys = self.config_keys();
        let values: BTreeMap<String, String> = keys
            .iter()
            .filter_map(|k| Some((k.clone(), self.text(k)?.to_owned())))
            .collect();
        self.check_config_permissions(vmid, &keys, &values, true)?;
        if let Some(pool) = self.text("pool") {
            self.identity
                .check(&format!("/pool/{pool}"), "Pool.Allocate")?;
        }
        let mut state = self.shared.state();
        state.node(self.node())?;
        if let Some(existing) = state.vms.get(&vmid) {
            return Err(ApiError::internal(format!(
                "unable to create VM {vmid} - VM {vmid} already exists on node '{}'",
                existing.node
            )));
        }
        if let Some(pool) = self.text("pool")
            && !state.pools.contains_key(pool)
        {
            return Err(ApiError::internal(format!("pool '{pool}' does not exist")));
        }
        let mut config = BTreeMap::new();
        let mut volumes = Vec::new();
        let mut imports = false;
        let mut reserved = BTreeSet::new();
        for key in &keys {
            let Some((key, value)) = self.config_value(key) else {
                continue;
            };
            let (stored, new_volumes, imported) = self.materialize(
                &mut state,
                vmid,
                &key,
                &value,
                &BTreeMap::new(),
                &mut reserved,
            )?;
            config.insert(key, stored);
            volumes.extend(new_volumes);
            imports |= imported;
        }
        // qemu-server create_vm: a smbios1 uuid and a vmgenid unless given (`vmgenid: 1` asks
        // for a generated one).
        if !config.contains_key("smbios1") {
            config.insert(
                "smbios1".to_owned(),
                format!("uuid={}", uuid(self.shared.random_bytes())),
            );
        }
        if config.get("vmgenid").is_none_or(|v| v == "1") {
            config.insert("vmgenid".to_owned(), uuid(self.shared.random_bytes()));
        }
        config.insert(
            "meta".to_owned(),
            format!("creation-qemu=9.2.0,ctime={}", now_ms() / 1000),
        );
        config.insert("lock".to_owned(), "create".to_owned());
        for volume in volumes {
            let key = volume_key(volume.node.as_deref(), &volume.volid);
            state.volumes.insert(key, volume);
        }
        state.vms.insert(
            vmid,
            Vm {
                vmid,
                node: self.node().to_owned(),
                config,
                power: PowerState::Stopped,
                starting: false,
                started_at_ms: None,
                booted_at_ms: None,
                hugepages: BTreeMap::new(),
                pci_in_use: Vec::new(),
                pool: self.text("pool").map(str::to_owned),
                guest_network_config: None,
            },
        );
        let seconds = if imports {
            durations::CREATE_IMPORT
        } else {
            durations::CREATE
        };
        let upid = self.spawn(
            &mut state,
            "qmcreate",
            &vmid.to_string(),
            seconds,
            TaskAction::Create { vmid },
            None,
            Vec::new(),
        );
        if self.flag("start") {
            self.start_locked(&mut state, vmid)?;
        }
        Reply::data(json!(upid))
    }

    fn vm_delete(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.Allocate")?;
        let mut state = self.shared.state();
        let vm = state.vm_mut(self.node(), vmid)?;
        if let Some(lock) = vm.lock() {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        if vm.running_or_starting() {
            return Err(ApiError::internal(format!(
                "VM {vmid} is running - destroy failed"
            )));
        }
        vm.config.insert("lock".to_owned(), "destroyed".to_owned());
        let upid = self.spawn(
            &mut state,
            "qmdestroy",
            &vmid.to_string(),
            durations::DELETE,
            TaskAction::Delete { vmid },
            None,
            Vec::new(),
        );
        Reply::data(json!(upid))
    }

    fn vm_config(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity.check(&format!("/vms/{vmid}"), "VM.Audit")?;
        let state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        let mut config: Map<String, Value> = vm
            .config
            .iter()
            .map(|(k, v)| {
                // Numbers only where the schema says integer/number/boolean: `memory` and
                // `hugepages` are strings in the schema and come back as strings.
                let numeric = schema::config_param(k).is_some_and(|spec| {
                    matches!(
                        spec.kind,
                        schema::Kind::Integer | schema::Kind::Number | schema::Kind::Boolean
                    )
                });
                let value = match (numeric, v.parse::<i64>(), v.parse::<f64>()) {
                    (true, Ok(n), _) => json!(n),
                    (true, Err(_), Ok(x)) => json!(x),
                    _ => json!(v),
                };
                (k.clone(), value)
            })
            .collect();
        config.insert("digest".to_owned(), json!(State::digest(&vm.config)));
        Reply::data(Value::Object(config))
    }

    fn vm_pending(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity.check(&format!("/vms/{vmid}"), "VM.Audit")?;
        let state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        let entries: Vec<Value> = vm
            .config
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect();
        Reply::data(json!(entries))
    }

    fn vm_config_update(&self, asynchronous: bool) -> ApiResult<Reply> {
        let vmid = self.vmid();
        let keys = self.config_keys();
        let deletes: Vec<String> = self
            .text("delete")
            .unwrap_or("")
            .split([',', ';', ' '])
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        let mut all_keys = keys.clone();
        all_keys.extend(deletes.iter().cloned());
        let mut values: BTreeMap<String, String> = {
            let state = self.shared.state();
            let vm = state.vm(self.node(), vmid)?;
            deletes
                .iter()
                .filter_map(|k| Some((k.clone(), vm.config.get(k)?.clone())))
                .collect()
        };
        values.extend(
            keys.iter()
                .filter_map(|k| Some((k.clone(), self.text(k)?.to_owned()))),
        );
        self.check_config_permissions(vmid, &all_keys, &values, false)?;
        let mut state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?.clone();
        if let Some(lock) = vm.lock()
            && !self.flag("skiplock")
        {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        if let Some(digest) = self.text("digest")
            && digest != State::digest(&vm.config)
        {
            return Err(ApiError::internal(
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
        for key in &deletes {
            if keys.contains(key) {
                return Err(ApiError::internal(format!(
                    "you can't modify '{key}' and delete it at the same time"
                )));
            }
        }
        let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut new_volumes = Vec::new();
        let mut reserved = BTreeSet::new();
        for key in &keys {
            let Some((key, value)) = self.config_value(key) else {
                continue;
            };
            let (stored, volumes, _) =
                self.materialize(&mut state, vmid, &key, &value, &vm.config, &mut reserved)?;
            changes.insert(key, Some(stored));
            new_volumes.extend(volumes);
        }
        let mut unused_index = (0..)
            .find(|n| !vm.config.contains_key(&format!("unused{n}")))
            .unwrap_or(0);
        for key in &deletes {
            if is_disk_key(key)
                && let Some(value) = vm.config.get(key)
                && let Ok(entries) = propstring::parse(value)
                && let Some(file) = propstring::get(&entries, "file", Some("file"))
                && file.contains(&format!("vm-{vmid}-disk"))
            {
                changes.insert(format!("unused{unused_index}"), Some(file.to_owned()));
                unused_index += 1;
            }
            changes.insert(key.clone(), None);
        }
        for volume in new_volumes {
            let key = volume_key(volume.node.as_deref(), &volume.volid);
            state.volumes.insert(key, volume);
        }
        if asynchronous {
            let upid = self.spawn(
                &mut state,
                "qmconfig",
                &vmid.to_string(),
                durations::CONFIG,
                TaskAction::Config { vmid, changes },
                None,
                Vec::new(),
            );
            Reply::data(json!(upid))
        } else {
            // The synchronous PUT runs `lock_config` in the request; the handler already
            // waited the lock timeout for a holder (see `wait_for_config_lock`).
            if state.config_lock_holder(vmid).is_some() {
                return Err(lock_timeout(vmid));
            }
            if let Some(vm) = state.vms.get_mut(&vmid) {
                for (key, value) in changes {
                    match value {
                        Some(value) => vm.config.insert(key, value),
                        None => vm.config.remove(&key),
                    };
                }
            }
            Reply::data(Value::Null)
        }
    }

    fn vm_clone(&self) -> ApiResult<Reply> {
        let source = self.vmid();
        let newid: u32 = self.text("newid").and_then(|v| v.parse().ok()).unwrap_or(0);
        self.identity.check(&format!("/vms/{source}"), "VM.Clone")?;
        self.identity
            .check(&format!("/vms/{newid}"), "VM.Allocate")?;
        let mut state = self.shared.state();
        // qemu-server's clone_vm asks `PVE::QemuServer::check_running($vmid)` before it loads the
        // config (src/PVE/API2/Qemu.pm), so a missing source dies with check_running's words.
        let vm = state
            .vm(self.node(), source)
            .map_err(|_| {
                ApiError::internal(format!(
                    "unable to find configuration file for VM {source} - no such machine"
                ))
            })?
            .clone();
        if state.clone_holding(source).is_some() {
            return Err(ApiError::internal(format!(
                "can't lock file '/var/lock/qemu-server/lock-{source}.conf' - got timeout"
            )));
        }
        if let Some(lock) = vm.lock() {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        if let Some(existing) = state.vms.get(&newid) {
            return Err(ApiError::internal(format!(
                "unable to create VM {newid}: config file already exists (VM {newid} already exists on node '{}')",
                existing.node
            )));
        }
        let target_node = self.text("target").unwrap_or(self.node()).to_owned();
        state.node(&target_node)?;
        let full = self.flag("full") || !vm.is_template();
        let mut config = vm.config.clone();
        config.remove("template");
        config.insert("lock".to_owned(), "clone".to_owned());
        if let Some(name) = self.text("name") {
            config.insert("name".to_owned(), name.to_owned());
        }
        if let Some(description) = self.text("description") {
            config.insert("description".to_owned(), description.to_owned());
        }
        config.insert(
            "smbios1".to_owned(),
            format!("uuid={}", uuid(self.shared.random_bytes())),
        );
        config.insert("vmgenid".to_owned(), uuid(self.shared.random_bytes()));
        let mut volumes = Vec::new();
        let keys: Vec<String> = config.keys().cloned().collect();
        let taken: BTreeSet<String> = state.volumes.values().map(|v| v.volid.clone()).collect();
        let mut disk_number = 0;
        for key in keys {
            if key.starts_with("net") {
                let value = config.get(&key).cloned().unwrap_or_default();
                if let Ok(mut entries) = propstring::parse(&value)
                    && let Some(entry) = entries
                        .iter_mut()
                        .find(|(k, v)| k.is_some() && v.len() == 17 && v.matches(':').count() == 5)
                {
                    entry.1 = mac_address(self.shared.random_bytes());
                    config.insert(key.clone(), propstring::serialize(&entries));
                }
                continue;
            }
            if !is_disk_key(&key) {
                continue;
            }
            let value = config.get(&key).cloned().unwrap_or_default();
            let Ok(mut entries) = propstring::parse(&value) else {
                continue;
            };
            let Some(file) = propstring::get(&entries, "file", Some("file")).map(str::to_owned)
            else {
                continue;
            };
            if !file.contains(&format!("vm-{source}-"))
                && !file.contains(&format!("base-{source}-"))
            {
                continue;
            }
            let storage_name = self
                .text("storage")
                .map(str::to_owned)
                .unwrap_or_else(|| file.split(':').next().unwrap_or("").to_owned());
            let storage = state.storage(&storage_name)?.clone();
            let size = find_volume(&state, self.node(), &file).map_or(0, |v| v.size);
            let new_volid = if file.ends_with("-cloudinit") {
                format!("{storage_name}:vm-{newid}-cloudinit")
            } else {
                let mut candidate;
                loop {
                    candidate = format!("{storage_name}:vm-{newid}-disk-{disk_number}");
                    disk_number += 1;
                    if !taken.contains(&candidate) {
                        break;
                    }
                }
                if full {
                    candidate
                } else {
                    format!(
                        "{storage_name}:{}/{}",
                        file.split(':').nth(1).unwrap_or(""),
                        candidate.split(':').nth(1).unwrap_or("")
                    )
                }
            };
            if let Some(first) = entries.first_mut() {
                *first = (None, new_volid.clone());
            }
            config.insert(key.clone(), propstring::serialize(&entries));
            volumes.push(Volume {
                volid: new_volid,
                node: (!storage.shared).then(|| target_node.clone()),
                content: "images".to_owned(),
                format: "raw".to_owned(),
                size,
                vmid: Some(newid),
                ctime: now_ms() / 1000,
                data: None,
            });
        }
        for volume in volumes {
            let key = volume_key(volume.node.as_deref(), &volume.volid);
            state.volumes.insert(key, volume);
        }
        state.vms.insert(
            newid,
            Vm {
                vmid: newid,
                node: target_node,
                config,
                power: PowerState::Stopped,
                starting: false,
                started_at_ms: None,
                booted_at_ms: None,
                hugepages: BTreeMap::new(),
                pci_in_use: Vec::new(),
                pool: self.text("pool").map(str::to_owned),
                guest_network_config: None,
            },
        );
        let upid = self.spawn(
            &mut state,
            "qmclone",
            &source.to_string(),
            durations::CLONE,
            TaskAction::Clone {
                source,
                target: newid,
            },
            None,
            vec![format!(
                "create {} clone of drive(s) of VM {source} to VM {newid}",
                if full { "full" } else { "linked" }
            )],
        );
        Reply::data(json!(upid))
    }

    fn vm_resize(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.Config.Disk")?;
        let disk = self.text("disk").unwrap_or("").to_owned();
        let size = self.text("size").unwrap_or("").to_owned();
        let mut state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?.clone();
        if let Some(lock) = vm.lock() {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        let Some(value) = vm.config.get(&disk) else {
            return Err(ApiError::internal(format!("disk '{disk}' does not exist")));
        };
        let entries = propstring::parse(value).unwrap_or_default();
        let current = propstring::get(&entries, "size", None)
            .and_then(parse_size)
            .unwrap_or(0);
        let (relative, amount) = match size.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, size.as_str()),
        };
        let Some(amount) = parse_size(amount) else {
            return Err(ApiError::param(
                "size",
                "value does not match the regex pattern",
            ));
        };
        let target = if relative { current + amount } else { amount };
        if target < current {
            return Err(ApiError::internal(format!(
                "shrinking disks is not supported (request {target} bytes, current size {current} bytes)"
            )));
        }
        let upid = self.spawn(
            &mut state,
            "qmresize",
            &vmid.to_string(),
            durations::RESIZE,
            TaskAction::Resize {
                vmid,
                disk,
                bytes: target,
            },
            None,
            Vec::new(),
        );
        Reply::data(json!(upid))
    }

    fn vm_status(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity.check(&format!("/vms/{vmid}"), "VM.Audit")?;
        let state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        Reply::data(state.json_vm_status(vm))
    }

    fn start_locked(&self, state: &mut State, vmid: u32) -> ApiResult<String> {
        let vm = state.vm(self.node(), vmid)?.clone();
        let doomed = if vm.is_template() {
            Some("you can't start a vm if it's a template".to_owned())
        } else {
            None
        };
        if vm.power == PowerState::Running || vm.starting {
            return Err(ApiError::internal(format!("VM {vmid} already running")));
        }
        let (doomed, log) = match doomed {
            Some(message) => (Some(message), Vec::new()),
            None => match reserve_for_start(state, vmid) {
                Ok(()) => (None, Vec::new()),
                Err((message, log)) => (Some(message), log),
            },
        };
        Ok(self.spawn(
            state,
            "qmstart",
            &vmid.to_string(),
            durations::START,
            TaskAction::Start { vmid },
            doomed,
            log,
        ))
    }

    fn vm_start(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.PowerMgmt")?;
        let mut state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        if let Some(lock) = vm.lock() {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        let upid = self.start_locked(&mut state, vmid)?;
        Reply::data(json!(upid))
    }

    fn vm_stop(&self, kind: &str) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.PowerMgmt")?;
        let mut state = self.shared.state();
        // Stopping a stopped VM is a task that succeeds, as in Proxmox.
        state.vm(self.node(), vmid)?;
        let seconds = if kind == "qmshutdown" {
            durations::SHUTDOWN
        } else {
            durations::STOP
        };
        let upid = self.spawn(
            &mut state,
            kind,
            &vmid.to_string(),
            seconds,
            TaskAction::Stop { vmid },
            None,
            Vec::new(),
        );
        Reply::data(json!(upid))
    }

    fn agent(&self, answer: impl Fn(&State, &Vm) -> ApiResult<Value>) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.GuestAgent.Audit")
            .or_else(|_| {
                self.identity
                    .check(&format!("/vms/{vmid}"), "VM.GuestAgent.Unrestricted")
            })?;
        let state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        if vm.power != PowerState::Running {
            return Err(ApiError::internal(format!("VM {vmid} is not running")));
        }
        if !guest::agent_enabled(&vm.config) {
            return Err(ApiError::internal("No QEMU guest agent configured"));
        }
        if vm.booted_at_ms.is_none_or(|booted| booted > now_ms()) {
            return Err(ApiError::internal("QEMU guest agent is not running"));
        }
        Reply::data(answer(&state, vm)?)
    }

    fn agent_file_read(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        let file = self.text("file").unwrap_or("").to_owned();
        let backend_answer = {
            let state = self.shared.state();
            let vm = state.vm(self.node(), vmid)?;
            let node = vm.node.clone();
            drop(state);
            self.shared.backend_read_file(&node, vmid, &file)
        };
        self.agent(|state, vm| {
            let content = backend_answer
                .clone()
                .or_else(|| guest::derived_file(state, vm, &file))
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "Agent error: Failed to open file '{file}': No such file or directory"
                    ))
                })?;
            Ok(json!({
                "content": String::from_utf8_lossy(&content),
                "bytes-read": content.len(),
            }))
        })
    }

    fn find_task(&self) -> ApiResult<crate::state::Task> {
        let upid = self.vars.get("upid").cloned().unwrap_or_default();
        let state = self.shared.state();
        state
            .tasks
            .iter()
            .find(|t| t.upid == upid)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("no such task '{upid}'")))
    }

    fn task_status(&self) -> ApiResult<Reply> {
        let task = self.find_task()?;
        let mut status = json!({
            "upid": task.upid, "node": task.node, "pid": task.pid, "pstart": task.pstart,
            "starttime": task.starttime, "type": task.kind, "id": task.id, "user": task.user,
            "status": if task.running { "running" } else { "stopped" },
        });
        if let Some(exit) = &task.exitstatus {
            status["exitstatus"] = json!(exit);
        }
        Reply::data(status)
    }

    fn task_log(&self) -> ApiResult<Reply> {
        let task = self.find_task()?;
        let start: usize = self.text("start").and_then(|v| v.parse().ok()).unwrap_or(0);
        let limit: usize = self
            .text("limit")
            .and_then(|v| v.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(50);
        let lines: Vec<Value> = task
            .log
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(index, line)| json!({ "n": index + 1, "t": line }))
            .collect();
        Reply::data(json!(lines))
    }

    fn pools(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        let entries: Vec<Value> = state
            .pools
            .values()
            .map(|p| {
                let mut entry = json!({ "poolid": p.poolid });
                if let Some(comment) = &p.comment {
                    entry["comment"] = json!(comment);
                }
                entry
            })
            .collect();
        Reply::data(json!(entries))
    }

    fn pool_create(&self) -> ApiResult<Reply> {
        let poolid = self.text("poolid").unwrap_or("").to_owned();
        self.identity
            .check(&format!("/pool/{poolid}"), "Pool.Allocate")?;
        let mut state = self.shared.state();
        if state.pools.contains_key(&poolid) {
            return Err(ApiError::internal(format!(
                "create pool failed - pool '{poolid}' already exists"
            )));
        }
        state.pools.insert(
            poolid.clone(),
            crate::state::Pool {
                poolid,
                comment: self.text("comment").map(str::to_owned),
            },
        );
        Reply::data(Value::Null)
    }
}

/// `GET /nodes/{node}/qemu/{vmid}` (qemu-server `vmdiridx`).
const VM_SUBDIRS: [&str; 21] = [
    "config",
    "pending",
    "cloudinit",
    "status",
    "unlink",
    "vncproxy",
    "termproxy",
    "migrate",
    "resize",
    "move",
    "rrd",
    "rrddata",
    "monitor",
    "agent",
    "snapshot",
    "spiceproxy",
    "sendkey",
    "firewall",
    "mtunnel",
    "remote_migrate",
    "dbus-vmstate",
];
/// `GET …/status` (qemu-server `vmcmdidx`).
const VM_STATUS_SUBDIRS: [&str; 8] = [
    "current", "start", "stop", "reset", "shutdown", "suspend", "reboot", "resume",
];
/// `GET …/agent` (qemu-server PVE::API2::Qemu::Agent: the commands it registers).
const AGENT_COMMANDS: [&str; 8] = [
    "ping",
    "network-get-interfaces",
    "file-read",
    "file-write",
    "exec",
    "exec-status",
    "get-osinfo",
    "info",
];

/// A deterministic size for a URL the simulator cannot fetch (shared by `download-url` and
/// `query-url-metadata` so both agree).
fn url_size(url: &str) -> u64 {
    300 * (1 << 20) + (u64::from(Sha256::digest(url.as_bytes())[0]) << 20)
}

fn url_filename(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or("").to_owned()
}

impl Request<'_> {
    fn vm_index(&self, entries: &[&str], field: &str) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity.check(&format!("/vms/{vmid}"), "VM.Audit")?;
        let state = self.shared.state();
        state.vm(self.node(), vmid)?;
        let list: Vec<Value> = entries.iter().map(|e| json!({ field: e })).collect();
        Reply::data(json!(list))
    }

    fn pool_members(state: &State, poolid: &str) -> Vec<Value> {
        state
            .vms
            .values()
            .filter(|vm| vm.pool.as_deref() == Some(poolid))
            .map(|vm| {
                let mut entry = state.json_vm_status(vm);
                entry["id"] = json!(format!("qemu/{}", vm.vmid));
                entry["type"] = json!("qemu");
                entry["node"] = json!(vm.node);
                entry
            })
            .collect()
    }

    /// pve-manager PVE::API2::Pool `read_pool`.
    fn pool_get(&self) -> ApiResult<Reply> {
        let poolid = self.vars.get("poolid").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/pool/{poolid}"), "Pool.Audit")?;
        let state = self.shared.state();
        let pool = state
            .pools
            .get(&poolid)
            .ok_or_else(|| ApiError::internal(format!("pool '{poolid}' does not exist")))?;
        let mut answer = json!({ "members": Self::pool_members(&state, &poolid) });
        if let Some(comment) = &pool.comment {
            answer["comment"] = json!(comment);
        }
        Reply::data(answer)
    }

    /// pve-manager PVE::API2::Pool `update_pool`: `vms` are added (or removed with
    /// `delete=1`); a VM already in another pool needs `allow-move`.
    fn pool_update(&self) -> ApiResult<Reply> {
        let poolid = self.vars.get("poolid").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/pool/{poolid}"), "Pool.Allocate")?;
        let mut state = self.shared.state();
        if !state.pools.contains_key(&poolid) {
            return Err(ApiError::internal(format!(
                "pool '{poolid}' does not exist"
            )));
        }
        let delete = self.flag("delete");
        let vmids: Vec<u32> = self
            .text("vms")
            .unwrap_or("")
            .split([',', ';', ' '])
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::param("vms", format!("invalid VMID '{v}'")))
            })
            .collect::<ApiResult<_>>()?;
        for vmid in &vmids {
            let vm = state
                .vms
                .get(vmid)
                .ok_or_else(|| ApiError::internal(format!("no such VM '{vmid}'")))?;
            if delete {
                if vm.pool.as_deref() != Some(poolid.as_str()) {
                    return Err(ApiError::internal(format!(
                        "VM {vmid} is not a pool member"
                    )));
                }
            } else if let Some(other) = &vm.pool
                && *other != poolid
                && !self.flag("allow-move")
            {
                return Err(ApiError::internal(format!(
                    "VM {vmid} belongs already to pool '{other}' and 'allow-move' is not set"
                )));
            }
        }
        for vmid in vmids {
            if let Some(vm) = state.vms.get_mut(&vmid) {
                vm.pool = (!delete).then(|| poolid.clone());
            }
        }
        if let Some(comment) = self.text("comment")
            && let Some(pool) = state.pools.get_mut(&poolid)
        {
            pool.comment = Some(comment.to_owned());
        }
        Reply::data(Value::Null)
    }

    fn pool_delete(&self) -> ApiResult<Reply> {
        let poolid = self.vars.get("poolid").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/pool/{poolid}"), "Pool.Allocate")?;
        let mut state = self.shared.state();
        if !state.pools.contains_key(&poolid) {
            return Err(ApiError::internal(format!(
                "delete pool failed: pool '{poolid}' does not exist"
            )));
        }
        if state
            .vms
            .values()
            .any(|vm| vm.pool.as_deref() == Some(poolid.as_str()))
        {
            return Err(ApiError::internal(format!(
                "delete pool failed: pool '{poolid}' is not empty"
            )));
        }
        state.pools.remove(&poolid);
        Reply::data(Value::Null)
    }

    /// `GET /storage`: the cluster's storage configuration (storage.cfg).
    fn storage_config_list(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        let kind = self.text("type");
        let entries: Vec<Value> = state
            .inventory
            .storages
            .iter()
            .filter(|s| kind.is_none_or(|k| s.kind == k))
            .map(|s| {
                let mut entry = json!({
                    "storage": s.name, "type": s.kind, "content": s.content.join(","),
                    "digest": State::digest(&BTreeMap::from([("storage".to_owned(), s.name.clone())])),
                });
                if s.shared {
                    entry["shared"] = json!(1);
                }
                match s.kind.as_str() {
                    "dir" => entry["path"] = json!(storage_path(s)),
                    "lvmthin" => {
                        entry["vgname"] = json!("pve");
                        entry["thinpool"] = json!("data");
                    }
                    _ => {}
                }
                entry
            })
            .collect();
        Reply::data(json!(entries))
    }

    /// `GET /nodes/{node}/network`: the node's bridges over one physical port each.
    fn node_network(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        let node = state.node(self.node())?;
        let kind = self.text("type");
        let mut entries = Vec::new();
        for (index, bridge) in node.bridges.iter().enumerate() {
            let port = format!("eno{}", index + 1);
            if kind.is_none_or(|k| k == "eth") {
                entries.push(json!({
                    "iface": port, "type": "eth", "method": "manual", "families": ["inet"],
                    "active": 1, "exists": 1, "priority": index * 2 + 1,
                }));
            }
            if kind.is_none_or(|k| matches!(k, "bridge" | "any_bridge" | "any_local_bridge")) {
                let mut entry = json!({
                    "iface": bridge, "type": "bridge", "method": "manual", "families": ["inet"],
                    "active": 1, "autostart": 1, "bridge_ports": port, "bridge_stp": "off",
                    "bridge_fd": "0", "priority": index * 2 + 2,
                    // Inventory bridges model a GPU host set up for tagged VM traffic.
                    "bridge_vlan_aware": 1,
                });
                if index == 0 {
                    let node_index = state
                        .inventory
                        .nodes
                        .iter()
                        .position(|n| n.name == node.name)
                        .unwrap_or(0);
                    entry["method"] = json!("static");
                    entry["address"] = json!(format!("10.10.0.{}", node_index + 11));
                    entry["netmask"] = json!("24");
                    entry["cidr"] = json!(format!("10.10.0.{}/24", node_index + 11));
                    entry["gateway"] = json!("10.10.0.1");
                }
                entries.push(entry);
            }
        }
        Reply::data(json!(entries))
    }

    /// pve-manager PVE::API2::Nodes `query_url_metadata` (Sys.Audit and Sys.Modify on `/`).
    fn query_url_metadata(&self) -> ApiResult<Reply> {
        self.identity.check("/", "Sys.Audit")?;
        self.identity.check("/", "Sys.Modify")?;
        let url = self.text("url").unwrap_or("");
        let filename = url_filename(url);
        let state = self.shared.state();
        state.node(self.node())?;
        let known = state.inventory.images.iter().find(|i| i.url == url);
        let mimetype = match (
            known.and_then(|i| i.mimetype.clone()),
            format_of(&filename).as_str(),
        ) {
            (Some(mimetype), _) => mimetype,
            (None, "iso") => "application/x-iso9660-image".to_owned(),
            (None, _) => "application/octet-stream".to_owned(),
        };
        let size = known.map_or_else(|| url_size(url), |i| i.size);
        Reply::data(json!({ "filename": filename, "size": size, "mimetype": mimetype }))
    }

    /// pve-manager PVE::API2::Tasks `node_tasks`: newest first; `source` active / archive
    /// (default) / all, `vmid`, `typefilter`, `userfilter`, `since`, `until`, `errors`,
    /// `start`, `limit` (default 50).
    fn task_list(&self) -> ApiResult<Reply> {
        let state = self.shared.state();
        state.node(self.node())?;
        let source = self.text("source").unwrap_or("archive");
        let number = |key: &str| self.text(key).and_then(|v| v.parse::<u64>().ok());
        let vmid = self.text("vmid");
        let typefilter = self.text("typefilter");
        let userfilter = self.text("userfilter");
        let errors = self.flag("errors");
        let start = number("start").unwrap_or(0) as usize;
        let limit = number("limit").unwrap_or(50) as usize;
        let mut tasks: Vec<&crate::state::Task> = state
            .tasks
            .iter()
            .filter(|t| t.node == self.node())
            .filter(|t| match source {
                "active" => t.running,
                "all" => true,
                _ => !t.running,
            })
            .filter(|t| vmid.is_none_or(|id| t.id == id))
            .filter(|t| typefilter.is_none_or(|k| t.kind.contains(k)))
            .filter(|t| userfilter.is_none_or(|u| t.user.contains(u)))
            .filter(|t| number("since").is_none_or(|since| t.starttime >= since))
            .filter(|t| number("until").is_none_or(|until| t.starttime <= until))
            .filter(|t| !errors || t.exitstatus.as_deref().is_some_and(|e| e != "OK"))
            .collect();
        tasks.sort_by(|a, b| b.starttime.cmp(&a.starttime).then(b.pid.cmp(&a.pid)));
        let entries: Vec<Value> = tasks
            .into_iter()
            .skip(start)
            .take(if limit == 0 { usize::MAX } else { limit })
            .map(|t| {
                let mut entry = json!({
                    "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
                    "starttime": t.starttime, "type": t.kind, "id": t.id, "user": t.user,
                });
                if let Some(status) = &t.exitstatus {
                    entry["status"] = json!(status);
                }
                if let Some(endtime) = t.endtime {
                    entry["endtime"] = json!(endtime);
                }
                entry
            })
            .collect();
        Reply::data(json!(entries))
    }

    /// `GET /nodes/{node}/hardware/pci/{pci-id-or-mapping}`: the index below a device.
    fn hardware_pci_index(&self) -> ApiResult<Reply> {
        self.identity
            .check(&format!("/nodes/{}", self.node()), "Sys.Audit")?;
        self.shared.state().node(self.node())?;
        Reply::data(json!([{ "method": "mdev" }]))
    }

    /// pve-storage PVE::API2::Storage::Content `info`: path, size, used, format.
    fn volume_get(&self) -> ApiResult<Reply> {
        let storage_name = self.vars.get("storage").cloned().unwrap_or_default();
        self.identity
            .check(&format!("/storage/{storage_name}"), "Datastore.Audit")?;
        let volume = self.vars.get("volume").cloned().unwrap_or_default();
        let volid = if volume.contains(':') {
            volume
        } else {
            format!("{storage_name}:{volume}")
        };
        let state = self.shared.state();
        state.node(self.node())?;
        let found = find_volume(&state, self.node(), &volid)
            .ok_or_else(|| ApiError::internal(format!("volume '{volid}' does not exist")))?;
        let storage = state.storage(volid.split(':').next().unwrap_or(""))?;
        let volname = volid.split_once(':').map_or("", |(_, name)| name);
        let path = match storage.kind.as_str() {
            "lvmthin" | "lvm" => format!("/dev/pve/{volname}"),
            "zfspool" | "zfs" => format!("/dev/zvol/rpool/data/{volname}"),
            _ => match volname.split_once('/') {
                Some((content, file)) => {
                    format!("{}/template/{content}/{file}", storage_path(storage))
                        .replace("/template/import/", "/import/")
                        .replace("/template/images/", "/images/")
                }
                None => format!("{}/images/{volname}", storage_path(storage)),
            },
        };
        Reply::data(json!({
            "path": path, "size": found.size, "used": found.size, "format": found.format,
            "protected": 0,
        }))
    }

    /// qemu-server `cloudinit_generated_config_dump`: the generated NoCloud documents.
    fn cloudinit_dump(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity.check(&format!("/vms/{vmid}"), "VM.Audit")?;
        let state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?;
        let text = match self.text("type").unwrap_or("user") {
            "network" => guest::cloudinit_network_dump(vm),
            "meta" => guest::cloudinit_meta_dump(vm),
            _ => guest::cloudinit_user_dump(vm),
        };
        Reply::data(json!(text))
    }

    /// qemu-server `unlink`: removes disks from the config; with `force` the volumes are
    /// deleted, else they stay as `unusedN`.
    fn vm_unlink(&self) -> ApiResult<Reply> {
        let vmid = self.vmid();
        self.identity
            .check(&format!("/vms/{vmid}"), "VM.Config.Disk")?;
        let force = self.flag("force");
        let ids: Vec<String> = self
            .text("idlist")
            .unwrap_or("")
            .split([',', ';', ' '])
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        let mut state = self.shared.state();
        let vm = state.vm(self.node(), vmid)?.clone();
        if let Some(lock) = vm.lock() {
            return Err(ApiError::internal(format!("VM is locked ({lock})")));
        }
        if state.config_lock_holder(vmid).is_some() {
            return Err(lock_timeout(vmid));
        }
        let mut config = vm.config.clone();
        let mut unused = (0..)
            .find(|n| !config.contains_key(&format!("unused{n}")))
            .unwrap_or(0);
        let mut freed = Vec::new();
        for key in &ids {
            let Some(value) = config.remove(key) else {
                continue;
            };
            let file = propstring::parse(&value)
                .ok()
                .and_then(|e| propstring::get(&e, "file", Some("file")).map(str::to_owned));
            let Some(file) = file.filter(|f| f.contains(&format!("vm-{vmid}-"))) else {
                continue;
            };
            if force || key.starts_with("unused") || file.ends_with("-cloudinit") {
                freed.push(file);
            } else {
                config.insert(format!("unused{unused}"), file);
                unused += 1;
            }
        }
        for file in freed {
            if let Some(volume) = find_volume(&state, self.node(), &file) {
                let key = volume_key(volume.node.as_deref(), &file);
                state.volumes.remove(&key);
            }
        }
        if let Some(vm) = state.vms.get_mut(&vmid) {
            vm.config = config;
        }
        Reply::data(Value::Null)
    }
}

/// pve-storage PVE/Storage/Plugin.pm `get_next_vm_diskname`: `vm-VMID-disk-N` with the lowest
/// N unused for this VMID on this storage, counting the volumes this request allocated before
/// (qemu-server allocates drives in sorted key order, `$foreach_volume_with_alloc`).
fn next_disk_name(
    state: &State,
    storage: &crate::inventory::StorageSpec,
    node: &str,
    vmid: u32,
    reserved: &BTreeSet<String>,
) -> String {
    let taken: BTreeSet<&str> = state
        .volumes
        .values()
        .filter(|v| storage.shared || v.node.as_deref() == Some(node))
        .map(|v| v.volid.as_str())
        .chain(reserved.iter().map(String::as_str))
        .collect();
    (0..)
        .map(|n| format!("{}:vm-{vmid}-disk-{n}", storage.name))
        .find(|candidate| !taken.contains(candidate.as_str()))
        .unwrap_or_default()
}

/// Where a directory storage lives (`local` is `/var/lib/vz`, others `/mnt/pve/NAME`).
fn storage_path(storage: &crate::inventory::StorageSpec) -> String {
    if storage.name == "local" {
        "/var/lib/vz".to_owned()
    } else {
        format!("/mnt/pve/{}", storage.name)
    }
}

fn format_of(filename: &str) -> String {
    match filename.rsplit_once('.').map(|(_, ext)| ext) {
        Some("qcow2") => "qcow2",
        Some("vmdk") => "vmdk",
        Some("iso") => "iso",
        Some("img" | "raw") => "raw",
        Some("ova") => "ova",
        Some(_) | None => "raw",
    }
    .to_owned()
}

/// PVE::AbstractConfig `lock_config`: `lock_config_full($vmid, 10, …)`.
const CONFIG_LOCK_TIMEOUT_S: f64 = 10.0;

enum LockWait {
    Free,
    /// Simulated seconds until the holder releases the lock.
    After(f64),
    Timeout(u32),
}

/// PVE::Tools `lock_file_full`'s message for a lock not obtained in time.
fn lock_timeout(vmid: u32) -> ApiError {
    ApiError::internal(format!(
        "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"
    ))
}

/// A synchronous `PUT …/config` blocks on the VM's config lock up to 10 s (scaled) before it
/// answers, like qemu-server's `lock_config` in the API process.
async fn wait_for_config_lock(shared: &Shared, method: &Method, path: &str) {
    if *method != Method::PUT {
        return;
    }
    let Some(vars) = matches("/nodes/{node}/qemu/{vmid}/config", path) else {
        return;
    };
    let Some(vmid) = vars.get("vmid").and_then(|v| v.parse::<u32>().ok()) else {
        return;
    };
    let timeout = Duration::from_secs_f64(CONFIG_LOCK_TIMEOUT_S * shared.config.time_scale);
    let deadline = tokio::time::Instant::now() + timeout;
    while shared.state().config_lock_holder(vmid).is_some()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
        shared.advance();
    }
}

/// How qemu-server checks a config key (src/PVE/API2/Qemu.pm: `$cpuoptions`,
/// `$memoryoptions`, `$hwtypeoptions`, `$generaloptions`, `$vmpoweroptions`, `$diskoptions`,
/// `$cloudinitoptions` and `check_vm_modify_config_perm`).
enum ConfigCategory {
    Privilege(&'static str),
    /// VM.Config.Options and Sys.Modify on `/` ("it changes host behaviour").
    Startup,
    /// VM.Config.Cloudinit or VM.Config.Network (any).
    CloudinitOrNetwork,
    /// VM.Config.Disk and VM.PowerMgmt.
    Vmstate,
    /// Drives, `cdrom`, `unusedN`, `serialN`, `usbN`, `hostpciN`, `virtiofsN`, `tags`: checked
    /// on their value elsewhere.
    ValueDependent,
    /// "only root can set 'KEY' config" (args, hugepages, keephugepages, affinity, lock, …).
    RootOnly,
}

/// Tags as qemu-server stores them on create and on config changes:
/// `PVE::GuestHelpers::get_unique_tags` (pve-guest-common `src/PVE/GuestHelpers.pm`) splits the
/// list like `split_list` (`;`, `,`, white space), and with datacenter.cfg's default `tag-style`
/// (not case-sensitive, ordering not `config`) lowercases, sorts, drops duplicates and joins
/// with `;`. Ansible's proxmox_kvm sends `gpu,ansible` and reads back `ansible;gpu`.
fn unique_tags(value: &str) -> String {
    let mut tags: Vec<String> = value
        .split(|c: char| c == ';' || c == ',' || c == '\0' || c.is_whitespace())
        .filter(|tag| !tag.is_empty())
        .map(str::to_lowercase)
        .collect();
    tags.sort();
    tags.dedup();
    tags.join(";")
}

fn config_category(key: &str) -> ConfigCategory {
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let numbered = base.len() < key.len();
    if is_disk_key(key)
        || key == "cdrom"
        || key == "tags"
        || (numbered && matches!(base, "unused" | "serial" | "usb" | "hostpci" | "virtiofs"))
    {
        return ConfigCategory::ValueDependent;
    }
    match key {
        "cores" | "cpu" | "runningcpu" | "cpulimit" | "cpuunits" | "numa" | "smp" | "sockets"
        | "vcpus" => ConfigCategory::Privilege("VM.Config.CPU"),
        _ if numbered && base == "numa" => ConfigCategory::Privilege("VM.Config.CPU"),
        "memory" | "balloon" | "shares" | "allow-ksm" => {
            ConfigCategory::Privilege("VM.Config.Memory")
        }
        "acpi" | "hotplug" | "kvm" | "machine" | "runningmachine" | "scsihw" | "smbios1"
        | "tablet" | "vga" | "watchdog" | "audio0" | "rng0" => {
            ConfigCategory::Privilege("VM.Config.HWType")
        }
        "startup" => ConfigCategory::Startup,
        "agent" | "autostart" | "bios" | "description" | "keyboard" | "localtime"
        | "migrate_downtime" | "migrate_speed" | "name" | "onboot" | "ostype" | "protection"
        | "reboot" | "startdate" | "tdf" | "template" => {
            ConfigCategory::Privilege("VM.Config.Options")
        }
        "freeze" => ConfigCategory::Privilege("VM.PowerMgmt"),
        "boot" | "bootdisk" | "vmstatestorage" => ConfigCategory::Privilege("VM.Config.Disk"),
        "running-nets-host-mtu" => ConfigCategory::Privilege("VM.Config.Network"),
        _ if numbered && base == "net" => ConfigCategory::Privilege("VM.Config.Network"),
        "cicustom" | "cipassword" | "citype" | "ciuser" | "ciupgrade" | "nameserver"
        | "searchdomain" | "sshkeys" => ConfigCategory::CloudinitOrNetwork,
        _ if numbered && base == "ipconfig" => ConfigCategory::CloudinitOrNetwork,
        "vmstate" => ConfigCategory::Vmstate,
        _ => ConfigCategory::RootOnly,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn template_matching() {
        let vars = matches("/nodes/{node}/qemu/{vmid}", "/nodes/pve1/qemu/101").unwrap();
        assert_eq!(vars["node"], "pve1");
        assert_eq!(vars["vmid"], "101");
        assert!(matches("/nodes/{node}/qemu", "/nodes/pve1/qemu/101").is_none());
    }

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

    #[test]
    fn every_route_is_in_the_header_table() {
        let source = include_str!("router.rs");
        for (method, template) in ROUTES {
            let row = format!("| {method:<6} | {template}");
            assert!(
                source
                    .lines()
                    .any(|l| l.contains(&row) || (l.contains(method) && l.contains(template))),
                "route {method} {template} missing from the table"
            );
        }
    }
}
