//! Node preparation step lists derived from profiles: packages, scratch disk, offline apt, labels.
#![allow(clippy::unwrap_used)]

use provision::nodeprep::hardware::Hardware;
use provision::nodeprep::{NodePrepInput, Step, node_labels, prepare_steps};
use provision::profile::Profile;

fn fixture(name: &str) -> Profile {
    let path = format!(
        "{}/tests/fixtures/k3s/profiles/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn descriptions(steps: &[Step]) -> Vec<String> {
    steps.iter().map(|s| s.description().to_owned()).collect()
}

#[test]
fn nfs_profile_installs_nfs_common_everywhere() {
    let profile = fixture("homelab-ha");
    for group in &profile.node_groups {
        let input = NodePrepInput::for_group(&profile, group);
        assert_eq!(input.packages, ["nfs-common"]);
        assert!(input.scratch.is_none());
        let steps = descriptions(&prepare_steps(&input));
        assert_eq!(steps.last().unwrap(), "packages nfs-common");
    }
}

#[test]
fn gpu_host_mode_installs_driver_and_toolkit_from_offline_source() {
    let profile = fixture("gpu-host");
    let input = NodePrepInput::for_group(&profile, &profile.node_groups[0]);
    assert_eq!(
        input.packages,
        ["nvidia-driver", "nvidia-container-toolkit"]
    );
    let steps = prepare_steps(&input);
    let Step::Command { script, .. } = steps.last().unwrap() else {
        panic!("packages step expected");
    };
    assert!(script.contains("Dir::Etc::SourceParts=-"));
}

#[test]
fn scratch_disk_and_detected_labels() {
    let profile = fixture("gpu-operator");
    let gpu = &profile.node_groups[1];
    let input = NodePrepInput::for_group(&profile, gpu);
    assert_eq!(input.scratch.as_ref().unwrap().size_gb, 500);
    assert!(
        descriptions(&prepare_steps(&input))
            .contains(&"scratch disk (500 GiB) mounted at /mnt/scratch".to_owned())
    );
    // Operator mode: the operator installs the driver, not apt.
    assert!(input.packages.is_empty());
    let labels = node_labels(
        gpu,
        &Hardware {
            nvidia_gpus: 8,
            avx512: true,
        },
        &profile.detect,
    );
    assert_eq!(labels["special.gpu"], "nvidia");
    assert_eq!(labels["special.gpu.count"], "8");
    assert_eq!(labels["special.cpu"], "avx512");
    assert!(node_labels(gpu, &Hardware::default(), &profile.detect).is_empty());
}
