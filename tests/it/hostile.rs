//! Hostile input: every built-in profile mutated in many ways goes through the real binary and
//! ends in a clean pass (exit 0) or a located error (exit 1), never a crash; oversized profiles
//! are refused with capped diagnostics; `plan`/`up` of an impossible profile store no host keys;
//! arbitrary bytes and property strings never panic the parsers (proptest, part of `cargo test`).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use provision::profile::{self, BUILTIN_PROFILES};
use provision::pve::propstr::{self, PropertyFormat};

use crate::support::cli::Provision;

/// Strings that try to escape a shell, a path, a YAML document or the terminal.
const INJECTIONS: &[&str] = &[
    "x'$(touch /tmp/pwned)'",
    "a\nkind: Secret",
    "../../../../etc/passwd",
    "\u{1b}[2J\u{1b}]0;owned\u{7}",
    "a;rm -rf /",
    "`id`",
    "a b",
    "\r\n",
];

/// One mutation: a name and the new file bytes.
type Mutation = (String, Vec<u8>);

fn replace_value(text: &str, key: &str, value: &str) -> Option<String> {
    let needle = format!("\n{key} = ");
    let start = text.find(&needle)? + needle.len();
    let end = start + text[start..].find('\n')?;
    Some(format!("{}{}{}", &text[..start], value, &text[end..]))
}

fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// At least 40 mutations of `text`.
fn mutations(text: &str) -> Vec<Mutation> {
    let mut out: Vec<Mutation> = Vec::new();
    let mut push = |name: String, text: String| out.push((name, text.into_bytes()));
    // Wrong types and out-of-range numbers.
    for (key, value) in [
        ("count", "\"three\""),
        ("count", "-1"),
        ("count", "4294967295"),
        ("count", "4294967296"),
        ("count", "0"),
        ("cores", "0"),
        ("cores", "4294967295"),
        ("memory_mib", "18446744073709551615"),
        ("memory_mib", "1.5"),
        ("memory_mib", "true"),
        ("name", "42"),
        ("name", "[\"a\"]"),
        ("cidr", "\"10.0.0.0/33\""),
        ("gateway", "\"not-an-ip\""),
        ("vmid_range", "{ start = 1, end = 4294967295 }"),
        ("k3s_version", "{ x = 1 }"),
    ] {
        if let Some(mutated) = replace_value(text, key, value) {
            push(format!("{key}={value}"), mutated);
        }
    }
    // Injection strings in every string field present.
    for key in [
        "name",
        "description",
        "url",
        "repo",
        "branch",
        "path",
        "bridge",
        "disks",
        "iso",
    ] {
        for injection in INJECTIONS {
            if let Some(mutated) = replace_value(text, key, &toml_string(injection)) {
                push(format!("{key}={injection:?}"), mutated);
            }
        }
    }
    for (key, section) in [
        ("scratch_mount", "[[node_groups]]"),
        ("file_name", "[image]"),
        ("apt_source", "[airgap]"),
        ("jump_host", "[ssh]"),
        ("search_domain", "[network]"),
        ("ttl", "[cluster]"),
    ] {
        for injection in INJECTIONS {
            let line = format!("{key} = {}", toml_string(injection));
            let mutated = if text.contains(section) {
                text.replacen(section, &format!("{section}\n{line}"), 1)
            } else {
                format!("{text}\n{section}\n{line}\n")
            };
            push(format!("{key}={injection:?}"), mutated);
        }
    }
    // Unknown keys at every depth.
    for section in [
        "[cluster]",
        "[network]",
        "[proxmox]",
        "[image]",
        "[[node_groups]]",
    ] {
        push(
            format!("unknown key in {section}"),
            text.replacen(section, &format!("{section}\nbogus_key = 1"), 1),
        );
    }
    push("unknown top-level key".into(), format!("bogus = 1\n{text}"));
    push(
        "unknown key in disks".into(),
        text.replacen("disks = { os_gb", "disks = { bogus = 1, os_gb", 1),
    );
    // Overlapping addresses: the second group gets the first group's range.
    if let Some(range) = text
        .lines()
        .find(|l| l.starts_with("address_range = ") || l.starts_with("addresses = "))
    {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if let Some(second) = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("address_range = ") || l.starts_with("addresses = "))
            .nth(1)
            .map(|(i, _)| i)
        {
            lines[second] = range.to_owned();
            push("overlapping addresses".into(), lines.join("\n"));
        }
    }
    // Encodings and sizes.
    push("CRLF".into(), text.replace('\n', "\r\n"));
    push("BOM".into(), format!("\u{feff}{text}"));
    push(
        "BOM + CRLF".into(),
        format!("\u{feff}{}", text.replace('\n', "\r\n")),
    );
    let mut invalid = text.as_bytes().to_vec();
    invalid.splice(10..10, [0xff, 0xfe, 0xc3]);
    out.push(("invalid UTF-8".into(), invalid));
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    out.push(("UTF-16".into(), utf16));
    let mut push = |name: String, text: String| out.push((name, text.into_bytes()));
    push(
        "10 MB comment".into(),
        format!("{text}\n# {}\n", "x".repeat(10 * 1024 * 1024)),
    );
    push(
        "deep nesting".into(),
        format!(
            "{text}\nx = {}1{}\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
    );
    push(
        "deep inline tables".into(),
        format!(
            "{text}\ny = {}1{}\n",
            "{a=".repeat(5_000),
            "}".repeat(5_000)
        ),
    );
    push("empty".into(), String::new());
    push("truncated".into(), text[..text.len() / 2].to_owned());
    push(
        "NUL byte".into(),
        text.replacen("[cluster]", "[cluster]\0", 1),
    );
    push(
        "3000 addresses".into(),
        text.replacen(
            "[[node_groups]]",
            &format!(
                "[[node_groups]]\naddresses = [{}]",
                (0..3000)
                    .map(|i| format!("\"10.{}.{}.{}\"", i / 65536, (i / 256) % 256, i % 256))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            1,
        ),
    );
    out
}

#[test]
fn mutated_builtin_profiles_pass_or_fail_with_a_located_error_never_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut slowest = (Duration::ZERO, String::new());
    let mut total = 0;
    for builtin in BUILTIN_PROFILES {
        let list = mutations(builtin.text);
        assert!(
            list.len() >= 40,
            "{}: {} mutations",
            builtin.name,
            list.len()
        );
        for (index, (name, bytes)) in list.iter().enumerate() {
            let path = dir.path().join(format!("{}-{index}.toml", builtin.name));
            std::fs::write(&path, bytes).unwrap();
            let started = Instant::now();
            let output = Provision::new(&["validate", "--profile", path.to_str().unwrap()])
                .workspace(dir.path())
                .output();
            let elapsed = started.elapsed();
            if elapsed > slowest.0 {
                slowest = (elapsed, format!("{} / {name}", builtin.name));
            }
            total += 1;
            let stderr = String::from_utf8_lossy(&output.stderr);
            let what = format!("{} / {name}: {stderr}", builtin.name);
            match output.status.code() {
                Some(0) => {}
                Some(1) => {
                    // Every error is located `file:line:column` and carries a hint.
                    let errors = stderr.matches("\nerror: ").count()
                        + usize::from(stderr.starts_with("error: "));
                    assert!(errors >= 1, "{what}");
                    assert!(errors <= profile::MAX_DIAGNOSTICS + 1, "{what}");
                    let located = stderr
                        .lines()
                        .filter(|l| l.trim_start().starts_with("--> "))
                        .filter(|l| {
                            l.split_whitespace().nth(1).is_some_and(|location| {
                                location
                                    .rsplitn(3, ':')
                                    .take(2)
                                    .all(|n| n.parse::<usize>().is_ok())
                            })
                        })
                        .count();
                    assert!(located >= errors, "{what}");
                    assert!(stderr.matches("= hint: ").count() >= errors, "{what}");
                    assert!(
                        !stderr.contains("check the path and its permissions"),
                        "{what}"
                    );
                }
                other => panic!("exit {other:?} for {what}"),
            }
            // Nothing the profile holds reaches the terminal as a control sequence.
            assert!(!stderr.contains('\u{1b}'), "{what}");
            assert!(!stderr.contains('\u{7}'), "{what}");
        }
    }
    eprintln!(
        "{total} mutated profiles validated; slowest {:?} ({})",
        slowest.0, slowest.1
    );
}

#[test]
fn crlf_and_bom_profiles_still_validate() {
    for builtin in BUILTIN_PROFILES {
        let text = format!("\u{feff}{}", builtin.text.replace('\n', "\r\n"));
        let loaded = profile::parse("crlf.toml", text);
        assert!(
            loaded.is_ok(),
            "{}: {:?}",
            builtin.name,
            loaded.err().map(|e| e.diagnostics())
        );
    }
}

#[test]
fn invalid_encodings_get_a_position_and_an_encoding_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"description = \"caf\xe9\"\n").unwrap();
    let error = profile::load(path.to_str().unwrap(), dir.path()).unwrap_err();
    let diagnostics = error.diagnostics();
    assert_eq!(
        (diagnostics[0].line, diagnostics[0].column),
        (Some(1), Some(19))
    );
    assert!(
        diagnostics[0].hint.as_deref().unwrap().contains("UTF-8"),
        "{diagnostics:?}"
    );
    std::fs::write(&path, [0xff, 0xfe, b'a', 0]).unwrap();
    let error = profile::load(path.to_str().unwrap(), dir.path()).unwrap_err();
    let diagnostics = error.diagnostics();
    assert!(diagnostics[0].message.contains("UTF-16"), "{diagnostics:?}");
    assert_eq!(diagnostics[0].line, Some(1));
    std::fs::write(&path, vec![b'#'; profile::validate::MAX_PROFILE_BYTES + 1]).unwrap();
    let error = profile::load(path.to_str().unwrap(), dir.path()).unwrap_err();
    assert!(
        error.diagnostics()[0].message.contains("larger than"),
        "{error}"
    );
}

fn a100_with(extra_groups: usize, addresses: usize) -> String {
    let mut text = BUILTIN_PROFILES[0].text.to_owned();
    for index in 0..extra_groups {
        text += &format!(
            "\n[[node_groups]]\nname = \"g{index}\"\nrole = \"agent\"\ncount = 1\ncores = 1\nmemory_mib = 1024\naddresses = [\"10.0.0.11\"]\ndisks = {{ os_gb = 20 }}\n"
        );
    }
    if addresses > 0 {
        let list: Vec<String> = (0..addresses)
            .map(|i| format!("\"10.9.{}.{}\"", i / 256, i % 256))
            .collect();
        text += &format!(
            "\n[[node_groups]]\nname = \"many\"\nrole = \"agent\"\ncount = 1\ncores = 1\nmemory_mib = 1024\naddresses = [{}]\ndisks = {{ os_gb = 20 }}\n",
            list.join(", ")
        );
    }
    text
}

#[test]
fn large_invalid_profiles_report_capped_deduplicated_diagnostics() {
    for (groups, addresses) in [(1000, 0), (0, 3000)] {
        let error = profile::parse("big.toml", a100_with(groups, addresses)).unwrap_err();
        let diagnostics = error.diagnostics();
        assert!(
            diagnostics.len() <= 2 * (profile::MAX_DIAGNOSTICS + 1),
            "{groups}/{addresses}: {} diagnostics",
            diagnostics.len()
        );
        let bound = diagnostics
            .iter()
            .any(|d| d.message.contains("at most 100") || d.message.contains("at most 1000"));
        assert!(bound, "{groups}/{addresses}: {diagnostics:#?}");
        let mut seen = std::collections::HashSet::new();
        for diagnostic in &diagnostics {
            assert!(diagnostic.line.is_some(), "{diagnostic:?}");
            assert!(
                seen.insert((diagnostic.path.clone(), diagnostic.message.clone())),
                "duplicate {diagnostic:?}"
            );
        }
    }
    // 60 groups sharing one address: more errors than the cap, so one says how many are left.
    let error = profile::parse("dup.toml", a100_with(60, 0)).unwrap_err();
    let diagnostics = error.diagnostics();
    assert!(
        diagnostics
            .iter()
            .any(|d| d.message.contains("more error(s) not shown")),
        "{diagnostics:#?}"
    );
}

/// homelab-ha with 200 agents of 4 TiB each: valid, but no simulated node can hold them.
fn impossible_profile() -> String {
    BUILTIN_PROFILES
        .iter()
        .find(|b| b.name == "homelab-ha")
        .unwrap()
        .text
        .replace("end = 7419", "end = 7699")
        .replace(
            "count = 2\ncores = 4\nmemory_mib = 8192",
            "count = 200\ncores = 4\nmemory_mib = 4194304",
        )
        .replace(
            "192.168.20.21-192.168.20.29",
            "192.168.20.21-192.168.20.240",
        )
}

#[test]
fn plan_and_up_of_an_impossible_profile_store_no_host_keys() {
    let workspace = tempfile::tempdir().unwrap();
    let path = workspace.path().join("impossible.toml");
    std::fs::write(&path, impossible_profile()).unwrap();
    let spec = path.to_str().unwrap();
    let loaded = profile::load(spec, workspace.path());
    assert!(
        loaded.is_ok(),
        "{:?}",
        loaded.err().map(|e| e.diagnostics())
    );
    let host_keys = workspace.path().join(".provision/secrets/host-keys");
    for command in ["plan", "up"] {
        let output = Provision::new(&[command, "--profile", spec, "--simulate"])
            .workspace(workspace.path())
            .output();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{command}: {stderr}");
        assert!(stderr.contains("memory"), "{command}: {stderr}");
        let stored = std::fs::read_dir(&host_keys).map_or(0, |entries| entries.count());
        assert_eq!(
            stored,
            0,
            "{command} stored host keys in {}",
            host_keys.display()
        );
    }
    // `plan` of a possible profile previews the keys without storing them either.
    let output = Provision::new(&["plan", "--profile", "homelab-ha", "--simulate"])
        .workspace(workspace.path())
        .output();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = std::fs::read_dir(&host_keys).map_or(0, |entries| entries.count());
    assert_eq!(stored, 0, "plan stored host keys");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Arbitrary bytes (bounded) through decode + parse + validate: never a panic, and any
    /// error is located.
    #[test]
    fn arbitrary_bytes_never_panic_the_profile_parser(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
        let result = profile::decode("fuzz.toml", bytes).and_then(|text| profile::parse("fuzz.toml", text));
        if let Err(error) = result {
            for diagnostic in error.diagnostics() {
                proptest::prop_assert!(!diagnostic.message.is_empty());
            }
        }
    }

    /// TOML-shaped text around a real profile: keys and values from a hostile alphabet.
    #[test]
    fn arbitrary_values_in_a_real_profile_never_panic(
        which in 0..BUILTIN_PROFILES.len(),
        key in "[a-z_]{1,16}",
        value in "[ -~\u{0}-\u{1f}\u{feff}\u{202e}]{0,64}",
    ) {
        let text = BUILTIN_PROFILES[which].text;
        let line = format!("{key} = {}", toml::Value::String(value.clone()));
        for mutated in [
            text.replacen("[cluster]", &format!("[cluster]\n{line}"), 1),
            text.replacen("[[node_groups]]", &format!("[[node_groups]]\n{line}"), 1),
            replace_value(text, &key, &toml::Value::String(value.clone()).to_string()).unwrap_or_default(),
        ] {
            if let Err(error) = profile::parse("fuzz.toml", mutated) {
                for diagnostic in error.diagnostics() {
                    proptest::prop_assert!(diagnostic.line.is_some(), "{diagnostic:?}");
                    let rendered = profile::diagnostic::render(&diagnostic, error.text(), false);
                    proptest::prop_assert!(!rendered.contains('\u{1b}'), "{rendered:?}");
                }
            }
        }
    }

    /// Property strings as Proxmox returns them: every typed parser refuses or accepts, never panics.
    #[test]
    fn property_string_parsers_never_panic(text in "[ -~]{0,256}") {
        let _ = propstr::PropertyString::parse(&text, Some("file"));
        let _ = propstr::PropertyString::parse(&text, None);
        let _ = propstr::HostPci::parse(&text);
        let _ = propstr::Numa::parse(&text);
        let _ = propstr::Disk::parse(&text);
        let _ = propstr::EfiDisk::parse(&text);
        let _ = propstr::Net::parse(&text);
        let _ = propstr::IpConfig::parse(&text);
        let _ = propstr::Cpu::parse(&text);
        let _ = propstr::Agent::parse(&text);
        let _ = text.parse::<propstr::IdList>();
        if let Ok(parsed) = propstr::PropertyString::parse(&text, Some("file")) {
            let again = propstr::PropertyString::parse(&parsed.render(Some("file")), Some("file"));
            proptest::prop_assert!(again.is_ok(), "{text:?} rendered {:?}", parsed.render(Some("file")));
        }
    }
}
