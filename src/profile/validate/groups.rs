//! Rules across node groups: unique group names, an odd number of servers, unique valid VM names.

use std::collections::{BTreeMap, BTreeSet};

use super::formats::is_dns_label;
use super::{Checker, path};
use crate::profile::model::{Profile, Role};

impl Checker {
    pub(super) fn node_groups(&mut self, profile: &Profile, walkable: bool) {
        let groups_path = path(&["node_groups"]);
        if profile.node_groups.is_empty() {
            self.error(
                groups_path.clone(),
                "the profile has no node groups",
                "add a [[node_groups]] table with role = \"server\"",
            );
            return;
        }
        let mut names = BTreeSet::new();
        for (index, group) in profile.node_groups.iter().enumerate() {
            let group_path = groups_path.index(index);
            if !is_dns_label(&group.name) {
                self.error(
                    group_path.key("name"),
                    format!("group name `{}` is not a DNS-1123 label", group.name),
                    "group names end up in VM names: lowercase letters, digits and `-`",
                );
            } else if !names.insert(group.name.as_str()) {
                self.error(
                    group_path.key("name"),
                    format!("group name `{}` is used twice", group.name),
                    "give every node group its own name",
                );
            }
            self.group(profile, &group_path, group);
        }
        self.server_count(profile);
        self.vm_names(profile, walkable);
    }

    /// An odd number of servers, at least one.
    fn server_count(&mut self, profile: &Profile) {
        let groups_path = path(&["node_groups"]);
        let servers = profile.server_count();
        let first_server = profile
            .node_groups
            .iter()
            .position(|group| group.role == Role::Server);
        match first_server {
            None => self.error(
                groups_path.clone(),
                "the profile has no server group",
                "add a [[node_groups]] table with role = \"server\" (1 or 3 servers)",
            ),
            Some(index) if servers.is_multiple_of(2) => {
                let message = if servers == 0 {
                    "the server groups have no VMs: k3s needs at least one server".to_owned()
                } else if servers == 2 {
                    "2 servers cannot tolerate any failure: etcd needs a majority (2 of 2), so losing either server stops the cluster".to_owned()
                } else {
                    format!(
                        "{servers} servers is an even number: etcd tolerates no more failures than with {}",
                        servers - 1
                    )
                };
                self.error(
                    groups_path.index(index).key("count"),
                    message,
                    "use an odd number of servers: 1, or 3 for high availability",
                );
            }
            Some(_) => {}
        }
    }

    /// VM names must be unique valid DNS labels.
    fn vm_names(&mut self, profile: &Profile, walkable: bool) {
        let groups_path = path(&["node_groups"]);
        let mut vm_names: BTreeMap<String, usize> = BTreeMap::new();
        let names_checkable = walkable && is_dns_label(&profile.cluster.name);
        for (index, group) in profile.node_groups.iter().enumerate() {
            if !names_checkable || !is_dns_label(&group.name) {
                // Already reported on the name itself.
                continue;
            }
            for member in 1..=group.count.min(1000) {
                let name = group.vm_name(&profile.cluster.name, member);
                if name.len() > 63 || !is_dns_label(&name) {
                    let (key_path, hint) = if group.name_pattern.contains("{cluster}")
                        && profile.cluster.name.len() > 20
                    {
                        (
                            path(&["cluster", "name"]),
                            "shorten cluster.name: VM names are `{cluster}-{group}-{index}` and must stay DNS labels of at most 63 characters",
                        )
                    } else {
                        (
                            groups_path.index(index).key("name_pattern"),
                            "VM names must be lowercase DNS labels of at most 63 characters; shorten the pattern or the names it uses",
                        )
                    };
                    self.error(
                        key_path,
                        format!("generated VM name `{name}` is not a valid DNS label"),
                        hint,
                    );
                    break;
                }
                if let Some(other) = vm_names.insert(name.clone(), index)
                    && other != index
                {
                    self.error(
                        groups_path.index(index).key("name_pattern"),
                        format!("VM name `{name}` is generated by two node groups"),
                        "include {group} in name_pattern",
                    );
                    break;
                }
            }
        }
    }
}
