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

/// The hint for Proxmox's "only root can set 'KEY' config": raw PCI ids have a mapping
/// alternative, the other root-only keys (`hugepages`, `affinity` …) only root credentials.
fn root_only_hint(message: &str) -> String {
    if message.contains("non-mapped devices") {
        return "raw PCI device ids are accepted only from root@pam with a password login: \
                create a PCI resource mapping (Datacenter → Resource Mappings) and use \
                `hostpciN: mapping=<id>` (needs Mapping.Use on /mapping/pci/<id>), or log in \
                as root@pam"
            .to_owned();
    }
    ROOT_ONLY_REMEDY.to_owned()
}

/// What to do when a plan needs keys only `root@pam` may set.
pub const ROOT_ONLY_REMEDY: &str = "set PROXMOX_VE_USERNAME=root@pam and PROXMOX_VE_PASSWORD \
     (a root@pam ticket; with PROXMOX_VE_API_TOKEN also set, the token does everything else and \
     root@pam only the root-only keys), or drop numa_pinning and hugepages from the node group";

/// The user-facing hint of a 403.
pub fn forbidden_hint(method: &str, path: &str, message: &str) -> String {
    if message.contains("only root can set") {
        return root_only_hint(message);
    }
    let (privilege, acl) = missing_privilege(method, path, message);
    format!(
        "grant {privilege} on {acl} to the user or API token (a role that contains it, e.g. \
         PVEVMAdmin); tokens with privilege separation need it granted to the token itself"
    )
}

/// What Proxmox requires to set one VM config key (create or change), following qemu-server's
/// `check_vm_modify_config_perm` (src/PVE/API2/Qemu.pm). `root@pam` with a ticket skips every
/// check; an API token never counts as `root@pam`, not even root's own token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRequirement {
    /// A privilege on `/vms/{vmid}`.
    Vm(&'static str),
    /// Drives and volumes: checked against the storage (`Datastore.AllocateSpace`).
    Storage,
    /// `hostpciN: mapping=ID`: `Mapping.Use` on `/mapping/pci/ID` plus `VM.Config.HWType`.
    Mapping(String),
    /// Only `root@pam` (ticket) may set it: Proxmox answers "only root can set 'KEY' config".
    RootOnly,
}

/// Keys only `root@pam` may set that a provisioning tool is likely to send.
pub const ROOT_ONLY_KEYS: &[&str] = &["hugepages", "keephugepages", "affinity", "args", "romfile"];

/// Strip a trailing index: `numa0` → `numa`, `hostpci12` → `hostpci`.
fn key_family(key: &str) -> &str {
    key.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// What setting `key` to `value` needs (see [`KeyRequirement`]).
pub fn key_requirement(key: &str, value: &str) -> KeyRequirement {
    match (key, key_family(key)) {
        (
            "cores" | "cpu" | "cpulimit" | "cpuunits" | "numa" | "smp" | "sockets" | "vcpus"
            | "runningcpu",
            _,
        )
        | (_, "numa") => KeyRequirement::Vm("VM.Config.CPU"),
        ("memory" | "balloon" | "shares" | "allow-ksm", _) => {
            KeyRequirement::Vm("VM.Config.Memory")
        }
        (
            "acpi" | "hotplug" | "kvm" | "machine" | "scsihw" | "smbios1" | "tablet" | "vga"
            | "watchdog" | "audio0" | "rng0",
            _,
        ) => KeyRequirement::Vm("VM.Config.HWType"),
        (
            "agent" | "autostart" | "bios" | "description" | "keyboard" | "localtime" | "name"
            | "onboot" | "ostype" | "protection" | "reboot" | "startup" | "tdf" | "template"
            | "freeze" | "lock" | "migrate_downtime" | "migrate_speed" | "vmstatestorage"
            | "spice_enhancements" | "hookscript" | "pool",
            _,
        ) => KeyRequirement::Vm("VM.Config.Options"),
        ("boot" | "bootdisk", _) => KeyRequirement::Vm("VM.Config.Disk"),
        (_, "net") => KeyRequirement::Vm("VM.Config.Network"),
        (
            "ciuser" | "cipassword" | "cicustom" | "sshkeys" | "nameserver" | "searchdomain"
            | "citype" | "ciupgrade",
            _,
        )
        | (_, "ipconfig") => KeyRequirement::Vm("VM.Config.Cloudinit"),
        ("efidisk0" | "tpmstate0" | "cdrom" | "tags" | "vmid", _)
        | (_, "scsi" | "virtio" | "sata" | "ide" | "unused") => KeyRequirement::Storage,
        (_, "serial") if value == "socket" => KeyRequirement::Vm("VM.Config.HWType"),
        (_, "hostpci") => match value
            .split(',')
            .find_map(|part| part.strip_prefix("mapping="))
        {
            Some(mapping) => KeyRequirement::Mapping(mapping.to_owned()),
            None => KeyRequirement::RootOnly,
        },
        _ => KeyRequirement::RootOnly,
    }
}

/// The keys of `params` only `root@pam` may set (raw `hostpciN`, `hugepages`, `affinity` …).
pub fn root_only_keys<'a>(
    params: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<String> {
    params
        .into_iter()
        .filter(|(key, value)| key_requirement(key, value) == KeyRequirement::RootOnly)
        .map(|(key, _)| key.clone())
        .collect()
}

/// Whether `permissions` (`GET /access/permissions`) grant `privilege` on `path`: on the path
/// itself or on an ancestor whose ACL propagates.
pub fn granted(permissions: &super::types::Permissions, path: &str, privilege: &str) -> bool {
    let mut candidate = path.trim_end_matches('/').to_owned();
    loop {
        let key = if candidate.is_empty() {
            "/"
        } else {
            &candidate
        };
        if let Some(privileges) = permissions.get(key)
            && let Some(flag) = privileges.get(privilege)
            && (key == path || propagates(flag))
        {
            return true;
        }
        if candidate.is_empty() {
            return false;
        }
        candidate.truncate(candidate.rfind('/').unwrap_or(0));
    }
}

/// Proxmox answers `1` (propagate) or `0`; older versions answer plain `1` for every entry.
fn propagates(flag: &serde_json::Value) -> bool {
    match flag {
        serde_json::Value::Bool(value) => *value,
        serde_json::Value::Number(number) => number.as_u64() != Some(0),
        serde_json::Value::String(text) => text != "0",
        _ => true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn root_only_refusals_get_the_remedy_for_their_key() {
        let hugepages = forbidden_hint(
            "POST",
            "/nodes/pve1/qemu",
            "only root can set 'hugepages' config\n",
        );
        assert!(
            hugepages.contains("PROXMOX_VE_USERNAME=root@pam"),
            "{hugepages}"
        );
        assert!(!hugepages.contains("mapping"), "{hugepages}");
        let raw = forbidden_hint(
            "POST",
            "/nodes/pve1/qemu",
            "only root can set 'hostpci0' config for non-mapped devices\n",
        );
        assert!(raw.contains("resource mapping"), "{raw}");
    }

    #[test]
    fn config_keys_follow_qemu_server() {
        assert_eq!(
            key_requirement("cores", "4"),
            KeyRequirement::Vm("VM.Config.CPU")
        );
        assert_eq!(
            key_requirement("numa0", "cpus=0-3"),
            KeyRequirement::Vm("VM.Config.CPU")
        );
        assert_eq!(
            key_requirement("net0", "virtio"),
            KeyRequirement::Vm("VM.Config.Network")
        );
        assert_eq!(
            key_requirement("ipconfig0", "ip=dhcp"),
            KeyRequirement::Vm("VM.Config.Cloudinit")
        );
        assert_eq!(
            key_requirement("serial0", "socket"),
            KeyRequirement::Vm("VM.Config.HWType")
        );
        assert_eq!(
            key_requirement("serial0", "/dev/ttyS0"),
            KeyRequirement::RootOnly
        );
        assert_eq!(
            key_requirement("hostpci0", "mapping=a100,pcie=1"),
            KeyRequirement::Mapping("a100".into())
        );
        assert_eq!(
            key_requirement("hostpci1", "0000:41:00,pcie=1"),
            KeyRequirement::RootOnly
        );
        for key in ["hugepages", "keephugepages", "affinity", "args", "romfile"] {
            assert_eq!(key_requirement(key, "1"), KeyRequirement::RootOnly, "{key}");
        }
        assert_eq!(
            key_requirement("scsi1", "local-lvm:10"),
            KeyRequirement::Storage
        );
    }

    #[test]
    fn permissions_propagate_from_ancestors() {
        let permissions: crate::types::Permissions = serde_json::from_str(
            r#"{"/": {"Sys.Audit": 1}, "/vms": {"VM.Allocate": 1, "VM.Audit": 0}, "/storage/local": {"Datastore.AllocateSpace": 1}}"#,
        )
        .unwrap();
        assert!(granted(&permissions, "/vms/120", "VM.Allocate"));
        assert!(granted(&permissions, "/nodes/pve1", "Sys.Audit"));
        assert!(!granted(&permissions, "/vms/120", "VM.Audit"));
        assert!(granted(&permissions, "/vms", "VM.Audit"));
        assert!(granted(
            &permissions,
            "/storage/local",
            "Datastore.AllocateSpace"
        ));
        assert!(!granted(
            &permissions,
            "/storage/local-lvm",
            "Datastore.AllocateSpace"
        ));
    }

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
