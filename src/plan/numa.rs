//! Host CPU lists and NUMA capacity: which host cores and hugepages a pinned VM gets.

use std::collections::BTreeSet;

/// Parse a Linux cpulist (`0-31,64-95`) or Proxmox cpuset (`0,5,8-11`).
pub fn parse_cpulist(list: &str) -> Option<BTreeSet<u32>> {
    let mut cpus = BTreeSet::new();
    for part in list
        .split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part.split_once('-') {
            Some((first, last)) => {
                let first: u32 = first.trim().parse().ok()?;
                let last: u32 = last.trim().parse().ok()?;
                if last < first {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => {
                cpus.insert(part.parse().ok()?);
            }
        }
    }
    Some(cpus)
}

/// Render CPUs as a compact list (`0-7,64-71`).
pub fn format_cpulist(cpus: &BTreeSet<u32>) -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &cpu in cpus {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == cpu => *last = cpu,
            _ => ranges.push((cpu, cpu)),
        }
    }
    ranges
        .iter()
        .map(|&(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
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
