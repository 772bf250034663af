//! Linux cpulists (`0-31,64-95`) as the NUMA topology writes them.

use super::formats::is_number;

/// Parses a Linux cpulist (`0-31,64-95`) into the CPUs it names.
pub fn parse_cpulist(list: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let bad = || format!("`{list}` is not a CPU list (at `{part}`)");
        let (low, high) = match part.split_once('-') {
            Some((low, high)) => (low, high),
            None => (part, part),
        };
        if !is_number(low) || !is_number(high) {
            return Err(bad());
        }
        let low: u32 = low.parse().map_err(|_| bad())?;
        let high: u32 = high.parse().map_err(|_| bad())?;
        if high < low || high > 8191 {
            return Err(bad());
        }
        cpus.extend(low..=high);
    }
    Ok(cpus)
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
