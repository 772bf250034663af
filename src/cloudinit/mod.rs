//! Cloud-init seed for each VM: user-data, meta-data, network-config, provision-generated SSH host keys, and the NoCloud ISO (label `cidata`).
//!
//! Everything here is pure except [`HostKeys::load_or_generate`] (workspace files) and
//! [`Templates::with_overrides`] (reads a user template directory). The flow for one VM:
//!
//! 1. [`HostKeys::load_or_generate`] — the VM's ed25519 host key, created once per workspace.
//! 2. [`build_seed`] — [`SeedInput`] → [`Seed`] (three YAML documents rendered from `templates/cloud-init/`).
//! 3. [`build_nocloud_iso`] + [`iso_file_name`] — the bytes to upload as `content=iso`, and a
//!    name that changes exactly when the seed changes (so re-uploads are skipped when unchanged).
//!
//! Or, in `cloud_init = "proxmox"` mode, [`proxmox_cloudinit_params`] for Proxmox's own drive.
//!
//! The ISO (and `user-data`) carries the VM's private SSH host key: whoever uploads it must delete
//! it from Proxmox storage after the VM's first boot (and on `down`). The user-data therefore
//! drops `/etc/cloud/cloud.cfg.d/90-provision.cfg` in the guest (`network: {config: disabled}`,
//! `ssh_deletekeys: false`), so a later boot without the ISO keeps the host key and the static
//! network instead of regenerating keys and falling back to DHCP. Consequence: a changed seed
//! (new `instance-id`) re-applies user-data on an existing VM, but not network-config.

mod hostkeys;
mod iso;
mod network;
mod proxmox;
pub(crate) mod templates;
mod userdata;

use std::net::IpAddr;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

pub use hostkeys::{HostKeys, Secret};
pub use iso::{VOLUME_ID, build_nocloud_iso};
pub use proxmox::{
    ProxmoxCloudInitInput, SEED_DRIVE, encode_sshkeys, nocloud_cdrom_param,
    proxmox_cloudinit_params,
};
pub use templates::Templates;

/// Errors of the cloud-init layer.
#[derive(Debug, thiserror::Error)]
pub enum CloudInitError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host key {path} is not usable: {reason}")]
    InvalidHostKey { path: PathBuf, reason: String },
    #[error(
        "host key {path} has mode {mode:o}, it must not be readable by others (hint: chmod 600 it)"
    )]
    HostKeyPermissions { path: PathBuf, mode: u32 },
    #[error("cannot encode SSH key: {reason}")]
    KeyEncoding { reason: String },
    #[error("invalid cloud-init input `{field}`: {message}")]
    InvalidInput {
        field: &'static str,
        message: String,
    },
    #[error("cloud-init template {name}: {source}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("cloud-init template {name} rendered invalid YAML: {source}")]
    InvalidYaml {
        name: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("cloud-init template {name} rendered {message}")]
    UnexpectedDocument { name: String, message: String },
}

/// A file cloud-init writes on first boot (`write_files`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WriteFile {
    /// Absolute path in the guest.
    pub path: String,
    pub content: String,
    /// Octal string, e.g. `0644`.
    pub permissions: String,
    /// `user:group`; cloud-init's default (`root:root`) when `None`.
    pub owner: Option<String>,
}

/// Everything one VM's seed is built from. Built by the planner from the profile.
#[derive(Debug, Clone)]
pub struct SeedInput<'a> {
    /// Short host name (DNS label), e.g. `a100-8x-gpu-1`.
    pub hostname: String,
    pub fqdn: Option<String>,
    /// Stable per VM, e.g. `provision-<cluster>-<vm>`. The meta-data `instance-id` is this plus a
    /// hash of the seed content, so cloud-init re-runs exactly when the content changes.
    pub instance_id: String,
    /// Login user created with passwordless sudo and a locked password.
    pub user: String,
    /// `authorized_keys` lines for `user` (at least one).
    pub authorized_keys: Vec<String>,
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: IpAddr,
    pub dns: Vec<IpAddr>,
    pub search_domain: Option<String>,
    pub mtu: Option<u16>,
    /// MAC of `net0` when the plan fixed it (`xx:xx:xx:xx:xx:xx`, any case): the interface is then
    /// matched by MAC and named `eth0`, as Proxmox's own cloud-init drive does. Without it the
    /// config targets `ens18` (Proxmox's first virtio NIC), matching any `e*` name under netplan.
    pub mac: Option<String>,
    pub host_keys: &'a HostKeys,
    /// Extra packages; `qemu-guest-agent` is always installed.
    pub packages: Vec<String>,
    /// Extra first-boot commands, each an argv (run without a shell), after the guest agent start.
    pub extra_runcmd: Vec<Vec<String>>,
    pub write_files: Vec<WriteFile>,
}

/// The three NoCloud documents of one VM.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed {
    /// `#cloud-config` document; contains the private host key.
    pub user_data: String,
    pub meta_data: String,
    pub network_config: String,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Seed")
            .field(
                "user_data",
                &format_args!("<{} bytes, contains a private key>", self.user_data.len()),
            )
            .field("meta_data", &self.meta_data)
            .field("network_config", &self.network_config)
            .finish()
    }
}

impl Seed {
    /// sha256 over the three documents (length-prefixed, so boundaries count).
    pub fn content_sha256(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for document in [&self.user_data, &self.meta_data, &self.network_config] {
            hasher.update((document.len() as u64).to_be_bytes());
            hasher.update(document.as_bytes());
        }
        hasher.finalize().into()
    }
}

/// Render the seed with the built-in templates.
pub fn build_seed(input: &SeedInput<'_>) -> Result<Seed, CloudInitError> {
    build_seed_with(&Templates::builtin(), input)
}

/// Render the seed with `templates` (built-in, or a user's override directory).
pub fn build_seed_with(
    templates: &Templates,
    input: &SeedInput<'_>,
) -> Result<Seed, CloudInitError> {
    userdata::validate(input)?;
    network::validate(input)?;
    let user_data = userdata::render(templates, input)?;
    let network_config = network::render(templates, input)?;
    let instance_id = instance_id(input, &user_data, &network_config);
    let meta_data = templates.render_yaml(
        templates::META_DATA,
        minijinja::context! {
            instance_id => instance_id,
            hostname => input.hostname,
        },
    )?;
    Ok(Seed {
        user_data,
        meta_data,
        network_config,
    })
}

/// `<instance_id>-<first 12 hex of sha256(user-data, network-config)>`.
fn instance_id(input: &SeedInput<'_>, user_data: &str, network_config: &str) -> String {
    let mut hasher = Sha256::new();
    for document in [user_data, network_config] {
        hasher.update((document.len() as u64).to_be_bytes());
        hasher.update(document.as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    format!("{}-{}", input.instance_id, &digest[..12])
}

/// Name of the uploaded seed ISO: `provision-<cluster>-<vm>-<sha8>.iso`, where `sha8` hashes the
/// seed content and the ISO format version, so a changed seed gets a new name.
pub fn iso_file_name(cluster: &str, vm_name: &str, seed: &Seed) -> String {
    let mut hasher = Sha256::new();
    hasher.update(iso::FORMAT_VERSION.to_be_bytes());
    hasher.update(seed.content_sha256());
    let digest = hex::encode(hasher.finalize());
    format!("provision-{cluster}-{vm_name}-{}.iso", &digest[..8])
}

/// Whether `volume_file_name` (e.g. from a storage content listing) is a seed ISO provision
/// uploaded for this cluster's VM, whatever its content hash (for cleanup of stale ISOs).
pub fn is_seed_iso_of(cluster: &str, vm_name: &str, volume_file_name: &str) -> bool {
    let prefix = format!("provision-{cluster}-{vm_name}-");
    volume_file_name
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(".iso"))
        .is_some_and(|hash| hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
pub(crate) mod test_support {
    #![allow(clippy::unwrap_used)]

    use super::*;

    pub(crate) fn host_keys() -> HostKeys {
        // A fixed key, so rendered documents are stable across test runs.
        HostKeys::from_private_openssh(FIXED_PRIVATE_KEY).unwrap()
    }

    /// `ssh-keygen -lf`: SHA256:27KZTGCdC2oCMbZ4ZIPr6kHOdmejAFSR37mu9Qxvsxk
    pub(crate) const FIXED_PRIVATE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDhjVjwdHm2wh93i4YLWuTXadOc3TbTcVz3TmBkX5KmKwAAAJhTEpjWUxKY
1gAAAAtzc2gtZWQyNTUxOQAAACDhjVjwdHm2wh93i4YLWuTXadOc3TbTcVz3TmBkX5KmKw
AAAECicFX4NDmM9N3adijpAUr+v9cFaDW1iszlgXzYlYcSjeGNWPB0ebbCH3eLhgta5Ndp
05zdNtNxXPdOYGRfkqYrAAAADnByb3Zpc2lvbi10ZXN0AQIDBAUGBw==
-----END OPENSSH PRIVATE KEY-----
";

    pub(crate) fn input(host_keys: &HostKeys) -> SeedInput<'_> {
        SeedInput {
            hostname: "a100-8x-gpu-1".to_owned(),
            fqdn: Some("a100-8x-gpu-1.lab.example".to_owned()),
            instance_id: "provision-a100-8x-gpu-1".to_owned(),
            user: "ops".to_owned(),
            authorized_keys: vec![
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEpydjo2bsaF1piJ8pbBDshhi+/I2e7qQ7B1Rn1jrEIR ops@laptop"
                    .to_owned(),
            ],
            address: "10.0.0.21".parse().unwrap(),
            prefix_len: 24,
            gateway: "10.0.0.1".parse().unwrap(),
            dns: vec!["10.0.0.2".parse().unwrap(), "1.1.1.1".parse().unwrap()],
            search_domain: Some("lab.example".to_owned()),
            mtu: Some(9000),
            mac: Some("BC:24:11:2A:00:15".to_owned()),
            host_keys,
            packages: vec!["nfs-common".to_owned()],
            extra_runcmd: vec![],
            write_files: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::test_support::*;
    use super::*;

    #[test]
    fn instance_id_changes_with_content_only() {
        let keys = host_keys();
        let first = build_seed(&input(&keys)).unwrap();
        let again = build_seed(&input(&keys)).unwrap();
        assert_eq!(first, again);
        let mut changed_input = input(&keys);
        changed_input.packages.push("jq".to_owned());
        let changed = build_seed(&changed_input).unwrap();
        assert_ne!(first.meta_data, changed.meta_data);
        assert!(
            first
                .meta_data
                .contains("instance-id: \"provision-a100-8x-gpu-1-"),
            "{}",
            first.meta_data
        );
    }

    #[test]
    fn iso_file_name_hashes_the_seed() {
        let keys = host_keys();
        let seed = build_seed(&input(&keys)).unwrap();
        let name = iso_file_name("a100-8x", "gpu-1", &seed);
        assert!(name.starts_with("provision-a100-8x-gpu-1-"), "{name}");
        assert!(name.ends_with(".iso"));
        assert_eq!(name.len(), "provision-a100-8x-gpu-1-".len() + 8 + 4);
        assert!(is_seed_iso_of("a100-8x", "gpu-1", &name));
        assert!(!is_seed_iso_of("a100-8x", "gpu-10", &name));
        assert!(!is_seed_iso_of(
            "a100",
            "8x-gpu-1",
            "provision-a100-8x-gpu-1.iso"
        ));
        let mut other = seed.clone();
        other.network_config.push('\n');
        assert_ne!(iso_file_name("a100-8x", "gpu-1", &other), name);
    }

    #[test]
    fn seed_debug_hides_user_data() {
        let keys = host_keys();
        let seed = build_seed(&input(&keys)).unwrap();
        let debug = format!("{seed:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }
}
