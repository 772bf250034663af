//! Which Proxmox privilege a 403 most likely lacks, so the user is told what to grant where.
//!
//! Proxmox's own message (`Permission check failed (/vms/100, VM.Allocate)`) is used when
//! present; otherwise the privilege is derived from the request, following the `permissions`
//! of each route in the official API schema.

/// The privilege and ACL path a request to `path` with `method` needs, as `(privilege, acl)`.
pub fn likely_privilege(method: &str, path: &str) -> (String, String) {
    let segments: Vec<&str> = path
        .split('?')
        .next()
        .unwrap_or("")
        .trim_matches('/')
        .split('/')
        .collect();
    let method = method.to_ascii_uppercase();
    match segments.as_slice() {
        ["nodes", _node, "qemu"] => ("VM.Allocate".into(), "/vms/{vmid}".into()),
        ["nodes", _node, "qemu", vmid, "clone"] => (
            "VM.Clone".into(),
            format!("/vms/{vmid} (and VM.Allocate on /vms/{{newid}})"),
        ),
        ["nodes", _node, "qemu", vmid, "config"] if method == "GET" => {
            ("VM.Audit".into(), format!("/vms/{vmid}"))
        }
        ["nodes", _node, "qemu", vmid, "config"] => (
            "VM.Config.* (and Mapping.Use on /mapping/pci/<id> for hostpci mappings, \
             Datastore.AllocateSpace on /storage/<storage> for new disks)"
                .into(),
            format!("/vms/{vmid}"),
        ),
        ["nodes", _node, "qemu", vmid, "resize"] => {
            ("VM.Config.Disk".into(), format!("/vms/{vmid}"))
        }
        ["nodes", _node, "qemu", vmid, "status", "current"] => {
            ("VM.Audit".into(), format!("/vms/{vmid}"))
        }
        ["nodes", _node, "qemu", vmid, "status", _action] => {
            ("VM.PowerMgmt".into(), format!("/vms/{vmid}"))
        }
        ["nodes", _node, "qemu", vmid, "agent", "file-read"] => {
            ("VM.GuestAgent.FileRead".into(), format!("/vms/{vmid}"))
        }
        ["nodes", _node, "qemu", vmid, "agent", _command] => {
            ("VM.GuestAgent.Audit".into(), format!("/vms/{vmid}"))
        }
        ["nodes", _node, "qemu", vmid] => ("VM.Allocate".into(), format!("/vms/{vmid}")),
        ["nodes", _node, "storage", storage, "download-url"] => (
            "Datastore.AllocateTemplate (and Sys.Audit on / or Sys.AccessNetwork on the node)"
                .into(),
            format!("/storage/{storage}"),
        ),
        ["nodes", _node, "storage", storage, "upload"] => (
            "Datastore.AllocateTemplate".into(),
            format!("/storage/{storage}"),
        ),
        ["nodes", _node, "storage", storage, "content", ..] if method == "DELETE" => {
            ("Datastore.Allocate".into(), format!("/storage/{storage}"))
        }
        ["nodes", _node, "storage", storage, ..] => {
            ("Datastore.Audit".into(), format!("/storage/{storage}"))
        }
        ["nodes", _node, "hardware", ..] => ("Sys.Audit or Sys.Modify".into(), "/".into()),
        ["nodes", node, "tasks", ..] => ("Sys.Audit".into(), format!("/nodes/{node}")),
        ["nodes", node, ..] => ("Sys.Audit".into(), format!("/nodes/{node}")),
        ["cluster", "mapping", "pci", ..] if method == "GET" => (
            "Mapping.Audit or Mapping.Use".into(),
            "/mapping/pci/<id>".into(),
        ),
        ["cluster", "mapping", "pci", ..] => ("Mapping.Modify".into(), "/mapping/pci".into()),
        ["pools", ..] if method == "GET" => ("Pool.Audit".into(), "/pool/<pool>".into()),
        ["pools", ..] => ("Pool.Allocate".into(), "/pool/<pool>".into()),
        _ => ("Sys.Audit".into(), "/".into()),
    }
}

/// `(acl path, privilege)` from Proxmox's `Permission check failed (/vms/100, VM.Allocate)`.
pub fn parse_permission_message(message: &str) -> Option<(String, String)> {
    let start = message.find("Permission check failed (")? + "Permission check failed (".len();
    let inner = &message[start..];
    let inner = &inner[..inner.find(')')?];
    let (acl, privilege) = inner.split_once(',')?;
    Some((acl.trim().to_owned(), privilege.trim().to_owned()))
}

/// `(privilege, acl path)` a refused request most likely lacks.
pub fn missing_privilege(method: &str, path: &str, message: &str) -> (String, String) {
    match parse_permission_message(message) {
        Some((acl, privilege)) => (privilege, acl),
        None => likely_privilege(method, path),
    }
}

/// The user-facing hint of a 403.
pub fn forbidden_hint(method: &str, path: &str, message: &str) -> String {
    let (privilege, acl) = missing_privilege(method, path, message);
    format!(
        "grant {privilege} on {acl} to the user or API token (a role that contains it, e.g. \
         PVEVMAdmin); tokens with privilege separation need it granted to the token itself"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn proxmox_message_wins_over_guess() {
        let hint = forbidden_hint(
            "POST",
            "/nodes/pve1/qemu",
            "Permission check failed (/mapping/pci/a100-0, Mapping.Use)",
        );
        assert!(
            hint.contains("Mapping.Use on /mapping/pci/a100-0"),
            "{hint}"
        );
    }

    #[test]
    fn guesses_follow_routes() {
        assert_eq!(
            likely_privilege("POST", "/nodes/pve1/qemu/120/status/start"),
            ("VM.PowerMgmt".to_owned(), "/vms/120".to_owned())
        );
        assert_eq!(
            likely_privilege("POST", "/nodes/pve1/storage/local/upload").1,
            "/storage/local"
        );
        assert_eq!(
            likely_privilege("DELETE", "/nodes/pve1/qemu/120"),
            ("VM.Allocate".to_owned(), "/vms/120".to_owned())
        );
        assert!(
            likely_privilege("GET", "/nodes/pve1/hardware/pci")
                .0
                .contains("Sys.Modify")
        );
        assert_eq!(
            likely_privilege("POST", "/cluster/mapping/pci").0,
            "Mapping.Modify"
        );
    }

    #[test]
    fn parses_permission_message() {
        assert_eq!(
            parse_permission_message("Permission check failed (/vms/100, VM.Allocate)\n"),
            Some(("/vms/100".to_owned(), "VM.Allocate".to_owned()))
        );
        assert_eq!(parse_permission_message("something else"), None);
    }
}
