//! Linux cpulists (`0-31,64-95`) as the NUMA topology writes them.

/// Parses a Linux cpulist (`0-31,64-95`) into the CPUs it names, ascending.
pub fn parse_cpulist(list: &str) -> Result<Vec<u32>, String> {
    crate::pve::cpulist::CpuList::parse(list)
        .map(|cpus| cpus.iter().collect())
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists() {
        assert_eq!(parse_cpulist("0-2,8").ok(), Some(vec![0, 1, 2, 8]));
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("0,,1").is_err());
    }
}
