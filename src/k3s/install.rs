//! Per-node install steps (files, binary, service control) and the uninstall command list.

use crate::nodeprep::Step;
use crate::nodeprep::shell::quote;
use crate::profile::model::Role;

use super::config::{env_file_content, env_path, unit_name, unit_path};
use super::manifests::Manifest;
use super::{BINARY_PATH, CONFIG_PATH, IMAGES_DIR, KUBECONFIG_PATH, MANIFESTS_DIR};

/// The files that make up a node's k3s install (besides the binary), in write order.
pub fn config_steps(role: Role, config_yaml: &str, unit: &str) -> Vec<Step> {
    vec![
        Step::File {
            description: format!("k3s config {CONFIG_PATH}"),
            path: CONFIG_PATH.to_owned(),
            content: config_yaml.as_bytes().to_vec(),
            mode: 0o600,
        },
        Step::File {
            description: format!("environment file {}", env_path(role)),
            path: env_path(role),
            content: env_file_content().as_bytes().to_vec(),
            mode: 0o600,
        },
        Step::File {
            description: format!("systemd unit {}", unit_name(role)),
            path: unit_path(role),
            content: unit.as_bytes().to_vec(),
            mode: 0o644,
        },
    ]
}

/// Manifest files on the bootstrap server.
pub fn manifest_steps(manifests: &[Manifest]) -> Vec<Step> {
    manifests
        .iter()
        .map(|manifest| Step::File {
            description: format!("manifest {}", manifest.file_name),
            path: format!("{MANIFESTS_DIR}/{}", manifest.file_name),
            content: manifest.content.as_bytes().to_vec(),
            mode: 0o600,
        })
        .collect()
}

/// Remote path of an air-gap image tarball.
pub fn images_path(file_name: &str) -> String {
    format!("{IMAGES_DIR}/{file_name}")
}

/// Prints the sha256 of the installed binary, or `absent`.
pub fn binary_state_script() -> String {
    crate::nodeprep::file_state_script(BINARY_PATH)
}

/// What to do with the service after the files are in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    /// Already running with the current files.
    None,
    /// Not running: enable and start.
    Start,
    /// Running, but its config, unit or binary changed.
    Restart,
}

/// Decide the service action; `files_changed` covers config, env, unit and binary.
pub fn service_action(active: bool, files_changed: bool) -> ServiceAction {
    match (active, files_changed) {
        (false, _) => ServiceAction::Start,
        (true, true) => ServiceAction::Restart,
        (true, false) => ServiceAction::None,
    }
}

/// Prints `active yes|no` and `enabled yes|no` for the role's unit.
pub fn service_state_script(role: Role) -> String {
    let unit = quote(unit_name(role));
    format!(
        "if systemctl is-active --quiet {unit}; then echo 'active yes'; else echo 'active no'; fi; if systemctl is-enabled --quiet {unit} 2>/dev/null; then echo 'enabled yes'; else echo 'enabled no'; fi"
    )
}

/// Parse [`service_state_script`]'s output into (active, enabled).
pub fn parse_service_state(stdout: &str) -> (bool, bool) {
    (
        stdout.lines().any(|l| l.trim() == "active yes"),
        stdout.lines().any(|l| l.trim() == "enabled yes"),
    )
}

/// The command for a service action. `--no-block`: k3s's unit has `TimeoutStartSec=0`, so provision
/// waits for readiness itself, bounded and named, instead of hanging in systemctl.
pub fn service_command(role: Role, action: ServiceAction, unit_changed: bool) -> Option<String> {
    let unit = quote(unit_name(role));
    let reload = if unit_changed {
        "systemctl daemon-reload && "
    } else {
        ""
    };
    match action {
        ServiceAction::None if unit_changed => Some("systemctl daemon-reload".to_owned()),
        ServiceAction::None => None,
        ServiceAction::Start => Some(format!(
            "{reload}systemctl enable {unit} && systemctl start --no-block {unit}"
        )),
        ServiceAction::Restart => Some(format!(
            "{reload}systemctl enable {unit} && systemctl restart --no-block {unit}"
        )),
    }
}

/// Undo everything provision wrote for k3s on a node (the equivalent of `k3s-killall.sh` followed by
/// `k3s-uninstall.sh` / `k3s-agent-uninstall.sh`), plus node preparation's persisted files.
pub fn uninstall_commands(role: Role) -> Vec<String> {
    let unit = quote(unit_name(role));
    vec![
        format!("systemctl disable --now {unit} 2>/dev/null || true"),
        "pkill -9 -f '/var/lib/rancher/k3s/data/[^/]+/bin/containerd-shim' 2>/dev/null || true".to_owned(),
        "awk '$2 ~ \"^(/run/k3s|/var/lib/kubelet|/var/lib/rancher/k3s|/run/netns/cni-)\" {print $2}' /proc/self/mounts | sort -r | while read -r m; do umount -l \"$m\"; done".to_owned(),
        "for link in cni0 flannel.1 flannel-v6.1 flannel-wg flannel-wg-v6 kube-ipvs0; do ip link delete \"$link\" 2>/dev/null || true; done".to_owned(),
        "for t in iptables ip6tables; do if command -v \"$t-save\" >/dev/null; then \"$t-save\" | grep -v -e KUBE- -e CNI- -e flannel -e FLANNEL | \"$t-restore\"; fi; done".to_owned(),
        format!(
            "rm -f {unit_file} {env_file} && systemctl daemon-reload",
            unit_file = quote(&unit_path(role)),
            env_file = quote(&env_path(role))
        ),
        format!(
            "rm -rf /etc/rancher/k3s /var/lib/rancher/k3s /var/lib/kubelet /run/k3s /run/flannel {kubeconfig}",
            kubeconfig = quote(KUBECONFIG_PATH)
        ),
        format!("rm -f {}", quote(BINARY_PATH)),
        format!(
            "rm -f {} {} {} {}",
            crate::nodeprep::steps::MODULES_FILE,
            crate::nodeprep::steps::SYSCTL_FILE,
            crate::nodeprep::steps::APT_SOURCE_FILE,
            crate::nodeprep::steps::APT_SOURCE_DEB822_FILE
        ),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn service_actions() {
        assert_eq!(service_action(false, false), ServiceAction::Start);
        assert_eq!(service_action(true, true), ServiceAction::Restart);
        assert_eq!(service_action(true, false), ServiceAction::None);
        assert_eq!(
            service_command(Role::Server, ServiceAction::None, false),
            None
        );
        assert_eq!(
            service_command(Role::Agent, ServiceAction::Start, true).unwrap(),
            "systemctl daemon-reload && systemctl enable k3s-agent.service && systemctl start --no-block k3s-agent.service"
        );
        assert_eq!(
            parse_service_state("active yes\nenabled no\n"),
            (true, false)
        );
    }

    #[test]
    fn config_and_env_are_private() {
        let steps = config_steps(Role::Server, "token: x\n", "[Unit]\n");
        let modes: Vec<u32> = steps
            .iter()
            .map(|s| match s {
                Step::File { mode, .. } => *mode,
                Step::Command { .. } => 0,
            })
            .collect();
        assert_eq!(modes, [0o600, 0o600, 0o644]);
    }

    #[test]
    fn uninstall_removes_what_install_wrote() {
        let all = uninstall_commands(Role::Server).join("\n");
        for path in [
            "/etc/systemd/system/k3s.service",
            "/etc/systemd/system/k3s.service.env",
            "/etc/rancher/k3s",
            "/var/lib/rancher/k3s",
            "/usr/local/bin/k3s",
            "/etc/modules-load.d/provision-k3s.conf",
        ] {
            assert!(all.contains(path), "{path} not removed");
        }
    }
}
