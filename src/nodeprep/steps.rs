//! The node preparation step list: swap, kernel modules, sysctls, scratch disk, packages, NVIDIA (host mode).

use crate::profile::Profile;
use crate::profile::model::{NodeGroup, NvidiaMode, Role};

use super::Step;
use super::nvidia::{NvidiaHost, nvidia_host_steps};
use super::shell::quote;

/// Where the module list is persisted (read by systemd-modules-load at boot).
pub const MODULES_FILE: &str = "/etc/modules-load.d/provision-k3s.conf";
/// Where the sysctls are persisted (read by systemd-sysctl at boot).
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-provision-k3s.conf";
/// The offline apt source, when the profile has one.
pub const APT_SOURCE_FILE: &str = "/etc/apt/sources.list.d/provision-offline.list";
/// The same source in deb822 form: apt picks the parser by extension (`.list` one-line,
/// `.sources` deb822), for sources.list.d and for `Dir::Etc::SourceList` alike.
pub const APT_SOURCE_DEB822_FILE: &str = "/etc/apt/sources.list.d/provision-offline.sources";

/// Where `airgap.apt_source` goes: `.list` for a one-line `deb …` entry, `.sources` for a
/// deb822 stanza (`Types: deb` …).
pub fn apt_source_file(source: &str) -> &'static str {
    let first = source.split_whitespace().next().unwrap_or("");
    if first == "deb" || first == "deb-src" {
        APT_SOURCE_FILE
    } else {
        APT_SOURCE_DEB822_FILE
    }
}
/// Default mount point of the scratch disk when the profile names none.
pub const DEFAULT_SCRATCH_MOUNT: &str = "/mnt/scratch";

/// Kernel modules K3s (flannel, containerd's overlayfs snapshotter, kube-proxy) needs.
pub const K3S_MODULES: [&str; 2] = ["overlay", "br_netfilter"];

/// Kernel parameters for a Kubernetes node: forwarding and bridged traffic through iptables (flannel,
/// kube-proxy), enough inotify instances for many pods, and the values kubelet's
/// `protect-kernel-defaults` expects.
pub const K3S_SYSCTLS: [(&str, &str); 8] = [
    ("net.ipv4.ip_forward", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("fs.inotify.max_user_instances", "8192"),
    ("fs.inotify.max_user_watches", "524288"),
    ("vm.overcommit_memory", "1"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
];

/// A disk of a known size to format (when blank) and mount by UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScratchDisk {
    /// Exact size of the virtual disk in GiB: how the disk is found (it is the only unused disk of that size).
    pub size_gb: u32,
    pub mount: String,
}

/// Everything node preparation needs to know about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePrepInput {
    pub modules: Vec<String>,
    pub sysctls: Vec<(String, String)>,
    pub scratch: Option<ScratchDisk>,
    pub packages: Vec<String>,
    /// One apt source line used instead of the distribution's repositories (air-gapped installs).
    pub apt_source: Option<String>,
    /// The NVIDIA driver and toolkit from apt (`nvidia.mode = "host"` on a GPU node).
    pub nvidia_host: Option<NvidiaHost>,
}

impl NodePrepInput {
    /// What a node of `group` needs under `profile`.
    pub fn for_group(profile: &Profile, group: &NodeGroup) -> Self {
        let mut packages = Vec::new();
        if profile.storage.nfs.is_some() {
            packages.push("nfs-common".to_owned());
        }
        if group.role == Role::Server {
            // k3s ships no etcdctl: day-2 commands list and check etcd members with Debian's.
            packages.push(crate::k3s::etcd::ETCD_CLIENT_PACKAGE.to_owned());
        }
        let has_gpus = group.gpus.as_ref().is_some_and(|gpus| gpus.count > 0);
        // Validation refuses host mode when the guest OS is unknown.
        let nvidia_host = (has_gpus && profile.nvidia.mode == NvidiaMode::Host)
            .then(|| profile.image.guest_os())
            .flatten()
            .map(|os| NvidiaHost {
                os,
                driver: !profile.nvidia.driver_preinstalled(),
                repo_key: None,
            });
        let scratch = group.disks.scratch_gb.map(|size_gb| ScratchDisk {
            size_gb,
            mount: group
                .disks
                .scratch_mount
                .clone()
                .or_else(|| {
                    profile
                        .storage
                        .fast_scratch
                        .as_ref()
                        .map(|fast| fast.path.clone())
                })
                .unwrap_or_else(|| DEFAULT_SCRATCH_MOUNT.to_owned()),
        });
        Self {
            modules: K3S_MODULES.iter().map(|m| (*m).to_owned()).collect(),
            sysctls: K3S_SYSCTLS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            scratch,
            packages,
            apt_source: profile.airgap.apt_source.clone(),
            nvidia_host,
        }
    }

    /// NVIDIA's apt key (the bytes of the file `nvidia.repo_key` names), read by the caller.
    pub fn with_nvidia_repo_key(mut self, key: Option<&[u8]>) -> Self {
        if let Some(host) = &mut self.nvidia_host {
            host.repo_key = key.map(<[u8]>::to_vec);
        }
        self
    }
}

/// All preparation steps for one node, in order.
pub fn prepare_steps(input: &NodePrepInput) -> Vec<Step> {
    let mut steps = vec![swap_off_step()];
    steps.push(modules_file_step(&input.modules));
    steps.extend(input.modules.iter().map(|m| load_module_step(m)));
    steps.push(sysctl_file_step(&input.sysctls));
    steps.extend(input.sysctls.iter().map(|(k, v)| sysctl_apply_step(k, v)));
    if let Some(scratch) = &input.scratch {
        steps.push(scratch_disk_step(scratch));
    }
    if let Some(source) = &input.apt_source {
        steps.push(apt_source_step(source));
    }
    if !input.packages.is_empty() {
        steps.push(packages_step(
            &input.packages,
            input.apt_source.as_deref().map(apt_source_file),
        ));
    }
    if let Some(host) = &input.nvidia_host {
        steps.extend(nvidia_host_steps(
            host,
            input.apt_source.as_deref().map(apt_source_file),
        ));
    }
    steps
}

/// Swap off now (`swapoff -a`) and at boot: fstab swap lines commented, swap units masked.
pub fn swap_off_step() -> Step {
    let script = r#"set -eu
changed=0
swap_line='^[^#[:space:]][^[:space:]]*[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]]'
if [ -f /etc/fstab ] && grep -Eq "$swap_line" /etc/fstab; then
  sed -i -E "s/($swap_line.*)$/# provision: swap off: \1/" /etc/fstab
  changed=1
fi
for unit in swap.target $(systemctl list-units --type=swap --all --plain --no-legend 2>/dev/null | awk '{print $1}'); do
  if [ "$(systemctl is-enabled "$unit" 2>/dev/null || true)" != masked ]; then
    systemctl mask "$unit" >/dev/null 2>&1
    changed=1
  fi
done
if [ -r /proc/swaps ] && [ "$(wc -l < /proc/swaps)" -gt 1 ]; then
  swapoff -a
  changed=1
fi
if [ "$changed" = 1 ]; then echo 'provision-outcome: changed'; else echo 'provision-outcome: unchanged'; fi"#;
    Step::Command {
        description: "swap off now and at boot".to_owned(),
        script: script.to_owned(),
    }
}

/// Persist the module list for boot.
pub fn modules_file_step(modules: &[String]) -> Step {
    let mut content = String::from("# Written by provision: kernel modules K3s needs.\n");
    for module in modules {
        content.push_str(module);
        content.push('\n');
    }
    Step::File {
        description: format!("persist kernel modules in {MODULES_FILE}"),
        path: MODULES_FILE.to_owned(),
        content: content.into_bytes(),
        mode: 0o644,
    }
}

/// Load a module now. Already loaded → unchanged; compiled into the kernel → built in; a container or a
/// kernel without its module tree → unsupported; a real `modprobe` failure → error.
pub fn load_module_step(module: &str) -> Step {
    let m = quote(module);
    let script = format!(
        r#"set -u
m={m}
kernel="$(uname -r)"
if grep -Eq "/$m\.ko(\.[a-z]+)?$" "/lib/modules/$kernel/modules.builtin" 2>/dev/null; then
  echo "provision-outcome: builtin $m is compiled into kernel $kernel"; exit 0
fi
if [ -d "/sys/module/$m" ]; then echo 'provision-outcome: unchanged'; exit 0; fi
virt="$(systemd-detect-virt --container 2>/dev/null || true)"
if [ -n "$virt" ] && [ "$virt" != none ]; then
  echo "provision-outcome: unsupported $m cannot be loaded inside a container ($virt); the host kernel must provide it"; exit 0
fi
if [ ! -d "/lib/modules/$kernel" ]; then
  echo "provision-outcome: unsupported $m cannot be loaded: no /lib/modules/$kernel"; exit 0
fi
modprobe -- "$m" || exit $?
echo 'provision-outcome: changed'"#
    );
    Step::Command {
        description: format!("load kernel module {module}"),
        script,
    }
}

/// Persist the sysctls for boot.
pub fn sysctl_file_step(sysctls: &[(String, String)]) -> Step {
    let mut content = String::from("# Written by provision: kernel parameters for K3s.\n");
    for (key, value) in sysctls {
        content.push_str(&format!("{key} = {value}\n"));
    }
    Step::File {
        description: format!("persist sysctls in {SYSCTL_FILE}"),
        path: SYSCTL_FILE.to_owned(),
        content: content.into_bytes(),
        mode: 0o644,
    }
}

/// Apply one sysctl now, only when its value differs. A key the kernel lacks, or one the host may not
/// write (a container), is reported as unsupported.
pub fn sysctl_apply_step(key: &str, value: &str) -> Step {
    let proc_path = format!("/proc/sys/{}", key.replace('.', "/"));
    let script = format!(
        r#"set -u
key={key_q}
want={value_q}
if [ ! -e {proc_q} ]; then echo "provision-outcome: unsupported $key does not exist in this kernel"; exit 0; fi
have="$(tr -s '[:space:]' ' ' < {proc_q} | sed 's/ $//')"
if [ "$have" = "$want" ]; then echo 'provision-outcome: unchanged'; exit 0; fi
if ! err="$(sysctl -q -w -- "$key=$want" 2>&1)"; then
  echo "provision-outcome: unsupported $key cannot be set here: $err"; exit 0
fi
echo 'provision-outcome: changed'"#,
        key_q = quote(key),
        value_q = quote(value),
        proc_q = quote(&proc_path),
    );
    Step::Command {
        description: format!("sysctl {key}={value}"),
        script,
    }
}

/// Format the scratch disk when it carries no filesystem, mount it by UUID via fstab.
///
/// The mount point reaches the script once, quoted, as `$mnt`; afterwards it is only data: fstab's
/// second field is compared with it as a string (awk reads it from the environment, which, unlike
/// `awk -v`, does not interpret backslashes), never as a pattern or as script text. A mount point that is
/// not absolute or holds blanks, controls or non-ASCII is refused: it cannot be written to fstab as one field.
pub fn scratch_disk_step(scratch: &ScratchDisk) -> Step {
    let bytes = u64::from(scratch.size_gb) * 1024 * 1024 * 1024;
    let mount = quote(&scratch.mount);
    let script = format!(
        r#"set -eu
mnt={mount}
case "$mnt" in
  /*) ;;
  *) echo "scratch mount point $mnt is not an absolute path" >&2; exit 2 ;;
esac
case "$mnt" in
  *[![:graph:]]*) echo "scratch mount point $mnt holds blanks or non-printable characters; fstab cannot hold it" >&2; exit 2 ;;
esac
if PROVISION_MNT="$mnt" awk '$1 !~ /^#/ && $2 == ENVIRON["PROVISION_MNT"] {{ found = 1 }} END {{ exit !found }}' /etc/fstab; then
  if mountpoint -q -- "$mnt"; then echo 'provision-outcome: unchanged'; exit 0; fi
  mkdir -p -- "$mnt"; mount -- "$mnt"; echo 'provision-outcome: changed'; exit 0
fi
candidates=""
for dev in $(lsblk -dnbpo NAME,SIZE,TYPE | awk '$3 == "disk" && $2 == {bytes} {{print $1}}'); do
  if [ "$(lsblk -nro NAME "$dev" | wc -l)" -eq 1 ] && [ -z "$(lsblk -nro MOUNTPOINT "$dev" | tr -d '[:space:]')" ]; then
    candidates="$candidates $dev"
  fi
done
set -- $candidates
if [ "$#" -eq 0 ]; then echo "no unused, unpartitioned {size} GiB disk found for $mnt" >&2; exit 3; fi
if [ "$#" -gt 1 ]; then echo "several unused {size} GiB disks ($*) could be the scratch disk for $mnt" >&2; exit 3; fi
dev="$1"
fstype="$(blkid -o value -s TYPE "$dev" || true)"
if [ -z "$fstype" ]; then mkfs.ext4 -q -L scratch "$dev"; fstype=ext4; fi
uuid="$(blkid -o value -s UUID "$dev")"
mkdir -p -- "$mnt"
printf 'UUID=%s %s %s defaults,nofail,noatime,x-systemd.device-timeout=30s 0 2\n' "$uuid" "$mnt" "$fstype" >> /etc/fstab
mount -- "$mnt"
echo 'provision-outcome: changed'"#,
        size = scratch.size_gb,
    );
    Step::Command {
        description: format!(
            "scratch disk ({} GiB) mounted at {}",
            scratch.size_gb, scratch.mount
        ),
        script,
    }
}

/// The offline apt source file.
pub fn apt_source_step(source: &str) -> Step {
    let path = apt_source_file(source);
    Step::File {
        description: format!("offline apt source in {path}"),
        path: path.to_owned(),
        content: format!("# Written by provision: offline package source.\n{source}\n")
            .into_bytes(),
        mode: 0o644,
    }
}

/// Install the packages `dpkg-query` does not report installed. With an offline source (its file),
/// apt reads only that source (no network to the distribution's mirrors).
pub fn packages_step(packages: &[String], offline: Option<&str>) -> Step {
    let list = packages
        .iter()
        .map(|p| quote(p))
        .collect::<Vec<_>>()
        .join(" ");
    apt_install_step(
        format!("packages {}", packages.join(", ")),
        "",
        &list,
        offline,
    )
}

/// The install script behind [`packages_step`]: `preamble` (shell lines ending in a newline, e.g.
/// variables the words use) runs first, then each of `words` (shell words, already quoted or
/// expanding only variables of the preamble) that `dpkg-query` does not report installed is
/// installed in one `apt-get install`.
pub(crate) fn apt_install_step(
    description: String,
    preamble: &str,
    words: &str,
    offline: Option<&str>,
) -> Step {
    let apt_options = match offline {
        Some(file) => format!(
            " -o Dir::Etc::SourceList={} -o Dir::Etc::SourceParts=-",
            quote(file)
        ),
        None => String::new(),
    };
    // The missing packages collect in "$@" (one argument each: no word splitting, no globbing), and `--`
    // ends the options, so a name starting with `-` stays a package name.
    let script = format!(
        r#"set -eu
{preamble}set --
for p in {words}; do
  if ! dpkg-query -W -f='${{Status}}' -- "$p" 2>/dev/null | grep -q 'install ok installed'; then set -- "$@" "$p"; fi
done
if [ "$#" -eq 0 ]; then echo 'provision-outcome: unchanged'; exit 0; fi
export DEBIAN_FRONTEND=noninteractive
apt-get -q{apt_options} update >/dev/null
apt-get -q -y --no-install-recommends{apt_options} install -- "$@" >/dev/null
echo 'provision-outcome: changed'"#
    );
    Step::Command {
        description,
        script,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn input() -> NodePrepInput {
        NodePrepInput {
            modules: vec!["overlay".into(), "br_netfilter".into()],
            sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
            scratch: None,
            packages: vec![],
            apt_source: None,
            nvidia_host: None,
        }
    }

    #[test]
    fn minimal_node_has_swap_modules_and_sysctls() {
        let steps = prepare_steps(&input());
        let descriptions: Vec<_> = steps.iter().map(Step::description).collect();
        assert_eq!(
            descriptions,
            [
                "swap off now and at boot",
                "persist kernel modules in /etc/modules-load.d/provision-k3s.conf",
                "load kernel module overlay",
                "load kernel module br_netfilter",
                "persist sysctls in /etc/sysctl.d/90-provision-k3s.conf",
                "sysctl net.ipv4.ip_forward=1",
            ]
        );
    }

    #[test]
    fn module_and_sysctl_files_have_exact_content() {
        let Step::File { content, mode, .. } = modules_file_step(&input().modules) else {
            panic!("file step expected");
        };
        assert_eq!(
            String::from_utf8(content).unwrap(),
            "# Written by provision: kernel modules K3s needs.\noverlay\nbr_netfilter\n"
        );
        assert_eq!(mode, 0o644);
        let Step::File { content, .. } = sysctl_file_step(&input().sysctls) else {
            panic!("file step expected");
        };
        assert!(
            String::from_utf8(content)
                .unwrap()
                .ends_with("net.ipv4.ip_forward = 1\n")
        );
    }

    #[test]
    fn module_step_distinguishes_builtin_container_and_failure() {
        let Step::Command { script, .. } = load_module_step("br_netfilter") else {
            panic!("command expected");
        };
        assert!(script.contains("modules.builtin"));
        assert!(script.contains("systemd-detect-virt --container"));
        assert!(script.contains("provision-outcome: builtin"));
        assert!(script.contains("provision-outcome: unsupported"));
        assert!(script.contains("modprobe -- \"$m\" || exit $?"));
    }

    #[test]
    fn sysctl_step_reads_proc_and_reports_denied() {
        let Step::Command { script, .. } = sysctl_apply_step("net.ipv4.ip_forward", "1") else {
            panic!("command expected");
        };
        assert!(script.contains("/proc/sys/net/ipv4/ip_forward"));
        assert!(script.contains("sysctl -q -w -- \"$key=$want\""));
    }

    #[test]
    fn packages_use_only_the_offline_source_when_given() {
        let with = NodePrepInput {
            packages: vec!["nfs-common".into()],
            apt_source: Some("deb [trusted=yes] http://10.0.0.1/debian bookworm main".into()),
            ..input()
        };
        let steps = prepare_steps(&with);
        let Step::File { path, .. } = &steps[steps.len() - 2] else {
            panic!("apt source file expected");
        };
        assert_eq!(path, APT_SOURCE_FILE);
        let Step::Command { script, .. } = steps.last().unwrap() else {
            panic!("command expected");
        };
        assert!(
            script.contains("Dir::Etc::SourceList=/etc/apt/sources.list.d/provision-offline.list")
        );
        assert!(script.contains("dpkg-query -W -f='${Status}'"));
        let Step::Command { script, .. } = packages_step(&["nfs-common".into()], None) else {
            panic!("command expected");
        };
        assert!(!script.contains("SourceList"));
        // A deb822 stanza goes to a `.sources` file, which apt parses as deb822.
        let deb822 = "Types: deb\nURIs: http://10.0.0.1/debian\nSuites: bookworm\nComponents: main";
        let Step::File { path, .. } = apt_source_step(deb822) else {
            panic!("file expected");
        };
        assert_eq!(path, APT_SOURCE_DEB822_FILE);
        let Step::Command { script, .. } = packages_step(&[], Some(apt_source_file(deb822))) else {
            panic!("command expected");
        };
        assert!(
            script
                .contains("Dir::Etc::SourceList=/etc/apt/sources.list.d/provision-offline.sources")
        );
    }

    #[test]
    fn scratch_disk_formats_only_blank_disks_and_mounts_by_uuid() {
        let Step::Command { script, .. } = scratch_disk_step(&ScratchDisk {
            size_gb: 200,
            mount: "/mnt/scratch".into(),
        }) else {
            panic!("command expected");
        };
        assert!(script.contains("$2 == 214748364800"));
        assert!(script.contains("if [ -z \"$fstype\" ]; then mkfs.ext4"));
        assert!(script.contains("UUID=%s"));
    }
}
