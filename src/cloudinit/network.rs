//! The network-config (version 2) document: one static interface, default route, DNS, MTU.

use std::net::IpAddr;

use minijinja::context;

use super::templates::{self, Templates};
use super::{CloudInitError, SeedInput};

/// Name given to the interface when it is matched by MAC (what Proxmox's own drive does).
const RENAMED_INTERFACE: &str = "eth0";
/// Proxmox's first virtio NIC (`net0`, PCI slot 0x12) under systemd's predictable names.
const PROXMOX_FIRST_NIC: &str = "ens18";

pub(crate) fn validate(input: &SeedInput<'_>) -> Result<(), CloudInitError> {
    let max_prefix = if input.address.is_ipv4() { 32 } else { 128 };
    if input.prefix_len > max_prefix {
        return Err(invalid(
            "prefix_len",
            format!("/{} is too long for {}", input.prefix_len, input.address),
        ));
    }
    if input.gateway.is_ipv4() != input.address.is_ipv4() {
        return Err(invalid(
            "gateway",
            format!(
                "{} and address {} are not the same IP family",
                input.gateway, input.address
            ),
        ));
    }
    if input.gateway == input.address {
        return Err(invalid(
            "gateway",
            format!("{} is the VM's own address", input.gateway),
        ));
    }
    if let Some(mac) = &input.mac {
        normalize_mac(mac)?;
    }
    if let Some(mtu) = input.mtu {
        let minimum = if input.address.is_ipv4() { 576 } else { 1280 };
        if mtu < minimum {
            return Err(invalid(
                "mtu",
                format!("{mtu} is below the minimum of {minimum}"),
            ));
        }
    }
    if let Some(domain) = &input.search_domain {
        let valid = !domain.is_empty()
            && domain
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-.".contains(&byte));
        if !valid {
            return Err(invalid(
                "search_domain",
                format!("{domain:?} is not a domain name"),
            ));
        }
    }
    Ok(())
}

pub(crate) fn render(
    templates: &Templates,
    input: &SeedInput<'_>,
) -> Result<String, CloudInitError> {
    let mac = input.mac.as_deref().map(normalize_mac).transpose()?;
    let interface = if mac.is_some() {
        RENAMED_INTERFACE
    } else {
        PROXMOX_FIRST_NIC
    };
    // See the template for why the default route is a `gateway4`/`gateway6` key.
    let gateway_key = match input.address {
        IpAddr::V4(_) => "gateway4",
        IpAddr::V6(_) => "gateway6",
    };
    let dns: Vec<String> = input.dns.iter().map(ToString::to_string).collect();
    let search: Vec<&str> = input.search_domain.iter().map(String::as_str).collect();
    templates.render_yaml(
        templates::NETWORK_CONFIG,
        context! {
            interface => interface,
            mac => mac,
            address => format!("{}/{}", input.address, input.prefix_len),
            gateway_key => gateway_key,
            gateway => input.gateway.to_string(),
            mtu => input.mtu,
            dns => dns,
            search => search,
        },
    )
}

/// `BC:24:11:2A:00:15` or `bc-24-…` → `bc:24:11:2a:00:15`.
pub(crate) fn normalize_mac(mac: &str) -> Result<String, CloudInitError> {
    let octets: Vec<&str> = mac.split([':', '-']).collect();
    let valid = octets.len() == 6
        && octets
            .iter()
            .all(|octet| octet.len() == 2 && octet.bytes().all(|byte| byte.is_ascii_hexdigit()));
    if !valid {
        return Err(invalid("mac", format!("{mac:?} is not a MAC address")));
    }
    Ok(octets.join(":").to_ascii_lowercase())
}

fn invalid(field: &'static str, message: String) -> CloudInitError {
    CloudInitError::InvalidInput { field, message }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::build_seed;
    use super::super::test_support::{host_keys, input};
    use super::*;

    type Mutation = Box<dyn Fn(&mut SeedInput<'_>)>;

    fn network(input: &SeedInput<'_>) -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(&build_seed(input).unwrap().network_config).unwrap()
    }

    #[test]
    fn static_v4_matched_by_mac() {
        let keys = host_keys();
        let document = network(&input(&keys));
        assert_eq!(document["version"].as_u64(), Some(2));
        let eth = &document["ethernets"]["eth0"];
        assert_eq!(
            eth["match"]["macaddress"].as_str(),
            Some("bc:24:11:2a:00:15")
        );
        assert_eq!(eth["set-name"].as_str(), Some("eth0"));
        assert_eq!(eth["addresses"][0].as_str(), Some("10.0.0.21/24"));
        assert_eq!(eth["gateway4"].as_str(), Some("10.0.0.1"));
        assert!(eth.get("gateway6").is_none());
        assert_eq!(eth["mtu"].as_u64(), Some(9000));
        assert_eq!(eth["dhcp4"].as_bool(), Some(false));
        assert_eq!(eth["nameservers"]["addresses"][1].as_str(), Some("1.1.1.1"));
        assert_eq!(
            eth["nameservers"]["search"][0].as_str(),
            Some("lab.example")
        );
    }

    #[test]
    fn without_mac_targets_the_first_proxmox_nic() {
        let keys = host_keys();
        let mut input = input(&keys);
        input.mac = None;
        input.mtu = None;
        input.dns.clear();
        input.search_domain = None;
        let document = network(&input);
        let eth = &document["ethernets"]["ens18"];
        assert_eq!(eth["match"]["name"].as_str(), Some("e*"));
        assert!(eth.get("set-name").is_none());
        assert!(eth.get("mtu").is_none());
        assert!(eth.get("nameservers").is_none());
    }

    #[test]
    fn static_v6() {
        let keys = host_keys();
        let mut input = input(&keys);
        input.address = "fd00::21".parse().unwrap();
        input.prefix_len = 64;
        input.gateway = "fd00::1".parse().unwrap();
        input.dns = vec!["fd00::2".parse().unwrap()];
        let document = network(&input);
        let eth = &document["ethernets"]["eth0"];
        assert_eq!(eth["addresses"][0].as_str(), Some("fd00::21/64"));
        assert_eq!(eth["gateway6"].as_str(), Some("fd00::1"));
        assert!(eth.get("gateway4").is_none());
        assert_eq!(eth["nameservers"]["addresses"][0].as_str(), Some("fd00::2"));
    }

    #[test]
    fn bad_network_inputs_are_refused() {
        let keys = host_keys();
        let cases: Vec<(&str, Mutation)> = vec![
            ("prefix_len", Box::new(|i| i.prefix_len = 33)),
            (
                "gateway",
                Box::new(|i| i.gateway = "fd00::1".parse().unwrap()),
            ),
            ("gateway", Box::new(|i| i.gateway = i.address)),
            ("mac", Box::new(|i| i.mac = Some("bc:24:11".to_owned()))),
            ("mtu", Box::new(|i| i.mtu = Some(100))),
            (
                "search_domain",
                Box::new(|i| i.search_domain = Some("a b".to_owned())),
            ),
        ];
        for (field, mutate) in cases {
            let mut bad = input(&keys);
            mutate(&mut bad);
            match build_seed(&bad) {
                Err(CloudInitError::InvalidInput { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: expected InvalidInput, got {other:?}"),
            }
        }
    }

    #[test]
    fn mac_forms_normalize() {
        assert_eq!(
            normalize_mac("BC-24-11-2A-00-15").unwrap(),
            "bc:24:11:2a:00:15"
        );
        assert!(normalize_mac("bc:24:11:2a:00:1g").is_err());
    }
}
