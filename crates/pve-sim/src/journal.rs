//! The state file as a snapshot plus an append-only journal, so a save writes what changed, not
//! the whole cluster. The state is cut into entries (one per VM, volume, task, mapping, pool,
//! and one `meta` entry for everything else); a save appends one line per entry that changed or
//! went away to `<state file>.journal`, and fsyncs it. The first save of a process, a clean stop,
//! and a journal grown past the snapshot's size write a new snapshot instead (atomically, see
//! [`crate::persist::write_atomically`]) and start a new journal.
//!
//! Crash consistency: the snapshot carries a generation number and the journal's first line
//! names the generation it extends; a journal of another generation (a crash between a new
//! snapshot and its new journal) is ignored, and a torn last line (a crash mid-append) ends the
//! replay. Every line sets or removes a whole entry, so replaying yields the state as of the
//! last complete save.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// Sections of the state kept as one entry per key.
const MAPS: [&str; 4] = ["vms", "volumes", "mappings", "pools"];
/// The section kept as one entry per task (by UPID), in order.
const TASKS: &str = "tasks";
/// Where the snapshot keeps its generation.
const GENERATION: &str = "journal_generation";
/// A journal smaller than this never forces a snapshot.
const MIN_JOURNAL_BYTES: u64 = 256 * 1024;

/// `state.json` → `state.json.journal`.
pub(crate) fn journal_path(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// The state's entries, in the state's order: `vms/101`, `volumes/pve1/local:iso/a.iso`,
/// `tasks/UPID:…`, …, and `meta`.
fn entries(state: &Value) -> Vec<(String, String)> {
    let Some(object) = state.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut meta = Map::new();
    for (section, value) in object {
        match (section.as_str(), value) {
            (section, Value::Object(map)) if MAPS.contains(&section) => {
                for (key, entry) in map {
                    out.push((format!("{section}/{key}"), entry.to_string()));
                }
            }
            (TASKS, Value::Array(tasks)) => {
                for task in tasks {
                    let upid = task["upid"].as_str().unwrap_or_default();
                    out.push((format!("{TASKS}/{upid}"), task.to_string()));
                }
            }
            (section, value) => {
                meta.insert(section.to_owned(), value.clone());
            }
        }
    }
    out.push(("meta".to_owned(), Value::Object(meta).to_string()));
    out
}

/// Applies one journal line (`{"k": key, "v": entry or null}`) to a snapshot's value.
fn apply(state: &mut Value, key: &str, entry: Option<Value>) {
    let Some(object) = state.as_object_mut() else {
        return;
    };
    if key == "meta" {
        if let Some(Value::Object(meta)) = entry {
            object.retain(|section, _| MAPS.contains(&section.as_str()) || section == TASKS);
            object.extend(meta);
        }
        return;
    }
    let Some((section, id)) = key.split_once('/') else {
        return;
    };
    if section == TASKS {
        let tasks = object
            .entry(TASKS)
            .or_insert_with(|| Value::Array(Vec::new()));
        let Some(tasks) = tasks.as_array_mut() else {
            return;
        };
        let position = tasks.iter().position(|t| t["upid"] == id);
        match (position, entry) {
            (Some(index), Some(task)) => tasks[index] = task,
            (None, Some(task)) => tasks.push(task),
            (Some(index), None) => {
                tasks.remove(index);
            }
            (None, None) => {}
        }
    } else if MAPS.contains(&section) {
        let map = object
            .entry(section)
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(map) = map.as_object_mut() else {
            return;
        };
        match entry {
            Some(entry) => {
                map.insert(id.to_owned(), entry);
            }
            None => {
                map.remove(id);
            }
        }
    }
}

/// Reads the snapshot at `path` and replays its journal: the state as of the last complete
/// save. `None` when there is no snapshot.
pub(crate) fn read(path: &Path) -> std::io::Result<Option<Result<Value, serde_json::Error>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut state: Value = match serde_json::from_str(&text) {
        Ok(state) => state,
        Err(error) => return Ok(Some(Err(error))),
    };
    let generation = state
        .as_object_mut()
        .and_then(|o| o.remove(GENERATION))
        .and_then(|g| g.as_u64());
    let journal = match std::fs::read_to_string(journal_path(path)) {
        Ok(journal) => journal,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error),
    };
    let mut lines = journal.lines();
    let header: Option<Value> = lines.next().and_then(|l| serde_json::from_str(l).ok());
    if generation.is_some() && header.and_then(|h| h["generation"].as_u64()) == generation {
        for line in lines {
            // A line cut short by a crash ends the replay.
            let Ok(Value::Object(mut record)) = serde_json::from_str::<Value>(line) else {
                break;
            };
            let (Some(Value::String(key)), entry) = (record.remove("k"), record.remove("v")) else {
                break;
            };
            apply(&mut state, &key, entry.filter(|v| !v.is_null()));
        }
    }
    Ok(Some(Ok(state)))
}

/// What one save wrote.
pub(crate) enum Saved {
    Nothing,
    Journal(u64),
    Snapshot(u64),
}

/// The writer's side: what the files hold now.
pub(crate) struct Journal {
    snapshot: PathBuf,
    file: Option<File>,
    generation: u64,
    /// Every entry as last saved.
    persisted: BTreeMap<String, String>,
    journal_bytes: u64,
    snapshot_bytes: u64,
}

impl Journal {
    pub fn new(snapshot: PathBuf) -> Journal {
        Journal {
            snapshot,
            file: None,
            generation: 0,
            persisted: BTreeMap::new(),
            journal_bytes: 0,
            snapshot_bytes: 0,
        }
    }

    /// Saves `state` (the whole state as a value): the changed entries appended to the
    /// journal, or a new snapshot when `full`, when this process has not written one yet, or
    /// when the journal outgrew the snapshot.
    pub fn save(&mut self, mut state: Value, full: bool) -> std::io::Result<Saved> {
        let current = entries(&state);
        let mut lines = String::new();
        let mut seen = std::collections::BTreeSet::new();
        for (key, entry) in &current {
            seen.insert(key.as_str());
            if self.persisted.get(key) != Some(entry) {
                // `entry` is JSON already.
                lines.push_str(&format!(
                    "{{\"k\":{},\"v\":{entry}}}\n",
                    Value::from(key.as_str())
                ));
            }
        }
        for key in self.persisted.keys() {
            if !seen.contains(key.as_str()) {
                lines.push_str(&json!({ "k": key, "v": null }).to_string());
                lines.push('\n');
            }
        }
        let bytes = lines.len() as u64;
        let outgrown = self.journal_bytes + bytes > self.snapshot_bytes.max(MIN_JOURNAL_BYTES);
        if full || self.file.is_none() || outgrown {
            // Random: a journal left by any other snapshot never matches.
            let generation = loop {
                let candidate = rand::random::<u64>() >> 11;
                if candidate != self.generation {
                    break candidate;
                }
            };
            if let Some(object) = state.as_object_mut() {
                object.insert(GENERATION.to_owned(), json!(generation));
            }
            let snapshot = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
            crate::persist::write_atomically(&self.snapshot, &snapshot)?;
            let header = format!("{}\n", json!({ "generation": generation }));
            self.file = Some(crate::persist::write_atomically_keep(
                &journal_path(&self.snapshot),
                header.as_bytes(),
            )?);
            self.generation = generation;
            self.snapshot_bytes = snapshot.len() as u64;
            self.journal_bytes = header.len() as u64;
            self.persisted = current.into_iter().collect();
            return Ok(Saved::Snapshot(self.snapshot_bytes + self.journal_bytes));
        }
        if bytes == 0 {
            return Ok(Saved::Nothing);
        }
        if let Some(file) = self.file.as_mut() {
            file.write_all(lines.as_bytes())?;
            file.sync_data()?;
        }
        self.journal_bytes += bytes;
        self.persisted = current.into_iter().collect();
        Ok(Saved::Journal(bytes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn state(vms: &[(u32, &str)], tasks: &[&str]) -> Value {
        let vms: Map<String, Value> = vms
            .iter()
            .map(|(id, name)| (id.to_string(), json!({ "name": name })))
            .collect();
        let tasks: Vec<Value> = tasks.iter().map(|u| json!({ "upid": u })).collect();
        json!({ "secret": "s", "next_pid": 7, "vms": vms, "volumes": {}, "tasks": tasks,
                "mappings": {}, "pools": {} })
    }

    #[test]
    fn a_change_appends_only_its_entry_and_replay_gives_the_saved_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut journal = Journal::new(path.clone());
        let many: Vec<(u32, String)> = (0..200).map(|n| (n, format!("vm-{n:04}"))).collect();
        let many: Vec<(u32, &str)> = many.iter().map(|(n, s)| (*n, s.as_str())).collect();
        let first = state(&many, &["a", "b"]);
        let Saved::Snapshot(full) = journal.save(first, false).unwrap() else {
            panic!("the first save writes a snapshot");
        };
        let mut changed = many.clone();
        changed[7].1 = "renamed";
        changed.remove(9);
        let second = state(&changed, &["a", "b", "c"]);
        let Saved::Journal(appended) = journal.save(second.clone(), false).unwrap() else {
            panic!("a small change is appended");
        };
        // One VM changed, one removed, one task added: three short lines.
        assert!(appended < 200, "{appended} bytes appended");
        assert!(full > 20 * appended, "{full} vs {appended}");
        assert!(matches!(
            journal.save(second.clone(), false).unwrap(),
            Saved::Nothing
        ));
        assert_eq!(read(&path).unwrap().unwrap().unwrap(), second);

        // A torn last line (a crash mid-append) is ignored.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(journal_path(&path))
            .unwrap();
        file.write_all(b"{\"k\":\"vms/1\",\"v\":{\"na").unwrap();
        assert_eq!(read(&path).unwrap().unwrap().unwrap(), second);

        // A clean stop writes a snapshot and an empty journal.
        let Saved::Snapshot(_) = journal.save(second.clone(), true).unwrap() else {
            panic!("a full save writes a snapshot");
        };
        assert_eq!(read(&path).unwrap().unwrap().unwrap(), second);
    }

    #[test]
    fn a_journal_of_another_generation_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut journal = Journal::new(path.clone());
        let first = state(&[(1, "one")], &[]);
        journal.save(first.clone(), false).unwrap();
        journal.save(state(&[(1, "uno")], &[]), false).unwrap();
        let old_journal = std::fs::read(journal_path(&path)).unwrap();
        // A crash after the next snapshot, before its journal: the old journal stays.
        let mut next = Journal::new(path.clone());
        let newer = state(&[(1, "eins")], &[]);
        next.save(newer.clone(), false).unwrap();
        std::fs::write(journal_path(&path), old_journal).unwrap();
        assert_eq!(read(&path).unwrap().unwrap().unwrap(), newer);
    }
}
