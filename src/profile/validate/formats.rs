//! Predicates for the formats a profile's strings must have: DNS names, versions, Proxmox ids,
//! machine and CPU types, hashes and paths.

/// DNS-1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(is_dns_label)
}

pub(super) fn is_k3s_version(version: &str) -> bool {
    let Some(rest) = version.strip_prefix('v') else {
        return false;
    };
    let Some((semver, build)) = rest.split_once("+k3s") else {
        return false;
    };
    let numbers: Vec<&str> = semver.split('.').collect();
    numbers.len() == 3 && numbers.iter().all(|n| is_number(n)) && is_number(build)
}

pub(super) fn is_semver_v(version: &str) -> bool {
    version.strip_prefix('v').is_some_and(|rest| {
        let numbers: Vec<&str> = rest.split('.').collect();
        numbers.len() == 3 && numbers.iter().all(|n| is_number(n))
    })
}

pub(super) fn is_number(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_digit())
}

pub(super) fn is_ttl(ttl: &str) -> bool {
    ttl_seconds(ttl).is_some()
}

/// A TTL (`30m`, `4h`, `7d`: a positive whole number of minutes, hours or days) in seconds;
/// `None` when it is not one or does not fit in a `u64`.
pub fn ttl_seconds(ttl: &str) -> Option<u64> {
    let unit = ttl.chars().last()?;
    let number = &ttl[..ttl.len() - unit.len_utf8()];
    let scale = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    if !is_number(number) {
        return None;
    }
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(scale))
}

/// 64 hexadecimal characters.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit())
}

pub(super) fn is_absolute_path(path: &str) -> bool {
    path.starts_with('/') && !path.split('/').any(|part| part == "..")
}

pub(super) fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Proxmox storage / pool / mapping id: `[A-Za-z][A-Za-z0-9\-_.]*`.
pub(super) fn is_storage_id(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(super) fn is_volume_id(volume: &str) -> bool {
    volume
        .split_once(':')
        .is_some_and(|(storage, rest)| is_storage_id(storage) && !rest.is_empty())
}

/// Proxmox tag: `[a-z0-9_][a-z0-9_\-+.]*` (case-insensitive).
pub(super) fn is_proxmox_tag(tag: &str) -> bool {
    tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
}

pub(super) fn is_cpu_type(cpu: &str) -> bool {
    let model = cpu.strip_prefix("custom-").unwrap_or(cpu);
    !model.is_empty()
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The machine types Proxmox's schema accepts (`pc`, `q35`, versioned `pc-i440fx-…`/`pc-q35-…`).
pub(super) fn is_machine_type(machine: &str) -> bool {
    if machine == "pc" || machine == "q35" {
        return true;
    }
    let rest = machine
        .strip_prefix("pc-q35-")
        .or_else(|| machine.strip_prefix("pc-i440fx-"))
        .or_else(|| machine.strip_prefix("pc-"));
    let Some(rest) = rest else {
        return false;
    };
    let rest = rest.strip_suffix(".pxe").unwrap_or(rest);
    let (version, pve) = match rest.split_once("+pve") {
        Some((version, pve)) => (version, Some(pve)),
        None => (rest, None),
    };
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() >= 2 && parts.iter().all(|p| is_number(p)) && pve.is_none_or(is_number)
}

pub(super) fn has_import_extension(file_name: &str) -> bool {
    [".qcow2", ".img", ".raw", ".vmdk"]
        .iter()
        .any(|extension| file_name.len() > extension.len() && file_name.ends_with(extension))
}

/// `vvvv:dddd` or `vvvv:*` in hex.
pub(super) fn is_pci_filter(filter: &str) -> bool {
    let hex4 = |text: &str| text.len() == 4 && text.chars().all(|c| c.is_ascii_hexdigit());
    filter
        .split_once(':')
        .is_some_and(|(vendor, device)| hex4(vendor) && (device == "*" || hex4(device)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3s_versions_and_ttls() {
        assert!(is_k3s_version("v1.31.4+k3s1"));
        assert!(!is_k3s_version("1.31.4+k3s1"));
        assert!(!is_k3s_version("v1.31+k3s1"));
        assert!(!is_k3s_version("v1.31.4-rc1+k3s1"));
        assert!(is_ttl("4h"));
        assert!(!is_ttl("0h"));
        assert!(!is_ttl("4 hours"));
    }

    #[test]
    fn machine_types() {
        assert!(is_machine_type("pc-q35-9.2+pve1"));
        assert!(is_machine_type("q35"));
        assert!(!is_machine_type("q35-fast"));
    }
}
