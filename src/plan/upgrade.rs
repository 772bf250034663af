//! A `cluster.k3s_version` change on a running cluster is a rolling upgrade: an etcd snapshot
//! first, then the servers one at a time, then the agents in batches of `max_unavailable`, each
//! drained before its k3s restarts on the new binary and uncordoned once Ready again. Kubernetes'
//! version skew policy decides what is allowed: never a downgrade, never a skipped minor version
//! (kubelets may be older than the API server, never newer), never another major version.

use std::fmt;

use serde::Serialize;

use crate::profile::model::Role;

use super::rolling::{RollingOptions, Wave, WaveVm, count_role, name_index};
use super::{Action, ActionKind, PlanInput, PlannedVm};

/// Longest version string looked at; anything longer is not a k3s version.
const MAX_VERSION_LEN: usize = 40;
/// Most digits in one number of a version.
const MAX_DIGITS: usize = 6;

/// `vMAJOR.MINOR.PATCH+k3sN`, ordered by its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct K3sVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The k3s build of that Kubernetes release (`+k3s2`).
    pub build: u32,
}

impl fmt::Display for K3sVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v{}.{}.{}+k3s{}",
            self.major, self.minor, self.patch, self.build
        )
    }
}

/// A version that cannot be parsed, or an upgrade the skew policy forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("{what} `{value}` is not a k3s version of the form vX.Y.Z+k3sN")]
    Malformed { what: String, value: String },
    #[error(
        "cluster.k3s_version {to} is older than {from}, which the cluster runs: k3s cannot be downgraded (etcd and the API objects were written by the newer version); restore an etcd snapshot taken before the upgrade instead, or set k3s_version = \"{from}\""
    )]
    Downgrade { from: K3sVersion, to: K3sVersion },
    #[error(
        "cluster.k3s_version {to} skips minor version {major}.{skipped} (the cluster runs {from}): Kubernetes upgrades one minor version at a time; set k3s_version to a v{major}.{skipped} release first, run `up`, then {to}",
        major = from.major,
        skipped = from.minor.saturating_add(1)
    )]
    SkipsMinor { from: K3sVersion, to: K3sVersion },
    #[error(
        "cluster.k3s_version {to} changes the major version of {from}, which the cluster runs: provision does not upgrade across major versions; build a new cluster"
    )]
    MajorChange { from: K3sVersion, to: K3sVersion },
}

/// How far an upgrade goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeStep {
    /// Same version: nothing to do.
    None,
    /// Same minor version (a patch release or another k3s build of it).
    Patch,
    /// The next minor version.
    Minor,
}

impl K3sVersion {
    /// Parse `vX.Y.Z+k3sN` exactly (no pre-releases, no leading zeros, bounded numbers);
    /// `what` names the value in the error (`cluster.k3s_version`, `kubelet of lab-cp-1`).
    pub fn parse(what: &str, value: &str) -> Result<Self, VersionError> {
        let malformed = || VersionError::Malformed {
            what: what.to_owned(),
            value: value.chars().take(MAX_VERSION_LEN).collect(),
        };
        if value.len() > MAX_VERSION_LEN {
            return Err(malformed());
        }
        let rest = value.strip_prefix('v').ok_or_else(malformed)?;
        let (release, build) = rest.split_once("+k3s").ok_or_else(malformed)?;
        let mut numbers = release.split('.');
        let mut next = || number(numbers.next()).ok_or_else(malformed);
        let (major, minor, patch) = (next()?, next()?, next()?);
        if numbers.next().is_some() {
            return Err(malformed());
        }
        let build = number(Some(build)).ok_or_else(malformed)?;
        Ok(Self {
            major,
            minor,
            patch,
            build,
        })
    }
}

/// One decimal number: digits only (`+1` and `01` are refused), at most [`MAX_DIGITS`].
fn number(text: Option<&str>) -> Option<u32> {
    let text = text?;
    let digits_only = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits_only || leading_zero || text.len() > MAX_DIGITS {
        return None;
    }
    text.parse().ok()
}

/// Whether the cluster running `from` may go to `to`, and how far that is.
pub fn check_upgrade(from: K3sVersion, to: K3sVersion) -> Result<UpgradeStep, VersionError> {
    if to == from {
        return Ok(UpgradeStep::None);
    }
    if to.major != from.major {
        return Err(VersionError::MajorChange { from, to });
    }
    if to < from {
        return Err(VersionError::Downgrade { from, to });
    }
    if to.minor == from.minor {
        return Ok(UpgradeStep::Patch);
    }
    if Some(to.minor) == from.minor.checked_add(1) {
        return Ok(UpgradeStep::Minor);
    }
    Err(VersionError::SkipsMinor { from, to })
}

/// The same check against every version a cluster runs (mixed during an interrupted upgrade):
/// the newest one may not be downgraded, the oldest one may not skip a minor version.
pub fn check_cluster_upgrade(
    running: &[K3sVersion],
    to: K3sVersion,
) -> Result<UpgradeStep, VersionError> {
    let (Some(oldest), Some(newest)) = (running.iter().min(), running.iter().max()) else {
        return Ok(UpgradeStep::None);
    };
    check_upgrade(*newest, to)?;
    check_upgrade(*oldest, to)
}

/// The rolling upgrade a plan carries out in phase 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct K3sUpgrade {
    pub from: String,
    pub to: String,
    pub step: UpgradeStep,
    /// An etcd snapshot is taken on a server before the first node is touched.
    pub snapshot: bool,
    /// Servers one per wave, then agents in batches.
    pub waves: Vec<Wave>,
}

/// The upgrade from the version the workspace recorded at the last converged `up` to the
/// profile's, over the VMs that exist and stay; `None` when the versions match, no version was
/// recorded or no VM stays (a cluster that has not run phase 2 yet, or was taken down, is
/// installed at the profile's version).
pub(super) fn upgrade(
    input: &PlanInput<'_>,
    vms: &[PlannedVm],
    actions: &[Action],
) -> Result<Option<K3sUpgrade>, VersionError> {
    let Some(recorded) = &input.state.k3s_version else {
        return Ok(None);
    };
    let replaced = |name: &str| {
        actions
            .iter()
            .any(|action| action.vm() == name && action.kind() == ActionKind::Replace)
    };
    let mut kept: Vec<&PlannedVm> = vms
        .iter()
        .filter(|vm| vm.exists && !replaced(&vm.name))
        .collect();
    if kept.is_empty() {
        // Nothing left running the recorded version (after `down`): a new cluster.
        return Ok(None);
    }
    let from = K3sVersion::parse("the k3s version in the workspace state", recorded)?;
    let to = K3sVersion::parse("cluster.k3s_version", &input.profile.cluster.k3s_version)?;
    let step = check_upgrade(from, to)?;
    if step == UpgradeStep::None {
        return Ok(None);
    }
    kept.sort_by(|a, b| {
        u8::from(a.role == Role::Agent)
            .cmp(&u8::from(b.role == Role::Agent))
            .then(name_index(&a.name).cmp(&name_index(&b.name)))
            .then(a.name.cmp(&b.name))
    });
    Ok(Some(K3sUpgrade {
        from: from.to_string(),
        to: to.to_string(),
        step,
        snapshot: kept.iter().any(|vm| vm.role == Role::Server),
        waves: upgrade_waves(input, &kept, from, to, &input.context.rolling),
    }))
}

/// Servers one per wave, then agents `max_unavailable` at a time.
fn upgrade_waves(
    input: &PlanInput<'_>,
    kept: &[&PlannedVm],
    from: K3sVersion,
    to: K3sVersion,
    options: &RollingOptions,
) -> Vec<Wave> {
    let member = |vm: &PlannedVm| WaveVm {
        vm: vm.name.clone(),
        role: vm.role,
        action: ActionKind::Update,
        why: format!("upgrade: k3s {from} → {to}"),
        drain: options.cluster_running,
    };
    let mut groups: Vec<Vec<WaveVm>> = kept
        .iter()
        .filter(|vm| vm.role == Role::Server)
        .map(|vm| vec![member(vm)])
        .collect();
    let agents: Vec<WaveVm> = kept
        .iter()
        .filter(|vm| vm.role == Role::Agent)
        .map(|vm| member(vm))
        .collect();
    let batch = usize::try_from(options.max_unavailable.max(1)).unwrap_or(usize::MAX);
    groups.extend(agents.chunks(batch).map(<[WaveVm]>::to_vec));
    let servers = count_role(input, Role::Server);
    let agents = count_role(input, Role::Agent);
    groups
        .into_iter()
        .zip(1..)
        .map(|(vms, number)| {
            let down = |role: Role| vms.iter().filter(|vm| vm.role == role).count();
            let disruption = match (down(Role::Server), down(Role::Agent)) {
                (0, count) => format!("{count} of {agents} agents"),
                (count, _) => format!("{count} of {servers} servers"),
            };
            Wave {
                number,
                vms,
                disruption,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v(text: &str) -> K3sVersion {
        K3sVersion::parse("test", text).unwrap()
    }

    #[test]
    fn versions_parse_exactly_and_order_by_their_numbers() {
        assert_eq!(
            v("v1.31.4+k3s1"),
            K3sVersion {
                major: 1,
                minor: 31,
                patch: 4,
                build: 1
            }
        );
        assert_eq!(v("v1.31.4+k3s2").to_string(), "v1.31.4+k3s2");
        assert!(v("v1.31.4+k3s2") > v("v1.31.4+k3s1"));
        assert!(v("v1.31.10+k3s1") > v("v1.31.9+k3s3"));
        assert!(v("v1.32.0+k3s1") > v("v1.31.10+k3s1"));
    }

    #[test]
    fn hostile_version_strings_are_rejected() {
        for hostile in [
            "",
            "v",
            "1.31.4+k3s1",
            "v1.31+k3s1",
            "v1.31.4",
            "v1.31.4+k3s",
            "v1.31.4-rc1+k3s1",
            "v1.31.4+k3s1 ",
            " v1.31.4+k3s1",
            "v1.31.4+k3s1; rm -rf /",
            "v1.31.4+k3s1\n",
            "v1.+31.4+k3s1",
            "v1.031.4+k3s1",
            "v1.31.4.5+k3s1",
            "v1.31.4+k3s+1",
            "v1.31.4+k3s-1",
            "v1.99999999999.4+k3s1",
            "v1.31.4+k3s1+k3s1",
            "v１.31.4+k3s1",
            &format!("v1.31.4+k3s{}", "1".repeat(60)),
        ] {
            let error = K3sVersion::parse("cluster.k3s_version", hostile).unwrap_err();
            assert!(
                matches!(error, VersionError::Malformed { .. }),
                "{hostile:?}: {error}"
            );
        }
        let long = "v".repeat(500);
        let message = K3sVersion::parse("x", &long).unwrap_err().to_string();
        assert!(message.len() < 200, "the message quotes a bounded prefix");
    }

    #[test]
    fn patch_and_next_minor_are_upgrades() {
        assert_eq!(
            check_upgrade(v("v1.31.4+k3s1"), v("v1.31.4+k3s1")),
            Ok(UpgradeStep::None)
        );
        assert_eq!(
            check_upgrade(v("v1.31.4+k3s1"), v("v1.31.5+k3s1")),
            Ok(UpgradeStep::Patch)
        );
        assert_eq!(
            check_upgrade(v("v1.31.4+k3s1"), v("v1.31.4+k3s2")),
            Ok(UpgradeStep::Patch)
        );
        assert_eq!(
            check_upgrade(v("v1.31.4+k3s1"), v("v1.32.0+k3s1")),
            Ok(UpgradeStep::Minor)
        );
    }

    #[test]
    fn downgrades_minor_skips_and_major_changes_are_refused() {
        let error = check_upgrade(v("v1.31.4+k3s1"), v("v1.31.3+k3s1")).unwrap_err();
        assert!(matches!(error, VersionError::Downgrade { .. }));
        assert!(
            error.to_string().contains("cannot be downgraded"),
            "{error}"
        );
        assert!(matches!(
            check_upgrade(v("v1.31.4+k3s2"), v("v1.31.4+k3s1")),
            Err(VersionError::Downgrade { .. })
        ));
        assert!(matches!(
            check_upgrade(v("v1.32.0+k3s1"), v("v1.31.9+k3s1")),
            Err(VersionError::Downgrade { .. })
        ));
        let error = check_upgrade(v("v1.31.4+k3s1"), v("v1.33.0+k3s1")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cluster.k3s_version v1.33.0+k3s1 skips minor version 1.32 (the cluster runs v1.31.4+k3s1): Kubernetes upgrades one minor version at a time; set k3s_version to a v1.32 release first, run `up`, then v1.33.0+k3s1"
        );
        assert!(matches!(
            check_upgrade(v("v1.31.4+k3s1"), v("v2.0.0+k3s1")),
            Err(VersionError::MajorChange { .. })
        ));
    }

    #[test]
    fn a_mixed_cluster_is_checked_at_both_ends() {
        let running = [v("v1.31.4+k3s1"), v("v1.32.1+k3s1")];
        assert_eq!(
            check_cluster_upgrade(&running, v("v1.32.1+k3s1")),
            Ok(UpgradeStep::Minor)
        );
        assert!(matches!(
            check_cluster_upgrade(&running, v("v1.33.0+k3s1")),
            Err(VersionError::SkipsMinor { .. })
        ));
        assert!(matches!(
            check_cluster_upgrade(&running, v("v1.32.0+k3s1")),
            Err(VersionError::Downgrade { .. })
        ));
        assert_eq!(
            check_cluster_upgrade(&[], v("v1.32.0+k3s1")),
            Ok(UpgradeStep::None)
        );
    }
}
