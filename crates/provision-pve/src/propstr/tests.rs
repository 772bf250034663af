//! Property-string tests: what Proxmox prints parses, malformed strings are refused, and every
//! typed format round-trips (proptest).

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::*;
use proptest::prelude::*;

#[test]
fn parses_default_key_and_semicolon_lists() {
    let pci = HostPci::parse("0000:41:00,pcie=1").unwrap();
    assert_eq!(
        pci.host_or_mapping,
        HostPciSource::Host(vec!["0000:41:00".to_owned()])
    );
    assert_eq!(pci.pcie, Some(true));
    assert_eq!(pci.render(), "0000:41:00,pcie=1");
    assert_eq!(HostPci::mapping("a100-0").render(), "mapping=a100-0,pcie=1");
    let two = HostPci::parse("host=0000:41:00;0000:42:00,x-vga=1").unwrap();
    assert_eq!(two.render(), "0000:41:00;0000:42:00,x-vga=1");

    let numa = Numa::parse("cpus=0-7;16-23,hostnodes=0,memory=65536,policy=bind").unwrap();
    assert_eq!(numa.cpus, IdList(vec![(0, Some(7)), (16, Some(23))]));
    assert_eq!(numa.policy, Some(NumaPolicy::Bind));
    assert_eq!(
        numa.render(),
        "cpus=0-7;16-23,hostnodes=0,memory=65536,policy=bind"
    );

    let cpu = Cpu::parse("host,flags=+pdpe1gb;+aes").unwrap();
    assert_eq!(cpu.flags.len(), 2);
    assert_eq!(cpu.render(), "host,flags=+pdpe1gb;+aes");
}

#[test]
fn parses_what_proxmox_prints() {
    let net = Net::parse("virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1").unwrap();
    assert_eq!(net.model, "virtio");
    assert_eq!(net.macaddr.as_deref(), Some("BC:24:11:AA:BB:CC"));
    assert_eq!(
        net.render(),
        "virtio,macaddr=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1"
    );
    let disk = Disk::parse("local-lvm:vm-120-disk-1,iothread=1,size=500G").unwrap();
    assert_eq!(disk.size.as_deref(), Some("500G"));
    let efi = EfiDisk::parse("local-lvm:vm-120-disk-0,efitype=4m,size=4M").unwrap();
    assert_eq!(efi.extra, vec![("size".to_owned(), "4M".to_owned())]);
    assert!(EfiDisk::parse("local-lvm:1,efitype=8m").is_err());
    let agent = Agent::parse("1,fstrim_cloned_disks=1").unwrap();
    assert!(agent.enabled);
    let ip = IpConfig::parse("ip=10.0.0.21/24,gw=10.0.0.1").unwrap();
    assert_eq!(ip.render(), "ip=10.0.0.21/24,gw=10.0.0.1");
}

#[test]
fn rejects_malformed_strings() {
    assert!(matches!(
        Numa::parse("0-7"),
        Err(PropStrError::NoDefaultKey { .. })
    ));
    assert!(matches!(
        HostPci::parse("0000:41:00,0000:42:00"),
        Err(PropStrError::TwoDefaults { .. })
    ));
    assert!(matches!(
        Disk::parse("local:1,,ssd=1"),
        Err(PropStrError::EmptyPart { .. })
    ));
    assert!(matches!(
        Disk::parse("local:1,ssd=1,ssd=0"),
        Err(PropStrError::DuplicateKey { .. })
    ));
    assert!(matches!(
        Disk::parse("local:1,ssd=maybe"),
        Err(PropStrError::BadValue { .. })
    ));
    assert!(Numa::parse("cpus=7-0").is_err());
    assert!(Net::parse("model=tulip").is_err());
    assert!(IpConfig::parse("ip=10.0.0.300/24").is_err());
    assert!(HostPci::parse("pcie=1").is_err());
}

fn token() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.-]{0,12}"
}

fn value() -> impl Strategy<Value = String> {
    "[A-Za-z0-9:/._+-][A-Za-z0-9:/._+;-]{0,20}"
}

fn extra() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::btree_map(token().prop_map(|key| format!("zz{key}")), value(), 0..3)
        .prop_map(|map| map.into_iter().collect())
}

fn id_list() -> impl Strategy<Value = IdList> {
    proptest::collection::vec(
        (0u32..512, proptest::option::of(0u32..512))
            .prop_map(|(start, len)| (start, len.map(|len| start + len))),
        1..4,
    )
    .prop_map(IdList)
}

prop_compose! {
    fn host_pci()(
        source in prop_oneof![
            proptest::collection::vec("[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}(\\.[0-7])?", 1..3)
                .prop_map(HostPciSource::Host),
            token().prop_map(HostPciSource::Mapping),
        ],
        pcie in proptest::option::of(any::<bool>()),
        rombar in proptest::option::of(any::<bool>()),
        x_vga in proptest::option::of(any::<bool>()),
        extra in extra(),
    ) -> HostPci {
        HostPci { host_or_mapping: source, pcie, rombar, x_vga, extra }
    }
}

prop_compose! {
    fn numa()(
        cpus in id_list(),
        hostnodes in proptest::option::of(id_list()),
        memory in proptest::option::of(any::<u64>()),
        policy in proptest::option::of(prop_oneof![
            Just(NumaPolicy::Preferred), Just(NumaPolicy::Bind), Just(NumaPolicy::Interleave)
        ]),
        extra in extra(),
    ) -> Numa {
        Numa { cpus, hostnodes, memory, policy, extra }
    }
}

prop_compose! {
    fn disk()(
        file in value(),
        import_from in proptest::option::of(value()),
        format in proptest::option::of(token()),
        size in proptest::option::of("[0-9]{1,4}[KMGT]"),
        cache in proptest::option::of(token()),
        discard in proptest::option::of(prop_oneof![Just("on".to_owned()), Just("ignore".to_owned())]),
        iothread in proptest::option::of(any::<bool>()),
        ssd in proptest::option::of(any::<bool>()),
        extra in extra(),
    ) -> Disk {
        Disk { file, import_from, format, size, cache, discard, iothread, ssd, extra }
    }
}

prop_compose! {
    fn efi_disk()(
        file in value(),
        efitype in proptest::option::of(prop_oneof![Just("2m".to_owned()), Just("4m".to_owned())]),
        pre_enrolled_keys in proptest::option::of(any::<bool>()),
        format in proptest::option::of(token()),
        extra in extra(),
    ) -> EfiDisk {
        EfiDisk { file, efitype, pre_enrolled_keys, format, extra }
    }
}

prop_compose! {
    fn net()(
        model in proptest::sample::select(NIC_MODELS).prop_map(str::to_owned),
        macaddr in proptest::option::of("([0-9A-F]{2}:){5}[0-9A-F]{2}"),
        bridge in proptest::option::of("vmbr[0-9]{1,2}"),
        tag in proptest::option::of(1u16..4095),
        firewall in proptest::option::of(any::<bool>()),
        mtu in proptest::option::of(576u16..9001),
        queues in proptest::option::of(0u8..65),
        extra in extra(),
    ) -> Net {
        Net { model, macaddr, bridge, tag, firewall, mtu, queues, extra }
    }
}

prop_compose! {
    fn ip_config()(
        ip in proptest::option::of(prop_oneof![
            Just(Ipv4Setting::Dhcp),
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(octets, prefix)| {
                Ipv4Setting::Static(Ipv4Network::new(Ipv4Addr::from(octets), prefix).unwrap())
            }),
        ]),
        gw in proptest::option::of(any::<[u8; 4]>().prop_map(Ipv4Addr::from)),
        ip6 in proptest::option::of(prop_oneof![
            Just(Ipv6Setting::Dhcp),
            Just(Ipv6Setting::Auto),
            (any::<[u16; 8]>(), 0u8..=128).prop_map(|(segments, prefix)| {
                Ipv6Setting::Static(Ipv6Network::new(Ipv6Addr::from(segments), prefix).unwrap())
            }),
        ]),
        gw6 in proptest::option::of(any::<[u16; 8]>().prop_map(Ipv6Addr::from)),
    ) -> IpConfig {
        IpConfig { ip, gw, ip6, gw6 }
    }
}

prop_compose! {
    fn cpu()(
        cputype in token(),
        flags in proptest::collection::vec(
            (any::<bool>(), "[a-z0-9_]{1,10}").prop_map(|(enabled, name)| CpuFlag { enabled, name }),
            0..4,
        ),
        hidden in proptest::option::of(any::<bool>()),
        extra in extra(),
    ) -> Cpu {
        Cpu { cputype, flags, hidden, extra }
    }
}

prop_compose! {
    fn agent()(
        enabled in any::<bool>(),
        fstrim_cloned_disks in proptest::option::of(any::<bool>()),
        kind in proptest::option::of(prop_oneof![Just("virtio".to_owned()), Just("isa".to_owned())]),
        extra in extra(),
    ) -> Agent {
        Agent { enabled, fstrim_cloned_disks, kind, extra }
    }
}

proptest! {
    #[test]
    fn host_pci_round_trips(x in host_pci()) {
        prop_assert_eq!(HostPci::parse(&x.render()).unwrap(), x);
    }

    #[test]
    fn numa_round_trips(x in numa()) {
        prop_assert_eq!(Numa::parse(&x.render()).unwrap(), x);
    }

    #[test]
    fn disk_round_trips(x in disk()) {
        prop_assert_eq!(Disk::parse(&x.render()).unwrap(), x);
    }

    #[test]
    fn efi_disk_round_trips(x in efi_disk()) {
        prop_assert_eq!(EfiDisk::parse(&x.render()).unwrap(), x);
    }

    #[test]
    fn net_round_trips(x in net()) {
        prop_assert_eq!(Net::parse(&x.render()).unwrap(), x);
    }

    #[test]
    fn ip_config_round_trips(x in ip_config()) {
        prop_assert_eq!(IpConfig::parse(&x.render()).unwrap(), x);
    }

    #[test]
    fn cpu_round_trips(x in cpu()) {
        prop_assert_eq!(Cpu::parse(&x.render()).unwrap(), x);
    }

    #[test]
    fn agent_round_trips(x in agent()) {
        prop_assert_eq!(Agent::parse(&x.render()).unwrap(), x);
    }

    #[test]
    fn generic_round_trips(
        default in proptest::option::of(value()),
        entries in proptest::collection::btree_map(token(), value(), 0..5),
    ) {
        let mut p = PropertyString::default();
        if let Some(default) = &default { p.push("zzdefault", default.clone()); }
        for (key, value) in entries { p.push(&key, value); }
        prop_assume!(!p.entries.is_empty());
        let text = p.render(Some("zzdefault"));
        prop_assert_eq!(PropertyString::parse(&text, Some("zzdefault")).unwrap(), p);
    }
}
