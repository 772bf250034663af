//! NVIDIA software: the mode fits the GPUs, the driver can reach the guest OS, and the options
//! belong to the chosen mode.

use super::formats::is_semver_v;
use super::{Checker, path};
use crate::profile::model::{NvidiaMode, Profile};

impl Checker {
    pub(super) fn nvidia(&mut self, profile: &Profile) {
        let nvidia = &profile.nvidia;
        let gpus = profile.gpu_count();
        match nvidia.mode {
            NvidiaMode::Operator | NvidiaMode::Host => {
                if gpus == 0 {
                    self.error(
                        path(&["nvidia", "mode"]),
                        "nvidia.mode installs NVIDIA software but no node group has GPUs",
                        "add [node_groups.gpus] to a group, or set nvidia.mode = \"none\"",
                    );
                }
            }
            NvidiaMode::None => {
                let first_gpu_group = profile
                    .node_groups
                    .iter()
                    .position(|group| group.gpus.is_some());
                if let Some(index) = first_gpu_group
                    && gpus > 0
                {
                    self.warning(
                        path(&["node_groups"]).index(index).key("gpus"),
                        format!("{gpus} GPUs are passed through but nvidia.mode is none: no driver or container runtime will be installed"),
                        "set nvidia.mode = \"operator\" or \"host\" unless you install the driver yourself",
                    );
                }
                if nvidia.time_slicing_replicas.is_some() {
                    self.error(
                        path(&["nvidia", "time_slicing_replicas"]),
                        "time slicing needs nvidia.mode operator or host",
                        "set nvidia.mode or remove time_slicing_replicas",
                    );
                }
            }
        }
        self.nvidia_guest(profile);
        if let Some(replicas) = nvidia.time_slicing_replicas
            && !(2..=64).contains(&replicas)
        {
            self.error(
                path(&["nvidia", "time_slicing_replicas"]),
                format!("{replicas} time-slicing replicas: each GPU must be shared by 2..64 pods"),
                "use 2 or more (e.g. 4), or remove time_slicing_replicas to give whole GPUs",
            );
        }
        if nvidia.default_runtime && nvidia.mode != NvidiaMode::Operator {
            self.error(
                path(&["nvidia", "default_runtime"]),
                "default_runtime is set but nvidia.mode is not operator",
                "set nvidia.mode = \"operator\" (its toolkit makes nvidia containerd's default runtime) or remove default_runtime",
            );
        }
        if let Some(version) = &nvidia.operator_version {
            if nvidia.mode != NvidiaMode::Operator {
                self.error(
                    path(&["nvidia", "operator_version"]),
                    "operator_version is set but nvidia.mode is not operator",
                    "set nvidia.mode = \"operator\" or remove operator_version",
                );
            }
            if !is_semver_v(version) {
                self.error(
                    path(&["nvidia", "operator_version"]),
                    format!("operator version `{version}` is not vX.Y.Z"),
                    "use a GPU Operator chart version such as v24.9.2",
                );
            }
        }
    }

    /// Whether the NVIDIA driver and toolkit can really reach the guest OS the image boots.
    fn nvidia_guest(&mut self, profile: &Profile) {
        let nvidia = &profile.nvidia;
        let os = profile.image.guest_os();
        let set_os_hint = "set image.os = \"debian-12\" or \"ubuntu-24.04\"";
        match nvidia.mode {
            NvidiaMode::Operator if !nvidia.driver_preinstalled() => match os {
                Some(os) if !os.has_operator_driver_images() => self.error(
                    path(&["nvidia", "mode"]),
                    format!("the GPU Operator has no driver container for {os} (NVIDIA publishes them for Ubuntu and RHEL only): the GPU nodes would never get a driver"),
                    "use an Ubuntu 24.04 cloud image, or nvidia.mode = \"host\" (provision installs the driver with apt), or nvidia.driver = \"preinstalled\" when the image already has it",
                ),
                Some(_) => {}
                // An image without any source is an error of its own already.
                None if profile.image == Default::default() => {}
                None => self.warning(
                    path(&["image"]),
                    "the guest OS is unknown, and the GPU Operator's driver container exists only for Ubuntu and RHEL",
                    set_os_hint,
                ),
            },
            NvidiaMode::Host => {
                if os.is_none() {
                    self.error(
                        path(&["image"]),
                        "nvidia.mode = \"host\" installs the driver with the guest's packages, but the guest OS is unknown",
                        set_os_hint,
                    );
                }
                match (&nvidia.repo_key, &profile.airgap.apt_source) {
                    (None, None) => self.error(
                        path(&["nvidia", "mode"]),
                        "nvidia-container-toolkit comes only from NVIDIA's apt repository, and no signing key for it is given",
                        "download https://nvidia.github.io/libnvidia-container/gpgkey once, check its fingerprint, and set nvidia.repo_key to that file; or set airgap.apt_source to a mirror that carries the driver and the toolkit",
                    ),
                    (Some(_), Some(_)) => self.warning(
                        path(&["nvidia", "repo_key"]),
                        "nvidia.repo_key is not used: airgap.apt_source replaces every package source",
                        "remove repo_key, or make sure the offline mirror carries nvidia-container-toolkit",
                    ),
                    (Some(_), None) | (None, Some(_)) => {}
                }
            }
            NvidiaMode::Operator | NvidiaMode::None => {}
        }
        if nvidia.mode == NvidiaMode::None && nvidia.driver.is_some() {
            self.error(
                path(&["nvidia", "driver"]),
                "nvidia.driver is set but nvidia.mode is none",
                "set nvidia.mode = \"operator\" or \"host\", or remove driver",
            );
        }
        if nvidia.mode != NvidiaMode::Host && nvidia.repo_key.is_some() {
            self.error(
                path(&["nvidia", "repo_key"]),
                "nvidia.repo_key is only used with nvidia.mode = \"host\"",
                "set nvidia.mode = \"host\" or remove repo_key",
            );
        }
    }
}
