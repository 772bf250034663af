//! Host CPU lists and NUMA capacity: which host cores and hugepages a pinned VM gets.

use std::collections::BTreeSet;

use crate::pve::cpulist::CpuList;

/// Parse a Linux cpulist (`0-31,64-95`) or Proxmox cpuset (`0,5,8-11`).
pub fn parse_cpulist(list: &str) -> Option<BTreeSet<u32>> {
    CpuList::parse(list).ok().map(CpuList::into_set)
}

/// Render CPUs as a compact list (`0-7,64-71`).
pub fn format_cpulist(cpus: &BTreeSet<u32>) -> String {
    CpuList::from(cpus.clone()).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cpulist_round_trips() {
        let cpus = parse_cpulist("0-3,8,10-11").unwrap();
        assert_eq!(cpus.len(), 7);
        assert_eq!(format_cpulist(&cpus), "0-3,8,10-11");
        assert!(parse_cpulist("3-1").is_none());
        assert!(parse_cpulist("x").is_none());
    }
}
