//! Built-in profiles, embedded in the binary so `--profile a100-8x` works from any directory.

/// A profile shipped with provision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinProfile {
    pub name: &'static str,
    pub text: &'static str,
}

/// Every built-in profile, in the order `provision profiles` lists them.
pub const BUILTIN_PROFILES: &[BuiltinProfile] = &[
    BuiltinProfile {
        name: "a100-8x",
        text: include_str!("../../profiles/a100-8x.toml"),
    },
    BuiltinProfile {
        name: "sentinel",
        text: include_str!("../../profiles/sentinel.toml"),
    },
    BuiltinProfile {
        name: "mlops",
        text: include_str!("../../profiles/mlops.toml"),
    },
    BuiltinProfile {
        name: "homelab-ha",
        text: include_str!("../../profiles/homelab-ha.toml"),
    },
    BuiltinProfile {
        name: "vllm-timeslice",
        text: include_str!("../../profiles/vllm-timeslice.toml"),
    },
    BuiltinProfile {
        name: "ci-nested",
        text: include_str!("../../profiles/ci-nested.toml"),
    },
];

/// The field reference of profiles (`profiles/README.md`), shipped so a user with only the
/// binary reads it with `provision profiles docs`.
pub const PROFILE_REFERENCE: &str = include_str!("../../profiles/README.md");

/// The built-in profile called `name`.
pub fn builtin(name: &str) -> Option<&'static BuiltinProfile> {
    BUILTIN_PROFILES.iter().find(|profile| profile.name == name)
}
