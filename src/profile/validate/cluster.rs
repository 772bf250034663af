//! Cluster-wide rules: the name, the k3s version, the API VIP, TLS SANs, the pod and service
//! ranges, disabled components and the token TTL.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::formats::{is_dns_label, is_dns_subdomain, is_k3s_version, is_ttl};
use super::network::{overlaps, reserved_role};
use super::{Checker, DISABLEABLE_COMPONENTS, path};
use crate::profile::model::Profile;

impl Checker {
    pub(super) fn cluster(&mut self, profile: &Profile) {
        let cluster = &profile.cluster;
        if !is_dns_label(&cluster.name) {
            self.error(
                path(&["cluster", "name"]),
                format!("cluster name `{}` is not a DNS-1123 label", cluster.name),
                "use 1-63 lowercase letters, digits and `-`, starting and ending with a letter or digit",
            );
        }
        if !is_k3s_version(&cluster.k3s_version) {
            self.error(
                path(&["cluster", "k3s_version"]),
                format!("k3s version `{}` is not of the form vX.Y.Z+k3sN", cluster.k3s_version),
                "copy a release name from https://github.com/k3s-io/k3s/releases, e.g. v1.31.4+k3s1",
            );
        }
        if let Some(vip) = cluster.api_vip {
            let vip_path = path(&["cluster", "api_vip"]);
            if !profile.network.cidr.contains(vip) {
                self.error(
                    vip_path,
                    format!(
                        "API VIP {vip} is outside network.cidr {}",
                        profile.network.cidr
                    ),
                    "kube-vip announces the VIP with ARP: pick a free address inside network.cidr",
                );
            } else if let Some(what) = reserved_role(profile, vip).filter(|what| *what != "API VIP")
            {
                self.error(
                    vip_path,
                    format!("API VIP {vip} is the {what}"),
                    "pick a free address inside network.cidr that no host uses",
                );
            }
        } else if profile.server_count() > 1 {
            self.warning(
                path(&["cluster"]),
                "several servers but no cluster.api_vip: clients reach the API through the first server only",
                "set cluster.api_vip to a free address in network.cidr so the API survives a server failure",
            );
        }
        for (index, san) in cluster.tls_san.iter().enumerate() {
            if san.parse::<IpAddr>().is_err() && !is_dns_subdomain(san) {
                self.error(
                    path(&["cluster", "tls_san"]).index(index),
                    format!("tls_san entry `{san}` is neither an IP address nor a DNS name"),
                    "write an IP address or a lowercase DNS name such as k8s.example.com",
                );
            }
        }
        self.cluster_ranges(profile);
    }

    /// The pod and service ranges, disabled components and the token TTL.
    fn cluster_ranges(&mut self, profile: &Profile) {
        let cluster = &profile.cluster;
        for (name, cidr) in [
            ("cluster_cidr", cluster.cluster_cidr),
            ("service_cidr", cluster.service_cidr),
        ] {
            if overlaps(cidr, profile.network.cidr) {
                self.error(
                    path(&["cluster", name]),
                    format!("{name} {cidr} overlaps network.cidr {}", profile.network.cidr),
                    "pod and service networks must not overlap the VM network; the k3s defaults are 10.42.0.0/16 and 10.43.0.0/16",
                );
            }
        }
        if overlaps(cluster.cluster_cidr, cluster.service_cidr) {
            self.error(
                path(&["cluster", "service_cidr"]),
                format!(
                    "service_cidr {} overlaps cluster_cidr {}",
                    cluster.service_cidr, cluster.cluster_cidr
                ),
                "use two disjoint ranges, e.g. 10.42.0.0/16 for pods and 10.43.0.0/16 for services",
            );
        }
        let mut seen = BTreeSet::new();
        for (index, component) in cluster.disable.iter().enumerate() {
            let component_path = path(&["cluster", "disable"]).index(index);
            if !DISABLEABLE_COMPONENTS.contains(&component.as_str()) {
                self.error(
                    component_path,
                    format!("k3s has no packaged component `{component}` to disable"),
                    "one of: coredns, servicelb, traefik, local-storage, metrics-server, runtimes",
                );
            } else if !seen.insert(component.as_str()) {
                self.error(
                    component_path,
                    format!("`{component}` is listed twice"),
                    "remove the duplicate",
                );
            }
        }
        if let Some(ttl) = &cluster.ttl
            && !is_ttl(ttl)
        {
            self.error(
                path(&["cluster", "ttl"]),
                format!("ttl `{ttl}` is not a duration"),
                "write a positive number followed by m, h or d, e.g. 30m, 4h or 2d",
            );
        }
    }
}
