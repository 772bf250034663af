//! Semantic rules a profile must satisfy beyond its TOML shape; each finding names a key path.
//!
//! The rules are listed in `profiles/README.md` ("Validation rules"); keep the two in step. This
//! file holds the entry point, which fixes the order the rules run in (and so the order of the
//! findings), and the [`Checker`] they report to; each concern has its own file.

use super::diagnostic::{Finding, KeyPath, Severity, Target};
use super::model::Profile;

mod allow_lists;
mod bounds;
mod cluster;
mod cpus;
mod formats;
mod gitops;
mod group;
mod groups;
mod image;
mod input;
mod labels;
mod network;
mod nvidia;
mod proxmox;
mod ssh;
mod storage;

pub use bounds::{MAX_NODE_GROUPS, MAX_PROFILE_BYTES, MAX_VMS};
pub use cpus::parse_cpulist;
pub use formats::{is_dns_label, is_dns_subdomain, is_sha256, ttl_seconds};
pub use input::{check_apt_source, has_control};
pub use labels::{check_label_key, parse_taint};

/// Components k3s can be told not to deploy (`--disable`).
pub const DISABLEABLE_COMPONENTS: &[&str] = &[
    "coredns",
    "servicelb",
    "traefik",
    "local-storage",
    "metrics-server",
    "runtimes",
];

/// Every finding for `profile`, errors and warnings, in document order of the rules.
pub fn validate(profile: &Profile) -> Vec<Finding> {
    let mut checker = Checker::default();
    // Bounds first: beyond them the per-VM rules are skipped, so the work stays bounded.
    let walkable = checker.bounds(profile);
    checker.allow_lists(profile);
    checker.cluster(profile);
    checker.network(profile);
    checker.proxmox(profile);
    checker.image(profile);
    checker.node_groups(profile, walkable);
    if walkable {
        checker.addresses(profile);
    }
    checker.nvidia(profile);
    checker.storage(profile);
    checker.gitops(profile);
    checker.ssh(profile);
    checker.detect(profile);
    checker.airgap(profile);
    checker.findings
}

#[derive(Default)]
struct Checker {
    findings: Vec<Finding>,
}

fn path(keys: &[&str]) -> KeyPath {
    keys.iter().fold(KeyPath::root(), |path, key| path.key(key))
}

impl Checker {
    fn push(
        &mut self,
        severity: Severity,
        path: KeyPath,
        target: Target,
        message: String,
        hint: Option<&str>,
    ) {
        self.findings.push(Finding {
            severity,
            path,
            target,
            message,
            hint: hint.map(str::to_owned),
        });
    }

    fn error(&mut self, path: KeyPath, message: impl Into<String>, hint: &str) {
        self.push(
            Severity::Error,
            path,
            Target::Value,
            message.into(),
            Some(hint),
        );
    }

    fn error_at_key(&mut self, path: KeyPath, message: impl Into<String>, hint: &str) {
        self.push(
            Severity::Error,
            path,
            Target::Key,
            message.into(),
            Some(hint),
        );
    }

    fn warning(&mut self, path: KeyPath, message: impl Into<String>, hint: &str) {
        self.push(
            Severity::Warning,
            path,
            Target::Value,
            message.into(),
            Some(hint),
        );
    }
}
