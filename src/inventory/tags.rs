//! The machine-readable tags every VM provision creates carries, and their parsing: what lets
//! `list`, `gc` and `down` find a cluster on Proxmox without any workspace state.
//!
//! Tags follow Proxmox's rule `^(?i)[a-z0-9_][a-z0-9_\-+.]*$` (no `:` or `=`):
//! - `provision`: made by provision (nothing without it is ever touched);
//! - `cluster-<name>` and `provision-cluster-<name>`: the cluster (the first is what the planner
//!   has always matched; the second is the prefixed id `list`/`gc` read);
//! - `role-server` / `role-agent`;
//! - `provision-created-<unix seconds>`: when the cluster was created (its first VM);
//! - `provision-exp-<unix seconds>`: with `cluster.ttl`, when it expires (creation + TTL);
//! - `provision-ip-<address>`: the VM's planned address (`:` of IPv6 written `-`), so another
//!   cluster's planner skips it.

use std::net::IpAddr;

use super::ExistingVm;

/// On every VM provision creates.
pub const PROVISION_TAG: &str = "provision";
const CLUSTER_PREFIX: &str = "provision-cluster-";
const CREATED_PREFIX: &str = "provision-created-";
const EXPIRY_PREFIX: &str = "provision-exp-";
const ADDRESS_PREFIX: &str = "provision-ip-";

/// `provision-cluster-<name>`.
pub fn cluster_id_tag(cluster: &str) -> String {
    format!("{CLUSTER_PREFIX}{cluster}")
}

/// `provision-created-<unix>`.
pub fn created_tag(unix: u64) -> String {
    format!("{CREATED_PREFIX}{unix}")
}

/// `provision-exp-<unix>`.
pub fn expiry_tag(unix: u64) -> String {
    format!("{EXPIRY_PREFIX}{unix}")
}

/// `provision-ip-10.0.0.11`, `provision-ip-fd00--1` (IPv6 `:` → `-`).
pub fn address_tag(address: IpAddr) -> String {
    format!("{ADDRESS_PREFIX}{}", address.to_string().replace(':', "-"))
}

/// What provision's tags say about one VM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmTags {
    /// Carries `provision`.
    pub provision: bool,
    pub cluster: Option<String>,
    pub created: Option<u64>,
    pub expires: Option<u64>,
    pub address: Option<IpAddr>,
}

impl VmTags {
    /// Reads the tags (case-insensitively, as Proxmox compares them).
    pub fn read<'a>(tags: impl IntoIterator<Item = &'a str>) -> Self {
        let mut found = VmTags::default();
        for tag in tags {
            let tag = tag.trim().to_ascii_lowercase();
            if tag == PROVISION_TAG {
                found.provision = true;
            } else if let Some(name) = tag.strip_prefix(CLUSTER_PREFIX) {
                found.cluster = Some(name.to_owned());
            } else if let Some(name) = tag.strip_prefix("cluster-") {
                found.cluster.get_or_insert_with(|| name.to_owned());
            } else if let Some(time) = tag.strip_prefix(CREATED_PREFIX) {
                found.created = time.parse().ok();
            } else if let Some(time) = tag.strip_prefix(EXPIRY_PREFIX) {
                found.expires = time.parse().ok();
            } else if let Some(address) = tag.strip_prefix(ADDRESS_PREFIX) {
                found.address = parse_address(address);
            }
        }
        found
    }

    /// The tags of an observed VM.
    pub fn of(vm: &ExistingVm) -> Self {
        Self::read(vm.tags.iter().map(String::as_str))
    }

    /// The cluster, when the VM carries both `provision` and a cluster tag.
    pub fn provision_cluster(&self) -> Option<&str> {
        self.cluster.as_deref().filter(|_| self.provision)
    }
}

fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse()
        .ok()
        .or_else(|| text.replace('-', ":").parse().ok())
}

/// When `cluster` was created, by its VMs' creation tags (the earliest), if any carries one.
pub fn cluster_created<'a>(
    vms: impl IntoIterator<Item = &'a ExistingVm>,
    cluster: &str,
) -> Option<u64> {
    vms.into_iter()
        .map(VmTags::of)
        .filter(|tags| tags.provision_cluster() == Some(cluster))
        .filter_map(|tags| tags.created)
        .min()
}

/// Whether `tag` obeys Proxmox's tag format (`pve-tag`).
pub fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_obey_the_proxmox_format() {
        let v6: IpAddr = "fd00::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let v4 = IpAddr::from([10, 0, 0, 11]);
        let tags = [
            PROVISION_TAG.to_owned(),
            cluster_id_tag("ci-42"),
            created_tag(1_767_225_600),
            expiry_tag(1_767_240_000),
            address_tag(v6),
        ];
        for tag in &tags {
            assert!(is_valid_tag(tag), "{tag}");
        }
        let read = VmTags::read(tags.iter().map(String::as_str));
        assert_eq!(read.provision_cluster(), Some("ci-42"));
        assert_eq!(read.created, Some(1_767_225_600));
        assert_eq!(read.expires, Some(1_767_240_000));
        assert_eq!(read.address, Some(v6));
        assert_eq!(VmTags::read([address_tag(v4).as_str()]).address, Some(v4));
        assert!(!is_valid_tag("provision-exp:1"));
        assert!(!is_valid_tag("-x"));
    }

    #[test]
    fn a_cluster_tag_without_provision_is_not_a_provision_cluster() {
        let read = VmTags::read(["cluster-a"]);
        assert_eq!(read.provision_cluster(), None);
        assert_eq!(
            VmTags::read(["provision", "cluster-a"]).provision_cluster(),
            Some("a")
        );
    }
}
