//! Hardware found in the guest (NVIDIA GPUs, AVX-512) and the node labels derived from it.

use std::collections::BTreeMap;

use crate::profile::model::{Detect, NodeGroup};

/// What the probe found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hardware {
    /// NVIDIA (vendor 0x10de) display-class PCI functions: VGA (0x0300) or 3D controllers (0x0302).
    pub nvidia_gpus: u32,
    pub avx512: bool,
}

/// Read-only probe: counts NVIDIA display devices in sysfs and looks for `avx512f` in `/proc/cpuinfo`.
pub fn hardware_probe_script() -> String {
    r#"n=0
for d in /sys/bus/pci/devices/*; do
  [ -r "$d/vendor" ] && [ -r "$d/class" ] || continue
  [ "$(cat "$d/vendor")" = 0x10de ] || continue
  case "$(cat "$d/class")" in 0x03*) n=$((n + 1)) ;; esac
done
echo "nvidia-gpus $n"
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then echo 'avx512f yes'; else echo 'avx512f no'; fi"#
        .to_owned()
}

/// Parse [`hardware_probe_script`]'s output; missing lines mean "not found".
pub fn parse_hardware(stdout: &str) -> Hardware {
    let mut hardware = Hardware::default();
    for line in stdout.lines() {
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["nvidia-gpus", count] => hardware.nvidia_gpus = count.parse().unwrap_or(0),
            ["avx512f", answer] => hardware.avx512 = *answer == "yes",
            _ => {}
        }
    }
    hardware
}

/// The node's labels: the group's labels, then the detected ones (`<gpu_label>=nvidia`,
/// `<gpu_label>.count=N`, `<cpu_label>=avx512`). Detected values win over the profile's for the same key,
/// because they describe what is really there.
pub fn node_labels(
    group: &NodeGroup,
    hardware: &Hardware,
    detect: &Detect,
) -> BTreeMap<String, String> {
    let mut labels = group.labels.clone();
    if hardware.nvidia_gpus > 0 {
        labels.insert(detect.gpu_label.clone(), "nvidia".to_owned());
        labels.insert(
            format!("{}.count", detect.gpu_label),
            hardware.nvidia_gpus.to_string(),
        );
    }
    if hardware.avx512 {
        labels.insert(detect.cpu_label.clone(), "avx512".to_owned());
    }
    labels
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_output() {
        assert_eq!(
            parse_hardware("nvidia-gpus 8\navx512f yes\n"),
            Hardware {
                nvidia_gpus: 8,
                avx512: true
            }
        );
        assert_eq!(
            parse_hardware("nvidia-gpus 0\navx512f no\n"),
            Hardware::default()
        );
        assert_eq!(parse_hardware(""), Hardware::default());
    }

    #[test]
    fn probe_counts_only_nvidia_display_class() {
        let script = hardware_probe_script();
        assert!(script.contains("= 0x10de"));
        assert!(script.contains("0x03*)"));
        assert!(script.contains("grep -qw avx512f /proc/cpuinfo"));
    }
}
