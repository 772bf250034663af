//! Hostile-input checks on single strings: control characters, safe paths and mount points,
//! URLs, Git URLs and refs, jump hosts, PCI prefixes and apt sources. The allow-lists
//! (`allow_lists.rs`) apply them to a profile's fields.

use super::bounds::MAX_STRING;

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

/// Whether `text` contains a control character (including newlines and escape sequences).
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// One line of printable text of at most `max` bytes.
pub(super) fn check_text(text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        Err(format!("is {} bytes long; at most {max}", text.len()))
    } else if has_control(text) {
        Err("contains control characters (newlines, tabs or escape sequences)".to_owned())
    } else {
        Ok(())
    }
}

pub(super) fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')
}

/// `^/[A-Za-z0-9._/-]+$` with no empty, `.` or `..` component.
pub(super) fn check_safe_path(path: &str) -> Result<(), String> {
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
pub(super) fn check_mount_path(path: &str) -> Result<(), String> {
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
pub(super) fn is_relative_path(path: &str) -> bool {
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
pub(super) fn check_local_path(path: &str) -> Result<(), String> {
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
pub(super) fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
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
pub(super) fn check_git_url(repo: &str) -> Result<(), (String, String)> {
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
pub(super) fn scp_like_to_ssh(repo: &str) -> Option<String> {
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
pub(super) fn is_git_ref(branch: &str) -> bool {
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
pub(super) fn is_jump_host(spec: &str) -> bool {
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
pub(super) fn is_pci_prefix(device: &str) -> bool {
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

pub(super) fn is_apt_word(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+'))
}

pub(super) fn check_apt_uri(uri: &str) -> Result<(), String> {
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

pub(super) fn check_one_line(line: &str) -> Result<bool, String> {
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

pub(super) fn check_deb822(stanza: &str) -> Result<bool, String> {
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
