//! Host CPU lists: the one parser and printer of `0-31,64-95` (a Linux cpulist, a profile's
//! NUMA `cpus`, Proxmox's `affinity`) and of the `;`-separated lists inside property strings
//! (`numaN: cpus=0-7;16-23`, `hostnodes=0;1`).
//!
//! Grammar, as Proxmox's: items `ID` or `FIRST-LAST` (decimal digits only, `FIRST <= LAST`),
//! no empty item. [`ListSyntax::CpuSet`] is the `pve-cpuset` format (`PVE::CpuSet`): `,` between
//! items, blanks around an item allowed. [`ListSyntax::Property`] is the numa `cpus` pattern
//! `\d+(?:-\d+)?(?:;\d+(?:-\d+)?)*`: `;` between items, nothing else. A [`CpuList`] also
//! bounds ids by [`MAX_CPU_ID`] (Proxmox's limit).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The highest CPU id Proxmox accepts in a CPU set.
pub const MAX_CPU_ID: u32 = 8191;

/// Why a list does not parse: names the list and the offending item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{list}` is not a CPU list (at `{item}`){}", problem.suffix())]
pub struct CpuListError {
    pub list: String,
    pub item: String,
    pub problem: CpuListProblem,
}

/// What is wrong with the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuListProblem {
    /// Not `ID` or `FIRST-LAST` in decimal digits (an empty item included).
    Malformed,
    /// `FIRST-LAST` with `LAST < FIRST`.
    Reversed,
    /// An id above [`MAX_CPU_ID`].
    TooLarge,
}

impl CpuListProblem {
    fn suffix(self) -> String {
        match self {
            CpuListProblem::Malformed => String::new(),
            CpuListProblem::Reversed => ": a range ends before it starts".to_owned(),
            CpuListProblem::TooLarge => format!(": CPU ids end at {MAX_CPU_ID}"),
        }
    }
}

/// The two spellings of an id list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListSyntax {
    /// `0-7, 16` (`pve-cpuset`, a Linux cpulist): printed `0-7,16`.
    CpuSet,
    /// `0-7;16`, inside a property string.
    Property,
}

impl ListSyntax {
    fn separator(self) -> char {
        match self {
            ListSyntax::CpuSet => ',',
            ListSyntax::Property => ';',
        }
    }
}

/// One item of a list: `ID` (`None`) or `FIRST-LAST`, kept as written.
pub type ListItem = (u32, Option<u32>);

/// Parses `text` as items in `syntax`, in the order written, ids up to `max_id`. The shared
/// grammar of [`CpuList`] and the property-string id lists.
pub fn parse_items(
    text: &str,
    syntax: ListSyntax,
    max_id: u32,
) -> Result<Vec<ListItem>, CpuListError> {
    text.split(syntax.separator())
        .map(|written| {
            let item = match syntax {
                ListSyntax::CpuSet => written.trim(),
                ListSyntax::Property => written,
            };
            let error = |problem| CpuListError {
                list: text.to_owned(),
                item: written.to_owned(),
                problem,
            };
            let number = |digits: &str| -> Result<u32, CpuListError> {
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(error(CpuListProblem::Malformed));
                }
                let id: u32 = digits
                    .parse()
                    .map_err(|_| error(CpuListProblem::TooLarge))?;
                if id > max_id {
                    return Err(error(CpuListProblem::TooLarge));
                }
                Ok(id)
            };
            match item.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (number(first)?, number(last)?);
                    if last < first {
                        return Err(error(CpuListProblem::Reversed));
                    }
                    Ok((first, Some(last)))
                }
                None => Ok((number(item)?, None)),
            }
        })
        .collect()
}

/// Prints items as written, in `syntax`.
pub fn format_items(items: &[ListItem], syntax: ListSyntax) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|(first, last)| match last {
            Some(last) => format!("{first}-{last}"),
            None => first.to_string(),
        })
        .collect();
    parts.join(&syntax.separator().to_string())
}

/// A set of host CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuList(BTreeSet<u32>);

impl CpuList {
    /// Parses a `,`-separated list (`0-31,64-95`: Linux cpulist, `pve-cpuset`).
    pub fn parse(text: &str) -> Result<Self, CpuListError> {
        Self::parse_with(text, ListSyntax::CpuSet)
    }

    /// Parses a list in `syntax`.
    pub fn parse_with(text: &str, syntax: ListSyntax) -> Result<Self, CpuListError> {
        Ok(parse_items(text, syntax, MAX_CPU_ID)?
            .into_iter()
            .flat_map(|(first, last)| first..=last.unwrap_or(first))
            .collect())
    }

    /// Canonical ranges in `syntax`: ascending, adjacent ids merged (`0-7,64-71`).
    pub fn format_with(&self, syntax: ListSyntax) -> String {
        format_items(&self.ranges(), syntax)
    }

    /// The set as maximal ascending ranges (`(7, None)` for a single id).
    pub fn ranges(&self) -> Vec<ListItem> {
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for &cpu in &self.0 {
            match ranges.last_mut() {
                Some((_, last)) if last.checked_add(1) == Some(cpu) => *last = cpu,
                Some(_) | None => ranges.push((cpu, cpu)),
            }
        }
        ranges
            .into_iter()
            .map(|(first, last)| (first, (first != last).then_some(last)))
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    pub fn as_set(&self) -> &BTreeSet<u32> {
        &self.0
    }

    pub fn into_set(self) -> BTreeSet<u32> {
        self.0
    }
}

impl FromIterator<u32> for CpuList {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        CpuList(iter.into_iter().collect())
    }
}

impl From<BTreeSet<u32>> for CpuList {
    fn from(cpus: BTreeSet<u32>) -> Self {
        CpuList(cpus)
    }
}

impl FromStr for CpuList {
    type Err = CpuListError;
    fn from_str(text: &str) -> Result<Self, CpuListError> {
        CpuList::parse(text)
    }
}

/// The canonical `,` form.
impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format_with(ListSyntax::CpuSet))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonical_ranges() {
        let cpus = CpuList::parse("8,0-3,10-11,2").unwrap();
        assert_eq!(cpus.len(), 7);
        assert_eq!(cpus.to_string(), "0-3,8,10-11");
        assert_eq!(cpus.format_with(ListSyntax::Property), "0-3;8;10-11");
        assert_eq!(cpus.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert!(cpus.contains(8) && !cpus.contains(9));
        let numa = CpuList::parse_with("0-7;16-23", ListSyntax::Property).unwrap();
        assert_eq!(numa.to_string(), "0-7,16-23");
        // pve-cpuset allows blanks around an item; the property syntax does not.
        assert_eq!(CpuList::parse(" 0-3 , 8").unwrap().to_string(), "0-3,8");
        assert!(CpuList::parse_with("0-3; 8", ListSyntax::Property).is_err());
        assert_eq!(CpuList::parse("8191").unwrap().to_string(), "8191");
        assert_eq!(CpuList::default().to_string(), "");
    }

    #[test]
    fn errors_name_the_item() {
        let error = |text: &str| CpuList::parse(text).unwrap_err().to_string();
        assert_eq!(error("0-15,,32"), "`0-15,,32` is not a CPU list (at ``)");
        assert_eq!(error("x"), "`x` is not a CPU list (at `x`)");
        assert_eq!(error("+5"), "`+5` is not a CPU list (at `+5`)");
        assert_eq!(error("0,1 2"), "`0,1 2` is not a CPU list (at `1 2`)");
        assert_eq!(
            error("3-1"),
            "`3-1` is not a CPU list (at `3-1`): a range ends before it starts"
        );
        assert_eq!(
            error("0-8192"),
            "`0-8192` is not a CPU list (at `0-8192`): CPU ids end at 8191"
        );
        assert_eq!(
            CpuList::parse("99999999999").unwrap_err().problem,
            CpuListProblem::TooLarge
        );
        assert!(CpuList::parse("").is_err());
        assert!(CpuList::parse("0-3;4").is_err());
    }

    #[test]
    fn items_keep_their_written_form() {
        let items = parse_items("7-7;1;0-3", ListSyntax::Property, u32::MAX).unwrap();
        assert_eq!(items, vec![(7, Some(7)), (1, None), (0, Some(3))]);
        assert_eq!(format_items(&items, ListSyntax::Property), "7-7;1;0-3");
    }

    proptest::proptest! {
        #[test]
        fn canonical_form_round_trips(cpus in proptest::collection::btree_set(0u32..=MAX_CPU_ID, 0..64)) {
            let list = CpuList::from(cpus.clone());
            let text = list.to_string();
            if cpus.is_empty() {
                proptest::prop_assert!(CpuList::parse(&text).is_err());
            } else {
                proptest::prop_assert_eq!(CpuList::parse(&text).unwrap().into_set(), cpus);
            }
        }
    }
}
