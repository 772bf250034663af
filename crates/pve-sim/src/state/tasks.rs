//! Tasks: what each does when it completes (the *finish* part of a mutating operation) and how
//! a failed one rolls the *begin* part back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::guest;
use crate::propstring;

use super::{
    Event, PowerState, State, Volume, base_name, durations, find_volume_mut, format_size,
    is_disk_key, now_ms, set_entry, stop_vm, volume_has_feature, volume_key,
};

/// What a task does when it completes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum TaskAction {
    Create {
        vmid: u32,
    },
    Clone {
        source: u32,
        target: u32,
        /// The source ran when the clone began: its lock is held exclusively, not shared.
        #[serde(default)]
        exclusive: bool,
    },
    /// Convert a stopped VM to a template (`POST …/template`).
    Template {
        vmid: u32,
        /// Only this disk (`disk=`), else every disk.
        #[serde(default)]
        disk: Option<String>,
    },
    Start {
        vmid: u32,
    },
    Stop {
        vmid: u32,
    },
    Delete {
        vmid: u32,
    },
    Resize {
        vmid: u32,
        disk: String,
        bytes: u64,
    },
    Config {
        vmid: u32,
        changes: BTreeMap<String, Option<String>>,
    },
    AddVolume {
        volume: Box<Volume>,
    },
    DeleteVolume {
        key: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Task {
    pub upid: String,
    pub node: String,
    pub kind: String,
    pub id: String,
    pub user: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: u64,
    pub running: bool,
    #[serde(default)]
    pub exitstatus: Option<String>,
    /// When the task stopped (seconds since the epoch), for `GET /nodes/{node}/tasks`.
    #[serde(default)]
    pub endtime: Option<u64>,
    pub log: Vec<String>,
    pub due_ms: u64,
    #[serde(default)]
    pub held: bool,
    /// A failure decided when the task was accepted (start checks, injected failures).
    #[serde(default)]
    pub doomed: Option<String>,
    pub action: TaskAction,
    /// A `download-url` task: wget's progress lines, written as its bytes arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wget: Option<WgetProgress>,
}

/// What pve-common's `download_file_from_url` logs while `wget --progress=dot:giga` runs:
/// one row per 32 MiB received (a dot per MiB, a space every 8), ending with the percentage,
/// the rate and the time left, e.g. `  32768K ........ ........ ........ ........  7% 25.0M 12s`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WgetProgress {
    /// Log lines written before wget's rows (`downloading …`, `Length: …`, `Saving to: …`);
    /// the lines after them (checksum, `download of … finished`) appear once the task ends.
    pub prefix: usize,
    pub started_ms: u64,
    /// Wall-clock milliseconds the bytes take to cross the internet.
    pub wire_ms: u64,
    pub size: u64,
    /// Bytes per simulated second, for the rate column.
    pub rate: f64,
}

/// Bytes in one row of wget's `dot:giga` progress.
const WGET_ROW: u64 = 32 << 20;

impl WgetProgress {
    /// wget's rows for the bytes received by `now_ms`.
    fn rows(&self, now_ms: u64, finished: bool) -> Vec<String> {
        let received = if finished || self.wire_ms == 0 {
            self.size
        } else {
            let elapsed = now_ms.saturating_sub(self.started_ms).min(self.wire_ms);
            (self.size as f64 * elapsed as f64 / self.wire_ms as f64) as u64
        };
        let rate_mib = self.rate / f64::from(1u32 << 20);
        let mut rows = Vec::new();
        let mut offset = 0u64;
        while offset < received && offset < self.size {
            let row = WGET_ROW.min(self.size - offset);
            if offset + row > received {
                break;
            }
            let end = offset + row;
            let dots = row.div_ceil(1 << 20) as usize;
            let mut line = format!("{:>8}K", offset / 1024);
            // A short last row is padded to the full width, as wget does.
            for dot in 0..32 {
                if dot % 8 == 0 {
                    line.push(' ');
                }
                line.push(if dot < dots { '.' } else { ' ' });
            }
            let percent = end * 100 / self.size.max(1);
            let left = (self.size - end) as f64 / self.rate.max(1.0);
            line.push_str(&format!(
                " {percent:>3}% {rate_mib:.1}M {}s",
                left.round() as u64
            ));
            rows.push(line);
            offset = end;
        }
        rows
    }
}

impl Task {
    /// The task's log as `GET …/log` shows it at `now_ms`.
    pub(crate) fn log_lines(&self, now_ms: u64) -> Vec<String> {
        let Some(wget) = &self.wget else {
            return self.log.clone();
        };
        let prefix = wget.prefix.min(self.log.len());
        let mut lines = self.log[..prefix].to_vec();
        lines.extend(wget.rows(now_ms, !self.running));
        if !self.running {
            lines.extend_from_slice(&self.log[prefix..]);
        }
        lines
    }
}

pub(crate) struct TaskSpec {
    pub node: String,
    pub kind: String,
    pub id: String,
    pub user: String,
    pub seconds: f64,
    pub log: Vec<String>,
}

/// Finishes (or fails and rolls back) a running task.
pub(crate) fn complete(
    state: &mut State,
    upid: &str,
    failure: Option<String>,
    time_scale: f64,
) -> Vec<Event> {
    let Some(index) = state.tasks.iter().position(|t| t.upid == upid && t.running) else {
        return Vec::new();
    };
    let action = state.tasks[index].action.clone();
    let mut events = Vec::new();
    let outcome = match failure {
        Some(message) => {
            rollback(state, &action);
            Err(message)
        }
        None => finish(state, &action, time_scale, &mut events),
    };
    let task = &mut state.tasks[index];
    task.running = false;
    task.held = false;
    task.endtime = Some(now_ms() / 1000);
    match outcome {
        Ok(lines) => {
            task.log.extend(lines);
            task.log.push("TASK OK".to_owned());
            task.exitstatus = Some("OK".to_owned());
        }
        Err(message) => {
            task.log.push(message.clone());
            task.log.push(format!("TASK ERROR: {message}"));
            task.exitstatus = Some(message);
            events.clear();
        }
    }
    // The image now lives in its volume (or was refused): the finished task keeps no copy.
    if let TaskAction::AddVolume { volume } = &mut task.action {
        volume.data = None;
    }
    crate::persist::prune_finished_tasks(&mut state.tasks);
    events
}

fn finish(
    state: &mut State,
    action: &TaskAction,
    time_scale: f64,
    events: &mut Vec<Event>,
) -> Result<Vec<String>, String> {
    match action {
        TaskAction::Create { vmid } => {
            if let Some(vm) = state.vms.get_mut(vmid) {
                vm.config.remove("lock");
            }
            Ok(Vec::new())
        }
        TaskAction::Clone { source, target, .. } => {
            if let Some(vm) = state.vms.get_mut(target) {
                vm.config.remove("lock");
            }
            Ok(vec![format!("clone of VM {source} to {target} finished")])
        }
        TaskAction::Template { vmid, disk } => finish_template(state, *vmid, disk.as_deref()),
        TaskAction::Start { vmid } => finish_start(state, *vmid, time_scale, events),
        TaskAction::Stop { vmid } => {
            if let Some(vm) = state.vms.get_mut(vmid) {
                stop_vm(vm);
                events.push(Event::Stopped(vm.node.clone(), *vmid));
            }
            Ok(Vec::new())
        }
        TaskAction::Delete { vmid } => {
            if let Some(vm) = state.vms.remove(vmid) {
                let node = vm.node.clone();
                state.volumes.retain(|_, volume| {
                    !(volume.vmid == Some(*vmid)
                        && volume.content == "images"
                        && volume.node.as_deref().is_none_or(|n| n == node))
                });
            }
            Ok(vec![format!("destroyed VM {vmid}")])
        }
        TaskAction::Resize { vmid, disk, bytes } => finish_resize(state, *vmid, disk, *bytes),
        TaskAction::Config { vmid, changes } => {
            let Some(vm) = state.vms.get_mut(vmid) else {
                return Err(format!("VM {vmid} does not exist"));
            };
            for (key, value) in changes {
                match value {
                    Some(value) => {
                        vm.config.insert(key.clone(), value.clone());
                    }
                    None => {
                        vm.config.remove(key);
                    }
                }
            }
            Ok(Vec::new())
        }
        TaskAction::AddVolume { volume } => {
            let key = volume_key(volume.node.as_deref(), &volume.volid);
            state.volumes.insert(key, (**volume).clone());
            Ok(vec![format!("added volume {}", volume.volid)])
        }
        TaskAction::DeleteVolume { key } => {
            state.volumes.remove(key);
            Ok(Vec::new())
        }
    }
}

/// A start task ends: the VM runs, its guest boots [`durations::BOOT`] later, the backend hears
/// of it, and the seed's network config is kept for the agent.
fn finish_start(
    state: &mut State,
    vmid: u32,
    time_scale: f64,
    events: &mut Vec<Event>,
) -> Result<Vec<String>, String> {
    let Some(vm) = state.vms.get_mut(&vmid) else {
        return Err(format!("VM {vmid} does not exist"));
    };
    vm.starting = false;
    vm.power = PowerState::Running;
    let now = now_ms();
    vm.started_at_ms = Some(now);
    vm.booted_at_ms = Some(now + (durations::BOOT * time_scale * 1000.0) as u64);
    let snapshot = vm.clone();
    let boot = guest::boot_info(state, &snapshot);
    if let Some(network) = boot.seed.as_ref().and_then(|s| s.network_config.clone())
        && let Some(vm) = state.vms.get_mut(&vmid)
        && vm.guest_network_config.is_none()
    {
        vm.guest_network_config = Some(network);
    }
    events.push(Event::Started(Box::new(boot)));
    Ok(Vec::new())
}

/// A template conversion ends (qemu-server `template_create`): `template: 1`, and each disk
/// whose storage has the `template` feature renamed to its base volume; CD-ROMs and the
/// cloud-init drive (a CD-ROM to `drive_is_cdrom`) stay as they are.
fn finish_template(
    state: &mut State,
    vmid: u32,
    only: Option<&str>,
) -> Result<Vec<String>, String> {
    let Some(vm) = state.vms.get(&vmid) else {
        return Err(format!("VM {vmid} does not exist"));
    };
    let node = vm.node.clone();
    let mut config = vm.config.clone();
    let mut log = Vec::new();
    let disks: Vec<(String, String)> = vm
        .config
        .iter()
        .filter(|(key, _)| is_disk_key(key) && only.is_none_or(|only| only == key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    for (key, value) in disks {
        let Ok(mut entries) = propstring::parse(&value) else {
            continue;
        };
        if propstring::get(&entries, "media", None) == Some("cdrom") {
            continue;
        }
        let Some((storage, volname)) = entries
            .first()
            .and_then(|(_, file)| file.split_once(':'))
            .map(|(s, v)| (s.to_owned(), v.to_owned()))
        else {
            continue;
        };
        let Ok(spec) = state.storage(&storage) else {
            continue;
        };
        if !volume_has_feature(&spec.kind, "template", &volname) {
            continue;
        }
        let old = format!("{storage}:{volname}");
        let new = format!("{storage}:{}", base_name(&volname));
        if let Some(volume) = find_volume_mut(state, &node, &old) {
            let old_key = volume_key(volume.node.as_deref(), &volume.volid);
            volume.volid.clone_from(&new);
            let renamed = volume.clone();
            state.volumes.remove(&old_key);
            state
                .volumes
                .insert(volume_key(renamed.node.as_deref(), &new), renamed);
        }
        entries[0].1.clone_from(&new);
        config.insert(key.clone(), propstring::serialize(&entries));
        log.push(format!("{key}: {old} -> {new}"));
    }
    config.insert("template".to_owned(), "1".to_owned());
    if let Some(vm) = state.vms.get_mut(&vmid) {
        vm.config = config;
    }
    Ok(log)
}

/// A resize task ends: the disk's `size=` and its volume grow.
fn finish_resize(
    state: &mut State,
    vmid: u32,
    disk: &str,
    bytes: u64,
) -> Result<Vec<String>, String> {
    let Some(vm) = state.vms.get_mut(&vmid) else {
        return Err(format!("VM {vmid} does not exist"));
    };
    let Some(value) = vm.config.get(disk).cloned() else {
        return Err(format!("disk '{disk}' does not exist"));
    };
    let Ok(mut entries) = propstring::parse(&value) else {
        return Err(format!("unable to parse drive options '{value}'"));
    };
    set_entry(&mut entries, "size", &format_size(bytes));
    let volid = propstring::get(&entries, "file", Some("file")).map(str::to_owned);
    vm.config
        .insert(disk.to_owned(), propstring::serialize(&entries));
    let node = vm.node.clone();
    if let Some(volid) = volid
        && let Some(volume) = find_volume_mut(state, &node, &volid)
    {
        volume.size = bytes;
    }
    Ok(vec![format!("resized {disk} to {}", format_size(bytes))])
}

fn rollback(state: &mut State, action: &TaskAction) {
    match action {
        TaskAction::Create { vmid } | TaskAction::Clone { target: vmid, .. } => {
            state.vms.remove(vmid);
            state
                .volumes
                .retain(|_, volume| !(volume.vmid == Some(*vmid) && volume.content == "images"));
        }
        TaskAction::Start { vmid } => {
            if let Some(vm) = state.vms.get_mut(vmid) {
                vm.starting = false;
                vm.hugepages.clear();
                vm.pci_in_use.clear();
            }
        }
        TaskAction::Delete { vmid } => {
            if let Some(vm) = state.vms.get_mut(vmid) {
                vm.config.remove("lock");
            }
        }
        TaskAction::Config { .. }
        | TaskAction::Template { .. }
        | TaskAction::Stop { .. }
        | TaskAction::Resize { .. }
        | TaskAction::AddVolume { .. }
        | TaskAction::DeleteVolume { .. } => {}
    }
}

#[cfg(test)]
mod wget_tests {
    use super::WgetProgress;

    const MIB: u64 = 1 << 20;

    fn progress() -> WgetProgress {
        WgetProgress {
            prefix: 0,
            started_ms: 1_000,
            wire_ms: 4_000,
            size: 100 * MIB,
            rate: 25.0 * MIB as f64,
        }
    }

    #[test]
    fn rows_appear_as_the_bytes_arrive_in_wgets_dot_giga_format() {
        let wget = progress();
        assert!(wget.rows(1_000, false).is_empty());
        // Half way: 50 MiB received, one full 32 MiB row.
        assert_eq!(
            wget.rows(3_000, false),
            vec!["       0K ........ ........ ........ ........  32% 25.0M 3s"]
        );
        let all = wget.rows(9_000, false);
        assert_eq!(all.len(), 4, "{all:?}");
        assert_eq!(
            all[3],
            format!("   98304K ....{} 100% 25.0M 0s", " ".repeat(31))
        );
        assert_eq!(wget.rows(2_000, true), all);
    }
}
