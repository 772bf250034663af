//! Proxmox VE parameters for the VM's cloud-init: the seed ISO as a CD-ROM (`ide2`), or the
//! fallback where Proxmox's own cloud-init drive carries user, keys and network (no host keys).

use std::collections::BTreeMap;
use std::net::IpAddr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::SeedInput;

/// The drive slot both modes use for the seed.
pub const SEED_DRIVE: &str = "ide2";

/// Everything except RFC 3986 unreserved characters is escaped. Proxmox checks `sshkeys` against
/// `^[-%a-zA-Z0-9_.!~*'()]*$` and decodes it with `URI::Escape::uri_unescape` (no `+` → space),
/// so `%20` for spaces and `%0A` between keys, `%2B`/`%2F`/`%3D` for base64 characters.
const SSHKEYS_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What Proxmox's built-in cloud-init drive can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxmoxCloudInitInput {
    /// Storage for the generated `cloudinit` volume (a disk storage, e.g. `local-lvm`).
    pub storage: String,
    pub user: String,
    pub authorized_keys: Vec<String>,
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: IpAddr,
    pub dns: Vec<IpAddr>,
    pub search_domain: Option<String>,
}

impl ProxmoxCloudInitInput {
    /// The subset of a [`SeedInput`] Proxmox's drive supports.
    pub fn from_seed_input(input: &SeedInput<'_>, storage: &str) -> ProxmoxCloudInitInput {
        ProxmoxCloudInitInput {
            storage: storage.to_owned(),
            user: input.user.clone(),
            authorized_keys: input.authorized_keys.clone(),
            address: input.address,
            prefix_len: input.prefix_len,
            gateway: input.gateway,
            dns: input.dns.clone(),
            search_domain: input.search_domain.clone(),
        }
    }
}

/// `POST /nodes/{node}/qemu/{vmid}/config` parameters for Proxmox's built-in cloud-init drive.
/// Values are in their final form: the HTTP client form-encodes them once more (so `sshkeys`
/// travels double-encoded, which is what Proxmox expects).
pub fn proxmox_cloudinit_params(input: &ProxmoxCloudInitInput) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    params.insert(
        SEED_DRIVE.to_owned(),
        format!("{}:cloudinit", input.storage),
    );
    params.insert("ciuser".to_owned(), input.user.clone());
    params.insert("sshkeys".to_owned(), encode_sshkeys(&input.authorized_keys));
    let ipconfig = match input.address {
        IpAddr::V4(_) => format!(
            "ip={}/{},gw={}",
            input.address, input.prefix_len, input.gateway
        ),
        IpAddr::V6(_) => format!(
            "ip6={}/{},gw6={}",
            input.address, input.prefix_len, input.gateway
        ),
    };
    params.insert("ipconfig0".to_owned(), ipconfig);
    if !input.dns.is_empty() {
        let servers: Vec<String> = input.dns.iter().map(ToString::to_string).collect();
        params.insert("nameserver".to_owned(), servers.join(" "));
    }
    if let Some(domain) = &input.search_domain {
        params.insert("searchdomain".to_owned(), domain.clone());
    }
    params.insert("ciupgrade".to_owned(), "0".to_owned());
    params
}

/// `sshkeys` value: the keys one per line, URL-encoded as a whole.
pub fn encode_sshkeys(authorized_keys: &[String]) -> String {
    let joined = authorized_keys
        .iter()
        .map(|key| key.trim())
        .collect::<Vec<_>>()
        .join("\n");
    utf8_percent_encode(&joined, SSHKEYS_ESCAPE).to_string()
}

/// The parameter attaching an uploaded seed ISO: `("ide2", "<storage>:iso/<file>,media=cdrom")`.
pub fn nocloud_cdrom_param(iso_storage: &str, iso_file_name: &str) -> (String, String) {
    (
        SEED_DRIVE.to_owned(),
        format!("{iso_storage}:iso/{iso_file_name},media=cdrom"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEpydjo2bsaF1piJ8pbBDshhi+/I2e7qQ7B1Rn1jrEIR ops@laptop";
    const KEY_B: &str = "ssh-rsa AAAAB3NzaC1yc2E= admin@ci";

    fn input() -> ProxmoxCloudInitInput {
        ProxmoxCloudInitInput {
            storage: "local-lvm".to_owned(),
            user: "ops".to_owned(),
            authorized_keys: vec![KEY_A.to_owned(), format!("{KEY_B}\n")],
            address: "10.0.0.21".parse().unwrap(),
            prefix_len: 24,
            gateway: "10.0.0.1".parse().unwrap(),
            dns: vec!["10.0.0.2".parse().unwrap(), "1.1.1.1".parse().unwrap()],
            search_domain: Some("lab.example".to_owned()),
        }
    }

    #[test]
    fn params_match_proxmox_formats() {
        let params = proxmox_cloudinit_params(&input());
        assert_eq!(params["ide2"], "local-lvm:cloudinit");
        assert_eq!(params["ciuser"], "ops");
        assert_eq!(params["ipconfig0"], "ip=10.0.0.21/24,gw=10.0.0.1");
        assert_eq!(params["nameserver"], "10.0.0.2 1.1.1.1");
        assert_eq!(params["searchdomain"], "lab.example");
        assert_eq!(params["ciupgrade"], "0");
        assert_eq!(params.len(), 7);
    }

    #[test]
    fn sshkeys_are_uri_escaped_and_newline_separated() {
        let encoded = encode_sshkeys(&input().authorized_keys);
        assert_eq!(
            encoded,
            "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIEpydjo2bsaF1piJ8pbBDshhi%2B%2FI2e7qQ7B1Rn1jrEIR%20ops%40laptop%0Assh-rsa%20AAAAB3NzaC1yc2E%3D%20admin%40ci"
        );
        // Proxmox's format check for `urlencoded`.
        assert!(
            encoded
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-%_.!~*'()".contains(&byte))
        );
        // And its decoding (URI::Escape::uri_unescape) gives the keys back, one per line.
        let decoded = percent_encoding::percent_decode_str(&encoded)
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, format!("{KEY_A}\n{KEY_B}"));
    }

    #[test]
    fn ipv6_uses_ip6_and_gw6() {
        let mut input = input();
        input.address = "fd00::21".parse().unwrap();
        input.prefix_len = 64;
        input.gateway = "fd00::1".parse().unwrap();
        input.dns.clear();
        input.search_domain = None;
        let params = proxmox_cloudinit_params(&input);
        assert_eq!(params["ipconfig0"], "ip6=fd00::21/64,gw6=fd00::1");
        assert!(!params.contains_key("nameserver"));
        assert!(!params.contains_key("searchdomain"));
    }

    #[test]
    fn cdrom_param_points_at_the_iso_volume() {
        assert_eq!(
            nocloud_cdrom_param("local", "provision-lab-cp-1-0123abcd.iso"),
            (
                "ide2".to_owned(),
                "local:iso/provision-lab-cp-1-0123abcd.iso,media=cdrom".to_owned()
            )
        );
    }
}
