//! `nvidia.mode = "host"`: the NVIDIA driver and container toolkit installed with the guest's own
//! packages, per guest OS.
//!
//! Where the packages come from:
//! - Debian 12: the driver is in Debian's `non-free` (+ `non-free-firmware` for the GSP firmware)
//!   components, which the cloud image does not enable; provision adds a deb822 source with just
//!   those two components. Ubuntu 24.04: the `-server` driver branch is in `restricted`, which the
//!   cloud image enables.
//! - Both: `nvidia-container-toolkit` is only in NVIDIA's apt repository. Its signing key comes
//!   from the workspace (`nvidia.repo_key`) and reaches the node as a file; nothing is fetched on
//!   the node.
//! - With `airgap.apt_source`, the offline source is the only one (it must carry all of it).
//!
//! Order: kernel headers (so DKMS can build the module), then the driver, then the toolkit. k3s
//! finds `nvidia-container-runtime` on PATH when it starts and adds the `nvidia` runtimes itself,
//! so no `nvidia-ctk runtime configure` step.

use crate::profile::model::GuestOs;

use super::Step;
use super::shell::quote;
use super::steps::apt_install_step;

/// Debian's non-free components, added beside the image's own `debian.sources`.
pub const DEBIAN_NON_FREE_FILE: &str = "/etc/apt/sources.list.d/provision-debian-non-free.sources";
/// NVIDIA's container toolkit repository.
pub const NVIDIA_REPO_FILE: &str =
    "/etc/apt/sources.list.d/provision-nvidia-container-toolkit.list";
/// NVIDIA's repository key, ASCII-armoured (apt reads `signed-by` files ending in `.asc` as armour).
pub const NVIDIA_KEY_ASC: &str = "/etc/apt/keyrings/provision-nvidia-container-toolkit.asc";
/// The same key in binary form (`gpg --dearmor`, as NVIDIA's own instructions produce).
pub const NVIDIA_KEY_GPG: &str = "/etc/apt/keyrings/provision-nvidia-container-toolkit.gpg";
/// NVIDIA's stable repository; `$(ARCH)` is apt's own substitution, not the shell's.
pub const NVIDIA_REPO_URL: &str = "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)";
/// The Ubuntu driver branch: R570, NVIDIA's production branch for data-centre GPUs, as
/// Ubuntu's `-server` packages (`restricted`, signed, kept for the LTS).
pub const UBUNTU_DRIVER_BRANCH: &str = "570";

/// What host mode installs on one GPU node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvidiaHost {
    pub os: GuestOs,
    /// Install the kernel driver (false: the image has it, `nvidia.driver = "preinstalled"`).
    pub driver: bool,
    /// NVIDIA's apt signing key (the bytes of the file `nvidia.repo_key` names); set by the
    /// caller that reads the workspace. Unused with an offline source.
    pub repo_key: Option<Vec<u8>>,
}

/// The driver packages per OS: Debian's `nvidia-driver` (DKMS) with the GSP firmware, plus
/// `nvidia-smi` and `libcuda1`, which it only recommends (nodes install without recommends) and
/// which containers and health checks need; Ubuntu's `nvidia-driver-570-server` (DKMS, pulls
/// `nvidia-utils` and `libnvidia-compute`). A pinned package rather than `ubuntu-drivers install
/// --gpgpu`: the plan names exactly what is installed, and `dpkg-query` can tell it is there.
pub fn driver_packages(os: GuestOs) -> Vec<String> {
    match os {
        GuestOs::Debian12 => [
            "nvidia-driver",
            "firmware-misc-nonfree",
            "nvidia-smi",
            "libcuda1",
        ]
        .map(str::to_owned)
        .to_vec(),
        GuestOs::Ubuntu2404 => vec![format!("nvidia-driver-{UBUNTU_DRIVER_BRANCH}-server")],
    }
}

/// The deb822 source enabling Debian 12's `non-free` and `non-free-firmware` components on the
/// mirrors the Debian cloud image already uses.
pub fn debian_non_free_source() -> String {
    let mut text = String::from(
        "# Written by provision: Debian's non-free components for the NVIDIA driver.\n",
    );
    for (uri, suites) in [
        ("http://deb.debian.org/debian", "bookworm bookworm-updates"),
        ("http://deb.debian.org/debian-security", "bookworm-security"),
    ] {
        text.push_str(&format!(
            "\nTypes: deb\nURIs: {uri}\nSuites: {suites}\nComponents: non-free non-free-firmware\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ));
    }
    text
}

/// Where the key goes: `.asc` for an ASCII-armoured key, `.gpg` for a binary one (apt tells them
/// apart by the extension).
pub fn key_path(key: &[u8]) -> &'static str {
    if key
        .trim_ascii_start()
        .starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    {
        NVIDIA_KEY_ASC
    } else {
        NVIDIA_KEY_GPG
    }
}

/// NVIDIA's repository line, trusting only the pushed key.
pub fn nvidia_repo_line(key_path: &str) -> String {
    format!("deb [signed-by={key_path}] {NVIDIA_REPO_URL} /")
}

/// Host mode's steps, in order. `offline` is the offline source file (`airgap.apt_source`), which
/// then replaces every other source.
pub fn nvidia_host_steps(host: &NvidiaHost, offline: Option<&str>) -> Vec<Step> {
    let mut steps = Vec::new();
    if offline.is_none() {
        if host.driver && host.os == GuestOs::Debian12 {
            steps.push(Step::File {
                description: format!("Debian non-free components in {DEBIAN_NON_FREE_FILE}"),
                path: DEBIAN_NON_FREE_FILE.to_owned(),
                content: debian_non_free_source().into_bytes(),
                mode: 0o644,
            });
        }
        if let Some(key) = &host.repo_key {
            let key_path = key_path(key);
            steps.push(Step::File {
                description: format!("NVIDIA apt key in {key_path}"),
                path: key_path.to_owned(),
                content: key.clone(),
                mode: 0o644,
            });
            steps.push(Step::File {
                description: format!("NVIDIA container toolkit source in {NVIDIA_REPO_FILE}"),
                path: NVIDIA_REPO_FILE.to_owned(),
                content: format!(
                    "# Written by provision: NVIDIA's container toolkit repository.\n{}\n",
                    nvidia_repo_line(key_path)
                )
                .into_bytes(),
                mode: 0o644,
            });
        }
    }
    if host.driver {
        steps.push(kernel_headers_step(offline));
        let packages = driver_packages(host.os);
        steps.push(apt_install_step(
            format!("NVIDIA driver ({}): {}", host.os, packages.join(", ")),
            "",
            &quoted(&packages),
            offline,
        ));
    }
    steps.push(apt_install_step(
        "NVIDIA container toolkit: nvidia-container-toolkit".to_owned(),
        "",
        &quote("nvidia-container-toolkit"),
        offline,
    ));
    steps
}

/// Headers for the running kernel, so DKMS builds the module for it now, and the flavour's
/// metapackage, so the next kernel gets its headers too: `6.1.0-31-cloud-amd64` →
/// `linux-headers-6.1.0-31-cloud-amd64` + `linux-headers-cloud-amd64` (Debian),
/// `6.8.0-58-generic` → `linux-headers-6.8.0-58-generic` + `linux-headers-generic` (Ubuntu).
pub fn kernel_headers_step(offline: Option<&str>) -> Step {
    apt_install_step(
        "kernel headers for DKMS".to_owned(),
        "kernel=\"$(uname -r)\"\nflavour=\"${kernel#*-*-}\"\n",
        "\"linux-headers-$kernel\" \"linux-headers-$flavour\"",
        offline,
    )
}

fn quoted(packages: &[String]) -> String {
    packages
        .iter()
        .map(|p| quote(p))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ARMOURED: &[u8] =
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF...\n-----END PGP PUBLIC KEY BLOCK-----\n";

    fn host(os: GuestOs) -> NvidiaHost {
        NvidiaHost {
            os,
            driver: true,
            repo_key: Some(ARMOURED.to_vec()),
        }
    }

    fn files(steps: &[Step]) -> Vec<(String, String)> {
        steps
            .iter()
            .filter_map(|step| match step {
                Step::File { path, content, .. } => {
                    Some((path.clone(), String::from_utf8_lossy(content).into_owned()))
                }
                Step::Command { .. } => None,
            })
            .collect()
    }

    fn scripts(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|step| match step {
                Step::Command { script, .. } => Some(script.clone()),
                Step::File { .. } => None,
            })
            .collect()
    }

    #[test]
    fn debian_enables_non_free_and_nvidias_repository_then_installs_in_order() {
        let steps = nvidia_host_steps(&host(GuestOs::Debian12), None);
        let descriptions: Vec<_> = steps.iter().map(Step::description).collect();
        assert_eq!(
            descriptions,
            [
                "Debian non-free components in /etc/apt/sources.list.d/provision-debian-non-free.sources",
                "NVIDIA apt key in /etc/apt/keyrings/provision-nvidia-container-toolkit.asc",
                "NVIDIA container toolkit source in /etc/apt/sources.list.d/provision-nvidia-container-toolkit.list",
                "kernel headers for DKMS",
                "NVIDIA driver (debian-12): nvidia-driver, firmware-misc-nonfree, nvidia-smi, libcuda1",
                "NVIDIA container toolkit: nvidia-container-toolkit",
            ]
        );
        let files = files(&steps);
        assert_eq!(
            files[0].1,
            "# Written by provision: Debian's non-free components for the NVIDIA driver.\n\
             \n\
             Types: deb\n\
             URIs: http://deb.debian.org/debian\n\
             Suites: bookworm bookworm-updates\n\
             Components: non-free non-free-firmware\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
             \n\
             Types: deb\n\
             URIs: http://deb.debian.org/debian-security\n\
             Suites: bookworm-security\n\
             Components: non-free non-free-firmware\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        );
        // The key travels as data, byte for byte.
        assert_eq!(files[1].1.as_bytes(), ARMOURED);
        assert_eq!(
            files[2].1,
            "# Written by provision: NVIDIA's container toolkit repository.\n\
             deb [signed-by=/etc/apt/keyrings/provision-nvidia-container-toolkit.asc] https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n"
        );
        let scripts = scripts(&steps);
        assert!(
            scripts[0]
                .contains("for p in \"linux-headers-$kernel\" \"linux-headers-$flavour\"; do")
        );
        assert!(
            scripts[1]
                .contains("for p in nvidia-driver firmware-misc-nonfree nvidia-smi libcuda1; do")
        );
        assert!(scripts[2].contains("for p in nvidia-container-toolkit; do"));
        for script in &scripts {
            assert!(!script.contains("curl") && !script.contains("wget"));
            assert!(script.contains("dpkg-query -W -f='${Status}'"));
        }
    }

    #[test]
    fn ubuntu_uses_the_server_driver_branch_and_no_extra_components() {
        let steps = nvidia_host_steps(&host(GuestOs::Ubuntu2404), None);
        let descriptions: Vec<_> = steps.iter().map(Step::description).collect();
        assert_eq!(
            descriptions,
            [
                "NVIDIA apt key in /etc/apt/keyrings/provision-nvidia-container-toolkit.asc",
                "NVIDIA container toolkit source in /etc/apt/sources.list.d/provision-nvidia-container-toolkit.list",
                "kernel headers for DKMS",
                "NVIDIA driver (ubuntu-24.04): nvidia-driver-570-server",
                "NVIDIA container toolkit: nvidia-container-toolkit",
            ]
        );
        assert!(scripts(&steps)[1].contains("for p in nvidia-driver-570-server; do"));
    }

    #[test]
    fn a_binary_key_goes_to_a_gpg_file() {
        let binary = vec![0x99, 0x02, 0x0d, 0x04];
        assert_eq!(key_path(&binary), NVIDIA_KEY_GPG);
        assert_eq!(key_path(ARMOURED), NVIDIA_KEY_ASC);
        let steps = nvidia_host_steps(
            &NvidiaHost {
                repo_key: Some(binary),
                ..host(GuestOs::Ubuntu2404)
            },
            None,
        );
        assert!(
            files(&steps)[1]
                .1
                .contains("[signed-by=/etc/apt/keyrings/provision-nvidia-container-toolkit.gpg]")
        );
    }

    #[test]
    fn preinstalled_driver_installs_only_the_toolkit() {
        let steps = nvidia_host_steps(
            &NvidiaHost {
                driver: false,
                ..host(GuestOs::Debian12)
            },
            None,
        );
        let descriptions: Vec<_> = steps.iter().map(Step::description).collect();
        assert_eq!(
            descriptions,
            [
                "NVIDIA apt key in /etc/apt/keyrings/provision-nvidia-container-toolkit.asc",
                "NVIDIA container toolkit source in /etc/apt/sources.list.d/provision-nvidia-container-toolkit.list",
                "NVIDIA container toolkit: nvidia-container-toolkit",
            ]
        );
    }

    #[test]
    fn an_offline_source_replaces_every_other_source() {
        let offline = "/etc/apt/sources.list.d/provision-offline.list";
        let steps = nvidia_host_steps(&host(GuestOs::Debian12), Some(offline));
        assert!(files(&steps).is_empty());
        let scripts = scripts(&steps);
        assert_eq!(scripts.len(), 3);
        for script in scripts {
            assert!(script.contains(
                "-o Dir::Etc::SourceList=/etc/apt/sources.list.d/provision-offline.list -o Dir::Etc::SourceParts=-"
            ));
        }
    }
}
