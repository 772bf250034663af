//! Node preparation step lists derived from profiles: packages, scratch disk, offline apt, labels.
#![allow(clippy::unwrap_used)]

use provision::nodeprep::hardware::Hardware;
use provision::nodeprep::{NodePrepInput, Step, node_labels, prepare_steps};
use provision::profile::Profile;
use provision::profile::model::Role;

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
fn nfs_profile_installs_nfs_common_everywhere_and_etcdctl_on_servers() {
    let profile = fixture("homelab-ha");
    for group in &profile.node_groups {
        let input = NodePrepInput::for_group(&profile, group);
        let (packages, step): (&[&str], _) = match group.role {
            Role::Server => (
                &["nfs-common", "etcd-client"],
                "packages nfs-common, etcd-client",
            ),
            Role::Agent => (&["nfs-common"], "packages nfs-common"),
        };
        assert_eq!(input.packages, packages);
        assert!(input.scratch.is_none());
        let steps = descriptions(&prepare_steps(&input));
        assert_eq!(steps.last().unwrap(), step);
    }
}

#[test]
fn gpu_host_mode_installs_driver_and_toolkit_from_offline_source() {
    let profile = fixture("gpu-host");
    let input = NodePrepInput::for_group(&profile, &profile.node_groups[0])
        .with_nvidia_repo_key(Some(b"ignored: the offline source replaces every source"));
    // A server: etcdctl for day-2 member checks, from the offline source too.
    assert_eq!(input.packages, ["etcd-client"]);
    let steps = prepare_steps(&input);
    // Only the offline source is written: no non-free file, no NVIDIA key or repository.
    let files: Vec<_> = steps
        .iter()
        .filter_map(|step| match step {
            Step::File { path, .. } => Some(path.as_str()),
            Step::Command { .. } => None,
        })
        .collect();
    assert_eq!(
        files,
        [
            "/etc/modules-load.d/provision-k3s.conf",
            "/etc/sysctl.d/90-provision-k3s.conf",
            "/etc/apt/sources.list.d/provision-offline.list",
        ]
    );
    let tail = &descriptions(&steps)[steps.len() - 3..];
    assert_eq!(
        tail,
        [
            "kernel headers for DKMS",
            "NVIDIA driver (debian-12): nvidia-driver, firmware-misc-nonfree, nvidia-smi, libcuda1",
            "NVIDIA container toolkit: nvidia-container-toolkit",
        ]
    );
    for step in &steps[steps.len() - 3..] {
        let Step::Command { script, .. } = step else {
            panic!("install step expected");
        };
        assert!(script.contains("Dir::Etc::SourceParts=-"));
    }
}

/// Host mode on each guest OS: the exact apt commands, run in the recording sandbox with the
/// kernel each cloud image boots, and nothing at all once dpkg reports the packages installed.
#[test]
fn gpu_host_mode_runs_the_exact_apt_commands_per_os() {
    use provision::profile::model::GuestOs;
    let mut profile = fixture("gpu-host");
    profile.airgap.apt_source = None;
    profile.nvidia.repo_key = Some("keys/nvidia.asc".into());
    let key = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\nmQINBF\n-----END PGP PUBLIC KEY BLOCK-----\n";
    let cases = [
        (
            GuestOs::Debian12,
            "6.1.0-31-cloud-amd64",
            vec![
                vec![
                    "linux-headers-6.1.0-31-cloud-amd64",
                    "linux-headers-cloud-amd64",
                ],
                vec![
                    "nvidia-driver",
                    "firmware-misc-nonfree",
                    "nvidia-smi",
                    "libcuda1",
                ],
                vec!["nvidia-container-toolkit"],
            ],
        ),
        (
            GuestOs::Ubuntu2404,
            "6.8.0-58-generic",
            vec![
                vec!["linux-headers-6.8.0-58-generic", "linux-headers-generic"],
                vec!["nvidia-driver-570-server"],
                vec!["nvidia-container-toolkit"],
            ],
        ),
    ];
    for (os, kernel, expected) in cases {
        profile.image.os = Some(os);
        let steps = prepare_steps(
            &NodePrepInput::for_group(&profile, &profile.node_groups[0])
                .with_nvidia_repo_key(Some(key)),
        );
        let sources: Vec<_> = steps
            .iter()
            .filter_map(|step| match step {
                Step::File { path, .. } if path.starts_with("/etc/apt") => Some(path.as_str()),
                _ => None,
            })
            .collect();
        let mut want_sources = vec![
            "/etc/apt/keyrings/provision-nvidia-container-toolkit.asc",
            "/etc/apt/sources.list.d/provision-nvidia-container-toolkit.list",
        ];
        if os == GuestOs::Debian12 {
            want_sources.insert(
                0,
                "/etc/apt/sources.list.d/provision-debian-non-free.sources",
            );
        }
        assert_eq!(sources, want_sources, "{os}");
        let installs: Vec<_> = steps[steps.len() - 3..]
            .iter()
            .map(|step| match step {
                Step::Command { script, .. } => script.clone(),
                Step::File { .. } => panic!("install step expected"),
            })
            .collect();
        for (script, packages) in installs.iter().zip(&expected) {
            sandbox::assert_syntax(script);
            let run = sandbox::Sandbox::new()
                .behave("uname", kernel, 0)
                .behave("dpkg-query", "", 1)
                .run(script, b"");
            assert_eq!(run.status, Some(0), "{os}: {run:?}");
            let apt: Vec<_> = run
                .calls_to("apt-get")
                .into_iter()
                .map(|c| c.args.clone())
                .collect();
            let mut install = vec!["-q", "-y", "--no-install-recommends", "install", "--"];
            install.extend(packages.iter().copied());
            assert_eq!(apt, [vec!["-q", "update"], install], "{os}");
            assert!(
                run.stdout.ends_with("provision-outcome: changed\n"),
                "{os}: {run:?}"
            );
            // Installed already: unchanged, and apt is not run.
            let again = sandbox::Sandbox::new()
                .behave("uname", kernel, 0)
                .behave("dpkg-query", "install ok installed", 0)
                .run(script, b"");
            assert_eq!(again.status, Some(0), "{os}: {again:?}");
            assert!(again.calls_to("apt-get").is_empty(), "{os}: {again:?}");
            assert!(
                again.stdout.ends_with("provision-outcome: unchanged\n"),
                "{os}: {again:?}"
            );
        }
    }
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

/// A recording shell: runs a generated script with `sh` in a temporary directory where every external
/// command the builders use is a shim that records its argv (nothing real happens), except a few
/// read-only or sandbox-confined tools the scripts need to behave (`awk`, `grep`, `sed`, ...). Absolute
/// paths of the host (`/etc/`, `/proc/`, ...) are moved under the sandbox; when the tests run as root
/// the script runs as `nobody`, so a mistake cannot touch the real host.
pub(crate) mod sandbox {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    /// Host paths the builders use, relocated under the sandbox root.
    const HOST_PREFIXES: [&str; 7] = [
        "/etc/",
        "/proc/",
        "/sys/",
        "/lib/modules",
        "/var/",
        "/usr/local/",
        "/run/",
    ];

    /// Commands that only ever run as recording shims.
    const SHIMS: &[&str] = &[
        "mount",
        "umount",
        "mountpoint",
        "mkfs.ext4",
        "blkid",
        "lsblk",
        "touch",
        "systemctl",
        "apt-get",
        "dpkg-query",
        "modprobe",
        "sysctl",
        "swapoff",
        "uname",
        "systemd-detect-virt",
        "k3s",
        "kubectl",
        "sudo",
        "ls",
        "cp",
        "curl",
        "wget",
        "pkill",
        "ip",
        "chown",
        "reboot",
        "id",
    ];

    /// Tools that run for real (reading, or writing only where the relocated paths point).
    const REAL: &[&str] = &[
        "sh",
        "awk",
        "grep",
        "sed",
        "tr",
        "cut",
        "wc",
        "cat",
        "head",
        "mktemp",
        "sha256sum",
        "sort",
    ];

    /// Tools that are shims unless a test asks for the real one (they write).
    pub const WRITERS: &[&str] = &["mkdir", "mv", "chmod", "rm", "stat"];

    /// One recorded command: its name and arguments.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Call {
        pub name: String,
        pub args: Vec<String>,
    }

    #[derive(Debug)]
    pub struct Run {
        pub status: Option<i32>,
        pub stdout: String,
        pub stderr: String,
        pub calls: Vec<Call>,
        pub marker_created: bool,
    }

    impl Run {
        pub fn calls_to(&self, name: &str) -> Vec<&Call> {
            self.calls.iter().filter(|c| c.name == name).collect()
        }

        /// Nothing the hostile value carried ran: no `MARKER` file, no `touch`, no unknown command.
        pub fn assert_nothing_injected(&self, script: &str) {
            assert!(
                !self.marker_created,
                "MARKER created (stdout {}) by:\n{script}",
                self.stdout
            );
            assert!(
                self.calls_to("touch").is_empty(),
                "touch ran: {:?}\n{script}",
                self.calls
            );
            assert!(
                !self.stderr.contains(": not found"),
                "a command that is no shim ran: {}\n{script}",
                self.stderr
            );
        }
    }

    pub struct Sandbox {
        dir: tempfile::TempDir,
        /// Shims that print something / exit non-zero: name → (stdout, status).
        behaviours: Vec<(String, String, i32)>,
        real_writers: bool,
    }

    impl Sandbox {
        pub fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("root/etc")).unwrap();
            std::fs::create_dir_all(dir.path().join("bin")).unwrap();
            Self {
                dir,
                behaviours: Vec::new(),
                real_writers: false,
            }
        }

        /// The shim `name` prints `stdout` and exits with `status` (a real tool becomes a shim).
        pub fn behave(mut self, name: &str, stdout: &str, status: i32) -> Self {
            self.behaviours
                .push((name.to_owned(), stdout.to_owned(), status));
            self
        }

        /// `mkdir`, `mv`, `chmod`, `rm`, `stat` run for real (inside the relocated paths).
        pub fn real_writers(mut self) -> Self {
            self.real_writers = true;
            self
        }

        /// Where `/` of the host is for the script.
        pub fn root(&self) -> PathBuf {
            self.dir.path().join("root")
        }

        /// Run `script` (host paths relocated) with `stdin`.
        pub fn run(&self, script: &str, stdin: &[u8]) -> Run {
            let bin = self.dir.path().join("bin");
            let log = self.dir.path().join("calls.log");
            std::fs::write(&log, b"").unwrap();
            self.install_tools(&bin);
            let root = self.root().display().to_string();
            // In two passes through placeholders, so a relocated path is not relocated again.
            let mut relocated = script.to_owned();
            for (index, prefix) in HOST_PREFIXES.iter().enumerate() {
                relocated = relocated.replace(prefix, &format!("\u{E000}{index}\u{E000}"));
            }
            for (index, prefix) in HOST_PREFIXES.iter().enumerate() {
                relocated = relocated.replace(
                    &format!("\u{E000}{index}\u{E000}"),
                    &format!("{root}{prefix}"),
                );
            }
            let running_as_root = Command::new("id")
                .arg("-u")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
                .unwrap_or(false);
            let mut command = if running_as_root {
                let chown = Command::new("chown")
                    .args(["-R", "65534:65534"])
                    .arg(self.dir.path())
                    .status()
                    .unwrap();
                assert!(chown.success());
                let mut command = Command::new("/usr/bin/setpriv");
                command.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
                command.arg(bin.join("sh"));
                command
            } else {
                Command::new(bin.join("sh"))
            };
            command
                .arg("-c")
                .arg(&relocated)
                .current_dir(self.dir.path())
                .env_clear()
                .env("PATH", &bin)
                .env("HOME", self.dir.path())
                .env("TMPDIR", self.dir.path())
                .env("LC_ALL", "C")
                .env("PROVISION_SHIM_LOG", &log)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = command.spawn().unwrap();
            {
                use std::io::Write as _;
                let mut input = child.stdin.take().unwrap();
                let _unread = input.write_all(stdin);
            }
            let output = child.wait_with_output().unwrap();
            Run {
                status: output.status.code(),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                calls: parse_log(&std::fs::read(&log).unwrap()),
                marker_created: self.dir.path().join("MARKER").exists()
                    || self.root().join("MARKER").exists(),
            }
        }

        fn install_tools(&self, bin: &Path) {
            // A tool given a behaviour is a shim even when it is normally real.
            let behaves = |name: &&str| self.behaviours.iter().any(|(shim, _, _)| shim == name);
            let mut real: Vec<&str> = REAL.iter().copied().filter(|n| !behaves(n)).collect();
            let mut shims: Vec<&str> = SHIMS.to_vec();
            shims.extend(REAL.iter().copied().filter(behaves));
            if self.real_writers {
                real.extend(WRITERS);
            } else {
                shims.extend(WRITERS);
            }
            for name in real {
                let target = bin.join(name);
                if !target.exists() {
                    let found = ["/usr/bin", "/bin"]
                        .iter()
                        .map(|dir| Path::new(dir).join(name))
                        .find(|path| path.exists())
                        .unwrap_or_else(|| panic!("{name} is not installed"));
                    std::os::unix::fs::symlink(found, target).unwrap();
                }
            }
            for name in shims {
                let (stdout, status) = self
                    .behaviours
                    .iter()
                    .find(|(shim, _, _)| shim == name)
                    .map(|(_, out, status)| (out.as_str(), *status))
                    .unwrap_or(("", 0));
                let script = format!(
                    "#!/bin/sh\n{{ printf '%s %d' \"${{0##*/}}\" \"$#\"; for a in \"$@\"; do printf ' %d:%s' \"${{#a}}\" \"$a\"; done; printf '\\n'; }} >> \"$PROVISION_SHIM_LOG\"\nprintf '%s' '{}'\nexit {status}\n",
                    stdout.replace('\'', r"'\''")
                );
                let path = bin.join(name);
                std::fs::write(&path, script).unwrap();
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    }

    /// Reads the shims' log: `name argc len:bytes len:bytes ...` per call (lengths in bytes).
    fn parse_log(log: &[u8]) -> Vec<Call> {
        let mut calls = Vec::new();
        let mut rest = log;
        while !rest.is_empty() {
            let take_until = |rest: &mut &[u8], stop: u8| {
                let end = rest.iter().position(|b| *b == stop).unwrap();
                let word = String::from_utf8_lossy(&rest[..end]).into_owned();
                *rest = &rest[end + 1..];
                word
            };
            let name = take_until(&mut rest, b' ');
            let count: usize = {
                let end = rest.iter().position(|b| *b == b' ' || *b == b'\n').unwrap();
                let count = std::str::from_utf8(&rest[..end]).unwrap().parse().unwrap();
                rest = &rest[end..];
                count
            };
            let mut args = Vec::with_capacity(count);
            for _ in 0..count {
                rest = &rest[1..]; // the space
                let len: usize = take_until(&mut rest, b':').parse().unwrap();
                args.push(String::from_utf8_lossy(&rest[..len]).into_owned());
                rest = &rest[len..];
            }
            assert_eq!(rest.first(), Some(&b'\n'), "malformed shim log");
            rest = &rest[1..];
            calls.push(Call { name, args });
        }
        calls
    }

    /// `sh -n`: the script still parses.
    pub fn assert_syntax(script: &str) {
        let output = Command::new("sh")
            .args(["-n", "-c", script])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "sh -n: {}\n{script}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Hostile strings: shell metacharacters, payloads that create `MARKER` if they ever run, quotes,
    /// newlines, blanks, globs, unicode and leading dashes, in any combination.
    pub fn hostile() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just("$(touch MARKER)".to_owned()),
            Just("`touch MARKER`".to_owned()),
            Just(";touch MARKER".to_owned()),
            Just("|touch MARKER".to_owned()),
            Just("&touch MARKER&".to_owned()),
            Just("&& touch MARKER".to_owned()),
            Just("\ntouch MARKER\n".to_owned()),
            Just("$(>MARKER)".to_owned()),
            Just(">MARKER".to_owned()),
            Just("<MARKER".to_owned()),
            Just("'".to_owned()),
            Just("'\\''".to_owned()),
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            Just("\n".to_owned()),
            Just(" ".to_owned()),
            Just("\t".to_owned()),
            Just("*".to_owned()),
            Just("?".to_owned()),
            Just("[a-z]".to_owned()),
            Just("{a,b}".to_owned()),
            Just("~".to_owned()),
            Just("#".to_owned()),
            Just("!".to_owned()),
            Just("${IFS}".to_owned()),
            Just("$HOME".to_owned()),
            Just("-".to_owned()),
            Just("--help".to_owned()),
            Just("é".to_owned()),
            Just("\u{2028}".to_owned()),
            Just("💥".to_owned()),
            "[a-z0-9._=]{1,5}",
        ];
        proptest::collection::vec(piece, 1..7).prop_map(|pieces| pieces.concat())
    }

    /// Hostile, but starting with `-` (option injection).
    pub fn hostile_dash() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        hostile().prop_map(|value| format!("-{value}"))
    }
}

mod hostile_values {
    use proptest::prelude::*;

    use super::sandbox::{Sandbox, assert_syntax, hostile, hostile_dash};
    use provision::nodeprep::Step;
    use provision::nodeprep::steps::{
        ScratchDisk, apt_source_step, load_module_step, packages_step, scratch_disk_step,
        sysctl_apply_step,
    };

    fn script(step: Step) -> String {
        match step {
            Step::Command { script, .. } => script,
            Step::File { .. } => panic!("command step expected"),
        }
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 24,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// The original finding: `scratch_mount = "/mnt/x'$(touch /tmp/pwned)'"` ran as root.
    #[test]
    fn scratch_mount_from_the_issue_is_data() {
        let mount = "/mnt/x'$(touch${IFS}MARKER)'".to_owned();
        let sandbox = Sandbox::new().behave("mountpoint", "", 1);
        std::fs::write(
            sandbox.root().join("etc/fstab"),
            format!("UUID=1 {mount} ext4 defaults 0 2\n"),
        )
        .unwrap();
        let script = script(scratch_disk_step(&ScratchDisk {
            size_gb: 1,
            mount: mount.clone(),
        }));
        assert_syntax(&script);
        let run = sandbox.run(&script, b"");
        run.assert_nothing_injected(&script);
        let mounts = run.calls_to("mount");
        assert_eq!(mounts.len(), 1, "{run:?}");
        assert_eq!(mounts[0].args, ["--", mount.as_str()]);
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn scratch_mount_is_only_ever_one_argument(value in hostile()) {
            prop_assume!(!value.contains("/etc/") && !value.contains("/proc/"));
            let mount = format!("/mnt/{value}");
            let sandbox = Sandbox::new().behave("mountpoint", "", 1);
            let printable = mount.bytes().all(|b| b.is_ascii_graphic());
            if printable {
                std::fs::write(
                    sandbox.root().join("etc/fstab"),
                    format!("# comment\nUUID=1 {mount} ext4 defaults 0 2\n"),
                )
                .unwrap();
            }
            let script = script(scratch_disk_step(&ScratchDisk { size_gb: 1, mount: mount.clone() }));
            assert_syntax(&script);
            let run = sandbox.run(&script, b"");
            run.assert_nothing_injected(&script);
            if printable {
                let mounts = run.calls_to("mount");
                prop_assert_eq!(mounts.len(), 1, "{:?}", run);
                prop_assert_eq!(&mounts[0].args, &vec!["--".to_owned(), mount.clone()]);
                prop_assert_eq!(&run.calls_to("mkdir")[0].args, &vec!["-p".to_owned(), "--".to_owned(), mount]);
            } else {
                prop_assert_eq!(run.status, Some(2), "{:?}", run);
                prop_assert!(run.calls_to("mount").is_empty());
                prop_assert!(run.calls_to("mkfs.ext4").is_empty());
            }
        }

        #[test]
        fn module_name_reaches_modprobe_as_one_argument(module in prop_oneof![hostile(), hostile_dash()]) {
            prop_assume!(!module.contains("/etc/") && !module.contains("/proc/"));
            let sandbox = Sandbox::new().behave("uname", "6.1.0-test", 0);
            std::fs::create_dir_all(sandbox.root().join("lib/modules/6.1.0-test")).unwrap();
            let script = script(load_module_step(&module));
            assert_syntax(&script);
            let run = sandbox.run(&script, b"");
            run.assert_nothing_injected(&script);
            let calls = run.calls_to("modprobe");
            prop_assert_eq!(calls.len(), 1, "{:?}", run);
            prop_assert_eq!(&calls[0].args, &vec!["--".to_owned(), module]);
        }

        #[test]
        fn sysctl_key_and_value_stay_data(key in hostile(), value in prop_oneof![hostile(), hostile_dash()]) {
            prop_assume!(value != "0");
            // A hostile key: the script stops at "does not exist" without running anything.
            let script_key = script(sysctl_apply_step(&key, "1"));
            assert_syntax(&script_key);
            Sandbox::new().run(&script_key, b"").assert_nothing_injected(&script_key);
            // A hostile value for a key that exists: `sysctl` gets `key=value` as one argument.
            let sandbox = Sandbox::new();
            std::fs::create_dir_all(sandbox.root().join("proc/sys/net/ipv4")).unwrap();
            std::fs::write(sandbox.root().join("proc/sys/net/ipv4/ip_forward"), "0\n").unwrap();
            let script = script(sysctl_apply_step("net.ipv4.ip_forward", &value));
            assert_syntax(&script);
            let run = sandbox.run(&script, b"");
            run.assert_nothing_injected(&script);
            let calls = run.calls_to("sysctl");
            prop_assert_eq!(calls.len(), 1, "{:?}", run);
            prop_assert_eq!(
                &calls[0].args,
                &vec!["-q".to_owned(), "-w".to_owned(), "--".to_owned(), format!("net.ipv4.ip_forward={value}")]
            );
        }

        #[test]
        fn package_names_reach_apt_as_whole_arguments(
            packages in proptest::collection::vec(prop_oneof![hostile(), hostile_dash()], 1..4),
            offline: bool,
        ) {
            let source = offline.then_some(provision::nodeprep::steps::APT_SOURCE_FILE);
            let script = script(packages_step(&packages, source));
            assert_syntax(&script);
            let run = Sandbox::new().behave("dpkg-query", "", 1).run(&script, b"");
            run.assert_nothing_injected(&script);
            let apt = run.calls_to("apt-get");
            prop_assert_eq!(apt.len(), 2, "{:?}", run);
            let install = &apt[1].args;
            let dash = install.iter().position(|a| a == "--").unwrap();
            prop_assert_eq!(&install[dash + 1..], &packages[..]);
            for query in run.calls_to("dpkg-query") {
                prop_assert_eq!(&query.args[query.args.len() - 2], "--");
            }
        }

        #[test]
        fn apt_source_travels_as_file_data(source in hostile()) {
            let steps = [
                apt_source_step(&source),
                Step::Command { description: "after".into(), script: "echo 'provision-outcome: unchanged'".into() },
            ];
            let batch = provision::nodeprep::batch::batch_script(&steps, "n");
            assert_syntax(&batch.script);
            let sandbox = Sandbox::new().real_writers();
            let run = sandbox.run(&batch.script, &batch.stdin);
            run.assert_nothing_injected(&batch.script);
            prop_assert_eq!(run.status, Some(0), "{:?}", run);
            // One-line `deb …` entries go to a .list file, anything else to a deb822 .sources.
            let file = provision::nodeprep::steps::apt_source_file(&source);
            let written = std::fs::read(sandbox.root().join(file.trim_start_matches('/'))).unwrap();
            prop_assert_eq!(
                written,
                format!("# Written by provision: offline package source.\n{source}\n").into_bytes()
            );
        }

        #[test]
        fn file_paths_in_batches_and_state_probes_stay_data(name in hostile()) {
            let name = name.replace('/', "_");
            prop_assume!(name != "." && name != "..");
            let sandbox = Sandbox::new().real_writers();
            let path = format!("/etc/{name}");
            let step = Step::File {
                description: "f".into(),
                path: path.clone(),
                content: b"data\n".to_vec(),
                mode: 0o640,
            };
            let batch = provision::nodeprep::batch::batch_script(std::slice::from_ref(&step), "n");
            assert_syntax(&batch.script);
            let run = sandbox.run(&batch.script, &batch.stdin);
            run.assert_nothing_injected(&batch.script);
            prop_assert_eq!(run.status, Some(0), "{:?}", run);
            prop_assert_eq!(std::fs::read(sandbox.root().join("etc").join(&name)).unwrap(), b"data\n");
            let probe = provision::nodeprep::file_state_script(&path);
            assert_syntax(&probe);
            let run = sandbox.run(&probe, b"");
            run.assert_nothing_injected(&probe);
        }
    }
}
