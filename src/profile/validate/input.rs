//! Hostile-input rules: bounds on every count and size, and allow-lists for every string that
//! reaches a shell, a path, a YAML document or the Proxmox API.
//!
//! Everything here runs before any other rule walks a list, so a profile asking for 4 billion
//! VMs or 100 000 tags is refused after a bounded amount of work. The bounds and rules are listed
//! in `profiles/README.md` ("Validation rules"); keep the two in step.

use super::{Checker, path};
use crate::profile::diagnostic::KeyPath;
use crate::profile::model::{NodeGroup, Profile};

/// A profile file larger than this is refused before it is parsed.
pub const MAX_PROFILE_BYTES: usize = 1024 * 1024;
/// `[[node_groups]]` tables per profile.
pub const MAX_NODE_GROUPS: usize = 100;
/// VMs per group and in the whole profile.
pub const MAX_VMS: u64 = 1000;
/// Entries of short lists: tags, labels, taints, cpu_flags, tls_san, dns, disable, proxmox
/// nodes, topology entries, NUMA nodes and a group's proxmox_nodes.
pub const MAX_LIST: usize = 64;
/// PCI devices listed per NUMA node.
pub const MAX_PCI_DEVICES: usize = 256;
/// Memory per VM: qemu-server's maximum (4 TiB).
pub const MAX_MEMORY_MIB: u64 = 4 * 1024 * 1024;
/// OS and scratch disk size (1 PiB): far above any real disk, low enough that byte sizes fit in `u64`.
pub const MAX_DISK_GB: u32 = 1024 * 1024;
/// Any free-form string (paths, URLs, descriptions).
pub const MAX_STRING: usize = 4096;
/// A Linux cpulist (`0-31,64-95`).
pub const MAX_CPULIST: usize = 1024;

/// Directories a scratch disk must never be mounted on (nor local-path point at).
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/var/lib",
    "/var/lib/kubelet",
    "/var/lib/rancher",
    "/var/lib/rancher/k3s",
    "/var/log",
];

/// Trees nothing may be mounted anywhere under.
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys", "/usr",
];

impl Checker {
    /// Count and size bounds. Returns false when the profile is too large for the other rules to
    /// walk (more groups or VMs than the bounds): those rules are then skipped.
    pub(super) fn bounds(&mut self, profile: &Profile) -> bool {
        let mut walkable = true;
        let groups = profile.node_groups.len();
        if groups > MAX_NODE_GROUPS {
            self.error(
                path(&["node_groups"]),
                format!("{groups} node groups; at most {MAX_NODE_GROUPS} are supported"),
                "merge groups that share a shape: a group's count says how many VMs it has",
            );
            walkable = false;
        }
        for (index, group) in profile.node_groups.iter().take(MAX_NODE_GROUPS).enumerate() {
            if !self.group_bounds(&path(&["node_groups"]).index(index), group) {
                walkable = false;
            }
        }
        let total = profile.vm_count();
        if total > MAX_VMS && walkable {
            self.error(
                path(&["node_groups"]),
                format!("the profile asks for {total} VMs; at most {MAX_VMS} are supported"),
                "split the cluster into several profiles or lower the groups' counts",
            );
            walkable = false;
        }
        let cluster = &profile.cluster;
        self.list_bound(
            path(&["cluster", "tls_san"]),
            cluster.tls_san.len(),
            MAX_LIST,
        );
        self.list_bound(
            path(&["cluster", "disable"]),
            cluster.disable.len(),
            MAX_LIST,
        );
        self.list_bound(
            path(&["network", "dns"]),
            profile.network.dns.len(),
            MAX_LIST,
        );
        let proxmox = &profile.proxmox;
        self.list_bound(path(&["proxmox", "nodes"]), proxmox.nodes.len(), MAX_LIST);
        self.list_bound(path(&["proxmox", "tags"]), proxmox.tags.len(), MAX_LIST);
        self.list_bound(
            path(&["proxmox", "topology"]),
            proxmox.topology.len(),
            MAX_LIST,
        );
        for (index, host) in proxmox.topology.iter().take(MAX_LIST).enumerate() {
            let host_path = path(&["proxmox", "topology"]).index(index);
            self.list_bound(host_path.key("numa_nodes"), host.numa_nodes.len(), MAX_LIST);
            for (numa_index, numa) in host.numa_nodes.iter().take(MAX_LIST).enumerate() {
                let numa_path = host_path.key("numa_nodes").index(numa_index);
                self.list_bound(
                    numa_path.key("pci_devices"),
                    numa.pci_devices.len(),
                    MAX_PCI_DEVICES,
                );
                if numa.cpus.len() > MAX_CPULIST {
                    self.error(
                        numa_path.key("cpus"),
                        format!(
                            "CPU list of {} characters; at most {MAX_CPULIST}",
                            numa.cpus.len()
                        ),
                        "write ranges such as 0-31,64-95 instead of single CPUs",
                    );
                }
                for (pci_index, device) in numa.pci_devices.iter().take(MAX_PCI_DEVICES).enumerate()
                {
                    if !is_pci_prefix(device) {
                        self.error(
                            numa_path.key("pci_devices").index(pci_index),
                            format!("`{device}` is not a PCI address or bus prefix"),
                            "write DDDD:BB, DDDD:BB:SS or DDDD:BB:SS.F in hex, e.g. 0000:41:00",
                        );
                    }
                }
            }
        }
        walkable
    }

    /// Bounds of one group; false when its count is beyond [`MAX_VMS`].
    fn group_bounds(&mut self, group_path: &KeyPath, group: &NodeGroup) -> bool {
        let mut walkable = true;
        if u64::from(group.count) > MAX_VMS {
            self.error(
                group_path.key("count"),
                format!(
                    "count {} is above the limit of {MAX_VMS} VMs per group",
                    group.count
                ),
                "lower count; a profile holds at most 1000 VMs",
            );
            walkable = false;
        }
        if group.addresses.len() as u64 > MAX_VMS {
            self.error(
                group_path.key("addresses"),
                format!(
                    "{} addresses; a group holds at most {MAX_VMS} VMs",
                    group.addresses.len()
                ),
                "give exactly one address per VM, or use address_range",
            );
            walkable = false;
        }
        if group.memory_mib > MAX_MEMORY_MIB {
            self.error(
                group_path.key("memory_mib"),
                format!(
                    "{} MiB is above Proxmox's maximum of {MAX_MEMORY_MIB} MiB (4 TiB) per VM",
                    group.memory_mib
                ),
                "give the VM at most 4194304 MiB",
            );
        }
        let disks = group_path.key("disks");
        for (key, size) in [
            ("os_gb", Some(group.disks.os_gb)),
            ("scratch_gb", group.disks.scratch_gb),
        ] {
            if let Some(size) = size
                && size > MAX_DISK_GB
            {
                self.error(
                    disks.key(key),
                    format!("{size} GB is above the limit of {MAX_DISK_GB} GB per disk"),
                    "size disks in GB: 1000 is one terabyte",
                );
            }
        }
        for (key, len) in [
            ("labels", group.labels.len()),
            ("taints", group.taints.len()),
            ("cpu_flags", group.cpu_flags.len()),
            ("proxmox_nodes", group.proxmox_nodes.len()),
        ] {
            self.list_bound(group_path.key(key), len, MAX_LIST);
        }
        walkable
    }

    fn list_bound(&mut self, list_path: KeyPath, len: usize, max: usize) {
        if len > max {
            self.error(
                list_path,
                format!("{len} entries; at most {max} are supported"),
                "shorten the list",
            );
        }
    }

    /// Allow-lists for the string fields no other rule fully constrains.
    pub(super) fn allow_lists(&mut self, profile: &Profile) {
        if let Err(reason) = check_text(&profile.description, 512) {
            self.error(
                path(&["description"]),
                format!("description {reason}"),
                "write one line of plain text",
            );
        }
        for (index, group) in profile.node_groups.iter().take(MAX_NODE_GROUPS).enumerate() {
            if let Some(mount) = &group.disks.scratch_mount
                && mount.starts_with('/')
                && let Err(reason) = check_mount_path(mount)
            {
                self.error(
                    path(&["node_groups"]).index(index).key("disks").key("scratch_mount"),
                    format!("scratch_mount `{mount}` {reason}"),
                    "write an absolute path of letters, digits, `.`, `_`, `-` and `/` outside system directories, e.g. /mnt/scratch",
                );
            }
        }
        self.image_allow_lists(profile);
        self.storage_allow_lists(profile);
        self.gitops_allow_lists(profile);
        self.ssh_allow_lists(profile);
        self.airgap_allow_lists(profile);
    }

    fn image_allow_lists(&mut self, profile: &Profile) {
        let image = &profile.image;
        if let Some(url) = &image.url
            && (url.starts_with("http://") || url.starts_with("https://"))
            && let Err(reason) = check_url(url, &["http", "https"])
        {
            self.error(
                path(&["image", "url"]),
                format!("image url {reason}"),
                "write a plain http(s) URL; percent-encode spaces and quotes",
            );
        }
        if let Some(name) = &image.file_name
            && !is_file_name(name)
        {
            self.error(
                path(&["image", "file_name"]),
                format!("image file name `{name}` is not a plain file name"),
                "letters, digits, `.`, `_` and `-`, not starting with `.`, e.g. debian-12.qcow2",
            );
        } else if image.file_name.is_none()
            && let Some(url) = &image.url
        {
            let derived = url.rsplit('/').next().unwrap_or_default();
            if !derived.is_empty() && !is_file_name(derived) {
                self.error(
                    path(&["image", "url"]),
                    format!("the URL's last segment `{derived}` is not a plain file name"),
                    "set image.file_name, e.g. file_name = \"debian-12.qcow2\"",
                );
            }
        }
        if let Some(volume) = &image.volume
            && let Some((_, volume_path)) = volume.split_once(':')
            && !is_relative_path(volume_path)
        {
            self.error(
                path(&["image", "volume"]),
                format!("volume path `{volume_path}` is not a plain relative path"),
                "write STORAGE:import/FILE with letters, digits, `.`, `_`, `-` and `/`, no `..`",
            );
        }
    }

    fn storage_allow_lists(&mut self, profile: &Profile) {
        if let Some(nfs) = &profile.storage.nfs
            && nfs.path.starts_with('/')
            && let Err(reason) = check_safe_path(&nfs.path)
        {
            self.error(
                path(&["storage", "nfs", "path"]),
                format!("NFS export path `{}` {reason}", nfs.path),
                "write the export as the server lists it, e.g. /export/k3s (letters, digits, `.`, `_`, `-`, `/`)",
            );
        }
        if let Some(scratch) = &profile.storage.fast_scratch
            && scratch.path.starts_with('/')
            && let Err(reason) = check_mount_path(&scratch.path)
        {
            self.error(
                path(&["storage", "fast_scratch", "path"]),
                format!("fast_scratch path `{}` {reason}", scratch.path),
                "write an absolute path of letters, digits, `.`, `_`, `-` and `/` outside system directories, e.g. /mnt/scratch",
            );
        }
    }

    fn gitops_allow_lists(&mut self, profile: &Profile) {
        let gitops = &profile.gitops;
        if let Some(repo) = &gitops.repo
            && let Err((reason, hint)) = check_git_url(repo)
        {
            self.error(
                path(&["gitops", "repo"]),
                format!("gitops.repo {reason}"),
                &hint,
            );
        }
        if let Some(credentials) = &gitops.credentials {
            for (key, value) in [
                ("file", Some(&credentials.file)),
                ("known_hosts_file", credentials.known_hosts_file.as_ref()),
            ] {
                if let Some(value) = value
                    && let Err(reason) = check_local_path(value)
                {
                    self.error(
                        path(&["gitops", "credentials", key]),
                        format!("gitops.credentials.{key} {reason}"),
                        "a path relative to the workspace, absolute or ~/…, of letters, digits and `._/+~-`, e.g. secrets/gitops-deploy-key",
                    );
                }
            }
        }
        if let Some(branch) = &gitops.branch
            && !is_git_ref(branch)
        {
            self.error(
                path(&["gitops", "branch"]),
                format!("`{branch}` is not a plain Git branch name"),
                "letters, digits, `.`, `_`, `-` and `/`, no `..`, e.g. main",
            );
        }
        if let Some(repo_path) = &gitops.path
            && !repo_path.starts_with('/')
            && !is_relative_path(repo_path)
        {
            self.error(
                path(&["gitops", "path"]),
                format!("gitops.path `{repo_path}` is not a plain relative path"),
                "letters, digits, `.`, `_`, `-` and `/`, no `..`, e.g. clusters/a100-8x",
            );
        }
    }

    fn ssh_allow_lists(&mut self, profile: &Profile) {
        let ssh = &profile.ssh;
        if let Err(reason) = check_text(&ssh.private_key, MAX_STRING) {
            self.error(
                path(&["ssh", "private_key"]),
                format!("ssh.private_key {reason}"),
                "point at a private key file, e.g. ~/.ssh/id_ed25519",
            );
        }
        if let Some(jump) = &ssh.jump_host
            && jump.contains('@')
            && !is_jump_host(jump)
        {
            self.error(
                path(&["ssh", "jump_host"]),
                format!("jump host `{jump}` holds characters a user, host or port cannot"),
                "e.g. root@pve1 or admin@bastion.example.com:2222",
            );
        }
    }

    fn airgap_allow_lists(&mut self, profile: &Profile) {
        let airgap = &profile.airgap;
        for (key, value) in [
            ("k3s_binary", &airgap.k3s_binary),
            ("images", &airgap.images),
        ] {
            if let Some(value) = value
                && let Err(reason) = check_local_path(value)
            {
                self.error(
                    path(&["airgap", key]),
                    format!("airgap.{key} {reason}"),
                    "write a local file path of letters, digits, `.`, `_`, `-`, `+`, `~` and `/`",
                );
            }
        }
        if let Some(key) = &profile.nvidia.repo_key
            && let Err(reason) = check_local_path(key)
        {
            self.error(
                path(&["nvidia", "repo_key"]),
                format!("nvidia.repo_key {reason}"),
                "write a local file path of letters, digits, `.`, `_`, `-`, `+`, `~` and `/`",
            );
        }
        if let Some(source) = &airgap.apt_source {
            match check_apt_source(source) {
                Err(reason) => self.error(
                    path(&["airgap", "apt_source"]),
                    format!("airgap.apt_source {reason}"),
                    "write one line `deb [signed-by=/path] http://mirror/debian bookworm main` or one deb822 stanza (Types:, URIs:, Suites:, Components:)",
                ),
                Ok(true) => self.warning(
                    path(&["airgap", "apt_source"]),
                    "airgap.apt_source trusts the repository without signatures (trusted=yes)",
                    "sign the mirror and use signed-by=/path/to/key.gpg instead",
                ),
                Ok(false) => {}
            }
        }
    }
}

/// Whether `text` contains a control character (including newlines and escape sequences).
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// One line of printable text of at most `max` bytes.
fn check_text(text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        Err(format!("is {} bytes long; at most {max}", text.len()))
    } else if has_control(text) {
        Err("contains control characters (newlines, tabs or escape sequences)".to_owned())
    } else {
        Ok(())
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')
}

/// `^/[A-Za-z0-9._/-]+$` with no empty, `.` or `..` component.
fn check_safe_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_STRING {
        return Err(format!(
            "is {} bytes long; at most {MAX_STRING}",
            path.len()
        ));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err("is not absolute".to_owned());
    };
    if let Some(bad) = path.chars().find(|c| !is_path_char(*c)) {
        return Err(format!("contains {:?}, which a plain path cannot", bad));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if !rest.is_empty() && rest.split('/').any(|part| matches!(part, "" | "." | "..")) {
        return Err("has an empty, `.` or `..` component".to_owned());
    }
    Ok(())
}

/// [`check_safe_path`] plus: not a system directory, not inside /proc, /sys, /dev, /etc, ….
fn check_mount_path(path: &str) -> Result<(), String> {
    check_safe_path(path)?;
    let normal = match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    if SYSTEM_DIRS.contains(&normal) {
        return Err("is a system directory".to_owned());
    }
    if let Some(tree) = SYSTEM_TREES
        .iter()
        .find(|tree| normal.starts_with(&format!("{tree}/")))
    {
        return Err(format!("lies inside the system directory {tree}"));
    }
    Ok(())
}

/// A relative path of `[A-Za-z0-9._/-]` without empty, `.` or `..` components.
fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_STRING
        && !path.starts_with('/')
        && path.chars().all(is_path_char)
        && !path
            .trim_end_matches('/')
            .split('/')
            .any(|part| matches!(part, "" | "." | ".."))
}

/// `^[A-Za-z0-9._-]+$`, not starting with `.`, at most 255 bytes.
pub fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A local file path (read by provision itself): printable, no shell characters.
fn check_local_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_STRING {
        return Err("is empty or longer than 4096 bytes".to_owned());
    }
    match path
        .chars()
        .find(|c| !(is_path_char(*c) || matches!(c, '+' | '~')))
    {
        Some(bad) => Err(format!("contains {bad:?}, which a plain path cannot")),
        None => Ok(()),
    }
}

/// Characters legal in URLs that still have no business in one written into a shell line,
/// a manifest or a config file.
const URL_FORBIDDEN: &[char] = &['`', '$', '\'', '"', '\\', '<', '>', '{', '}', '|', '^', ';'];

/// A URL of one of `schemes` with a host, no whitespace, controls or shell characters.
fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    if url.len() > MAX_STRING {
        return Err(format!("is {} bytes long; at most {MAX_STRING}", url.len()));
    }
    if let Some(bad) = url
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || URL_FORBIDDEN.contains(c))
    {
        return Err(format!("`{url}` contains {bad:?}"));
    }
    let parsed = url::Url::parse(url).map_err(|error| format!("`{url}` is not a URL: {error}"))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(format!(
            "`{url}` uses scheme `{}`, not one of {}",
            parsed.scheme(),
            schemes.join(", ")
        ));
    }
    if parsed.scheme() != "file" && parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(())
}

/// What the engines' CRDs all accept: `https://…` or `ssh://…`. Plain `http://` is refused (the
/// repository drives the cluster as cluster-admin, and HTTPS credentials would travel in clear), and an
/// scp-like `git@host:org/repo` is refused with its `ssh://` spelling as the hint (Flux refuses it).
/// The error is (reason, hint).
fn check_git_url(repo: &str) -> Result<(), (String, String)> {
    const HINT: &str = "use https://… or ssh://… without spaces, quotes or shell characters";
    if let Some(rewritten) = scp_like_to_ssh(repo) {
        return Err((
            format!("`{repo}` is an scp-like address, which the GitOps engines do not all accept"),
            match check_url(&rewritten, &["ssh"]) {
                Ok(()) => format!("write it as an ssh URL: {rewritten}"),
                Err(_) => format!("write it as an ssh URL, ssh://USER@HOST/PATH; {HINT}"),
            },
        ));
    }
    check_url(repo, &["https", "http", "ssh"]).map_err(|reason| (reason, HINT.to_owned()))?;
    if repo.starts_with("http://") {
        return Err((
            format!("`{repo}` is plain http"),
            "use https:// (the repository drives the cluster, and credentials must not travel in clear)"
                .to_owned(),
        ));
    }
    Ok(())
}

/// `[user@]host:path` (Git's scp-like syntax) as `ssh://[user@]host/path`; `None` for anything else.
fn scp_like_to_ssh(repo: &str) -> Option<String> {
    if repo.contains("://") {
        return None;
    }
    let (user_host, repo_path) = repo.split_once(':')?;
    if user_host.is_empty() || user_host.contains('/') || repo_path.is_empty() {
        return None;
    }
    Some(format!(
        "ssh://{user_host}/{}",
        repo_path.trim_start_matches('/')
    ))
}

/// A Git branch name: `[A-Za-z0-9._/-]`, no `..`, not starting with `-` or `/`.
fn is_git_ref(branch: &str) -> bool {
    !branch.is_empty()
        && branch.len() <= 255
        && !branch.starts_with(['-', '/', '.'])
        && !branch.ends_with(['/', '.'])
        && !branch.ends_with(".lock")
        && !branch.contains("..")
        && !branch.contains("//")
        && branch.chars().all(is_path_char)
}

/// `user@host[:port]`: a plain user, a DNS name / IPv4 / `[IPv6]`, a port 1-65535.
fn is_jump_host(spec: &str) -> bool {
    let Some((user, rest)) = spec.split_once('@') else {
        return false;
    };
    let user_ok = !user.is_empty()
        && user.len() <= 32
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        match v6.split_once(']') {
            Some((address, tail)) => (address, tail.strip_prefix(':')),
            None => return false,
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let host_ok = host.parse::<std::net::IpAddr>().is_ok()
        || crate::profile::validate::is_dns_subdomain(&host.to_ascii_lowercase());
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|p| p > 0));
    user_ok && host_ok && port_ok
}

/// `DDDD:BB`, `DDDD:BB:SS` or `DDDD:BB:SS.F` in hex.
fn is_pci_prefix(device: &str) -> bool {
    let hex =
        |text: &str, len: usize| text.len() == len && text.chars().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = device.split(':').collect();
    match parts.as_slice() {
        [domain, bus] => hex(domain, 4) && hex(bus, 2),
        [domain, bus, slot] => {
            let (slot, function) = match slot.split_once('.') {
                Some((slot, function)) => (slot, Some(function)),
                None => (*slot, None),
            };
            hex(domain, 4)
                && hex(bus, 2)
                && hex(slot, 2)
                && function
                    .is_none_or(|f| matches!(f, "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7"))
        }
        _ => false,
    }
}

fn is_apt_word(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+'))
}

fn check_apt_uri(uri: &str) -> Result<(), String> {
    check_url(uri, &["http", "https", "file"])
}

/// A one-line `deb [opts] URI suite [components]` or one deb822 stanza. `Ok(true)` when the
/// source disables signature checks (`trusted=yes`).
pub fn check_apt_source(source: &str) -> Result<bool, String> {
    if source.len() > MAX_STRING {
        return Err(format!(
            "is {} bytes long; at most {MAX_STRING}",
            source.len()
        ));
    }
    let trimmed = source.trim_end_matches('\n');
    if let Some(bad) = trimmed.chars().find(|c| *c != '\n' && c.is_control()) {
        return Err(format!("contains the control character {bad:?}"));
    }
    if trimmed.contains('\n') || trimmed.contains(": ") && !trimmed.starts_with("deb") {
        check_deb822(trimmed)
    } else {
        check_one_line(trimmed)
    }
}

fn check_one_line(line: &str) -> Result<bool, String> {
    let mut rest = line.trim();
    let kind = rest.split(' ').next().unwrap_or_default();
    if kind != "deb" && kind != "deb-src" {
        return Err(format!("`{line}` does not start with `deb` or `deb-src`"));
    }
    rest = rest[kind.len()..].trim_start();
    let mut trusted = false;
    if let Some(options) = rest.strip_prefix('[') {
        let Some((options, tail)) = options.split_once(']') else {
            return Err("has `[` without `]`".to_owned());
        };
        for option in options.split_whitespace() {
            let valid = option.split_once('=').is_some_and(|(key, value)| {
                !key.is_empty()
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && value.split(',').all(is_apt_word)
            });
            if !valid {
                return Err(format!("option `{option}` is not key=value"));
            }
            trusted |= option.eq_ignore_ascii_case("trusted=yes");
        }
        rest = tail.trim_start();
    }
    let words: Vec<&str> = rest.split(' ').filter(|w| !w.is_empty()).collect();
    let [uri, suite, components @ ..] = words.as_slice() else {
        return Err(format!("`{line}` needs a URI and a suite"));
    };
    check_apt_uri(uri)?;
    if let Some(bad) = std::iter::once(suite)
        .chain(components.iter())
        .find(|word| !is_apt_word(word))
    {
        return Err(format!(
            "suite or component `{bad}` holds characters apt does not use"
        ));
    }
    Ok(trusted)
}

fn check_deb822(stanza: &str) -> Result<bool, String> {
    let mut trusted = false;
    let mut seen = (false, false, false);
    for line in stanza.lines() {
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("line `{line}` is not `Key: value`"));
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("`{key}` is not a deb822 field name"));
        }
        let words: Vec<&str> = value.split_whitespace().collect();
        if words.is_empty() {
            return Err(format!("field `{key}` is empty"));
        }
        match key.to_ascii_lowercase().as_str() {
            "types" => {
                seen.0 = true;
                if let Some(bad) = words.iter().find(|w| !matches!(**w, "deb" | "deb-src")) {
                    return Err(format!("type `{bad}` is not deb or deb-src"));
                }
            }
            "uris" => {
                seen.1 = true;
                for uri in &words {
                    check_apt_uri(uri)?;
                }
            }
            field => {
                seen.2 |= field == "suites";
                trusted |= field == "trusted"
                    && words.first().is_some_and(|w| w.eq_ignore_ascii_case("yes"));
                if let Some(bad) = words.iter().find(|w| !is_apt_word(w)) {
                    return Err(format!(
                        "`{bad}` in field `{key}` holds characters apt does not use"
                    ));
                }
            }
        }
    }
    if seen != (true, true, true) {
        return Err("a deb822 stanza needs Types:, URIs: and Suites:".to_owned());
    }
    Ok(trusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_refuse_injection_traversal_and_system_directories() {
        assert!(check_mount_path("/mnt/scratch").is_ok());
        assert!(check_mount_path("/var/lib/rancher/k3s/storage").is_ok());
        assert!(check_mount_path("/mnt/x'$(touch /tmp/pwned)'").is_err());
        assert!(check_mount_path("/mnt/../etc").is_err());
        assert!(check_mount_path("/").is_err());
        assert!(check_mount_path("/etc/").is_err());
        assert!(check_mount_path("/proc/sys").is_err());
        assert!(check_mount_path("/var/lib/rancher").is_err());
        assert!(check_mount_path("/mnt//x").is_err());
        assert!(check_mount_path("/mnt/a\nb").is_err());
    }

    #[test]
    fn file_names_are_single_components() {
        assert!(is_file_name("debian-12.qcow2"));
        assert!(!is_file_name("../../../../etc/cron.d/x.qcow2"));
        assert!(!is_file_name(".hidden.qcow2"));
        assert!(!is_file_name("a b.qcow2"));
    }

    #[test]
    fn apt_sources_accept_one_line_and_deb822_and_flag_trusted() {
        assert_eq!(
            check_apt_source(
                "deb [signed-by=/etc/apt/keyrings/m.gpg] http://mirror/debian bookworm main contrib"
            ),
            Ok(false)
        );
        assert_eq!(
            check_apt_source("deb [trusted=yes] file:///srv/debs ./"),
            Ok(true)
        );
        assert_eq!(
            check_apt_source(
                "Types: deb\nURIs: https://mirror/debian\nSuites: bookworm\nComponents: main\nTrusted: yes\n"
            ),
            Ok(true)
        );
        assert!(check_apt_source("deb http://m/debian bookworm main; curl x|sh").is_err());
        assert!(check_apt_source("deb http://m/debian bookworm\ndeb http://evil x").is_err());
        assert!(check_apt_source("deb ftp://m/debian bookworm main").is_err());
        assert!(check_apt_source("deb http://m/$(id) bookworm").is_err());
        assert!(check_apt_source("deb http://m/debian bookworm \x1b[2J").is_err());
        assert!(check_apt_source("Types: deb\nURIs: http://m\n").is_err());
    }

    #[test]
    fn urls_refuse_whitespace_controls_and_shell_characters() {
        assert!(check_git_url("https://git.example/org/fleet.git").is_ok());
        assert!(check_git_url("ssh://git@git.example/org/fleet.git").is_ok());
        let (reason, hint) = check_git_url("git@git.example:org/fleet.git").expect_err("scp-like");
        assert!(reason.contains("scp-like"), "{reason}");
        assert_eq!(
            hint,
            "write it as an ssh URL: ssh://git@git.example/org/fleet.git"
        );
        assert!(check_git_url("http://git.example/org/fleet.git").is_err());
        assert_eq!(scp_like_to_ssh("https://git.example/x"), None);
        assert_eq!(
            scp_like_to_ssh("deploy@git.example:/srv/fleet.git").as_deref(),
            Some("ssh://deploy@git.example/srv/fleet.git")
        );
        assert!(check_git_url("https://git.example/x\nkind: Secret").is_err());
        assert!(check_git_url("https://git.example/x y").is_err());
        assert!(check_git_url("git@host:org/$(id).git").is_err());
        assert!(check_git_url("https://").is_err());
    }

    #[test]
    fn jump_hosts_branches_and_pci_prefixes() {
        assert!(is_jump_host("root@pve1"));
        assert!(is_jump_host("admin@bastion.example.com:2222"));
        assert!(is_jump_host("admin@[fd00::1]:22"));
        assert!(!is_jump_host("root@pve1 -oProxyCommand=x"));
        assert!(!is_jump_host("root@pve1:0"));
        assert!(is_git_ref("release/1.2"));
        assert!(!is_git_ref("-x"));
        assert!(!is_git_ref("a..b"));
        assert!(is_pci_prefix("0000:41"));
        assert!(is_pci_prefix("0000:41:00.1"));
        assert!(!is_pci_prefix("0000:41:00;reboot"));
    }
}
