//! Execution progress on a terminal: one line per VM with its current step and how long it has
//! been in it, and an overall bar that counts steps (not only finished VMs) with an estimate of
//! the time left. Off a terminal, [`crate::exec::ExecEvent`]s become plain lines instead.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::ExecEvent;

use super::Reporter;

/// The live multi-progress view of one execution.
#[derive(Debug)]
pub(super) struct ProgressView {
    pub(super) multi: MultiProgress,
    pub(super) overall: ProgressBar,
    pub(super) vms: BTreeMap<String, VmLine>,
    /// A bar per transfer (image download) with its bytes.
    transfers: BTreeMap<String, ProgressBar>,
    vms_done: usize,
    /// The widest VM name, for aligned lines.
    width: usize,
}

/// One VM's line, and how many of its planned steps the overall bar has counted.
#[derive(Debug)]
pub(super) struct VmLine {
    pub(super) bar: ProgressBar,
    expected: u64,
    counted: u64,
}

impl VmLine {
    /// Counts one more step, or what is left of the planned ones once the VM is `done`.
    fn count(&mut self, done: bool) -> u64 {
        let step = if done {
            self.expected.saturating_sub(self.counted)
        } else {
            u64::from(self.counted < self.expected)
        };
        self.counted = self.counted.saturating_add(step);
        step
    }
}

/// The time left at the run's average pace so far. Steps come in bursts (every VM's image step
/// at once, then minutes of creates), which throws indicatif's recent-rate `{eta}` off by
/// orders of magnitude; the average since the start settles instead.
fn time_left(state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write) {
    let (done, total) = (state.pos(), state.len().unwrap_or(0));
    let text = match left_at_average_pace(state.elapsed(), done, total) {
        Some(left) => format!("about {:#} left", indicatif::HumanDuration(left)),
        None => "estimating time left".to_owned(),
    };
    if out.write_str(&text).is_err() {
        // The bar's line buffer cannot fail; nothing to show otherwise.
    }
}

/// `elapsed × (total − done) / done`; `None` before the first step is done.
fn left_at_average_pace(elapsed: Duration, done: u64, total: u64) -> Option<Duration> {
    if done == 0 {
        return None;
    }
    let left = total.saturating_sub(done);
    Some(elapsed.mul_f64(left as f64 / done as f64))
}

impl ProgressView {
    fn new(vms: &[String]) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let width = vms.iter().map(String::len).max().unwrap_or(0);
        let vm_style = ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix:<{width}}} {{msg:<16}} {{elapsed:>4}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let lines = vms
            .iter()
            .map(|vm| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(vm_style.clone());
                bar.set_prefix(vm.clone());
                bar.set_message("waiting");
                bar.enable_steady_tick(Duration::from_millis(120));
                let line = VmLine {
                    bar,
                    expected: 1,
                    counted: 0,
                };
                (vm.clone(), line)
            })
            .collect();
        let overall = multi.add(ProgressBar::new(vms.len() as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] {bar:40} {pos}/{len} steps, {msg}, {left}",
            )
            .map(|style| style.with_key("left", time_left))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        overall.set_message(format!("0/{} VMs done", vms.len()));
        overall.enable_steady_tick(Duration::from_millis(250));
        Self {
            multi,
            overall,
            vms: lines,
            transfers: BTreeMap::new(),
            vms_done: 0,
            width,
        }
    }

    /// The run stopped: each unfinished VM's line stays with the step it stopped in.
    pub(super) fn stop(&self) {
        for line in self.vms.values().filter(|line| !line.bar.is_finished()) {
            let step = line.bar.message();
            line.bar.abandon_with_message(format!("{step} (stopped)"));
        }
        self.overall.abandon();
    }

    fn planned(&mut self, steps: &[(String, u64)]) {
        for (vm, expected) in steps {
            if let Some(line) = self.vms.get_mut(vm) {
                line.expected = (*expected).max(1);
            }
        }
        let total: u64 = self.vms.values().map(|line| line.expected).sum();
        self.overall.set_length(total);
    }

    /// The VM entered `step`: its line shows it with a fresh clock, the overall bar moves.
    fn step(&mut self, vm: &str, step: String) -> bool {
        let Some(line) = self.vms.get_mut(vm) else {
            return false;
        };
        line.bar.set_message(step);
        line.bar.reset_elapsed();
        let counted = line.count(false);
        self.overall.inc(counted);
        true
    }

    /// A transfer moved `done` of `total` bytes: its bar (above the overall one) shows them.
    fn transfer(&mut self, what: &str, done: u64, total: u64) {
        let bar = self.transfers.entry(what.to_owned()).or_insert_with(|| {
            let bar = self
                .multi
                .insert_before(&self.overall, ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "  {prefix} {bar:24} {bytes}/{total_bytes} ({percent}%)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(what.to_owned());
            bar
        });
        bar.set_length(total);
        bar.set_position(done.min(total));
        if done >= total {
            bar.finish();
        }
    }

    /// The VM is done; true once every VM is.
    fn done(&mut self, vm: &str, elapsed: Duration) -> bool {
        let width = self.width;
        if let Some(line) = self.vms.get_mut(vm) {
            let counted = line.count(true);
            self.overall.inc(counted);
            line.bar.set_style(
                ProgressStyle::with_template(&format!("✓ {{prefix:<{width}}} {{msg}}"))
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            line.bar
                .finish_with_message(format!("done in {:.1}s", elapsed.as_secs_f64()));
        }
        self.vms_done = self.vms_done.saturating_add(1);
        self.overall
            .set_message(format!("{}/{} VMs done", self.vms_done, self.vms.len()));
        self.vms_done >= self.vms.len()
    }
}

impl Reporter {
    /// Shows `event` on the progress bars; false when it is to be printed as a line.
    pub(super) fn progress_event(&self, event: &ExecEvent) -> bool {
        match event {
            ExecEvent::Started { vms } => {
                self.end_progress();
                if vms.is_empty() {
                    return true;
                }
                let mut guard = match self.progress.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *guard = Some(ProgressView::new(vms));
                true
            }
            ExecEvent::Planned { steps } => self.with_view(|view| view.planned(steps)).is_some(),
            ExecEvent::Step { vm, step } => self
                .with_view(|view| view.step(vm, (*step).to_owned()))
                .unwrap_or(false),
            ExecEvent::Retry {
                vm,
                step,
                attempt,
                error,
                ..
            } => self
                .with_view(|view| match view.vms.get(vm) {
                    Some(line) => {
                        line.bar
                            .set_message(format!("{step} (retry {attempt}: {error})"));
                        true
                    }
                    None => false,
                })
                .unwrap_or(false),
            ExecEvent::VmDone { vm, elapsed } => {
                match self.with_view(|view| view.done(vm, *elapsed)) {
                    Some(true) => {
                        self.with_view(|view| {
                            view.overall.set_style(
                                ProgressStyle::with_template(
                                    "[{elapsed_precise}] {bar:40} {pos}/{len} steps, {msg}",
                                )
                                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                            );
                            view.overall.finish();
                        });
                        if let Ok(mut guard) = self.progress.lock() {
                            // The finished bars stay on screen as the run's summary.
                            guard.take();
                        }
                        // indicatif leaves the cursor at the end of the last bar.
                        eprintln!();
                        true
                    }
                    Some(false) => true,
                    None => false,
                }
            }
            ExecEvent::Transfer { what, done, total } => self
                .with_view(|view| view.transfer(what, *done, *total))
                .is_some(),
            ExecEvent::Global { .. } | ExecEvent::Note { .. } => false,
        }
    }
}

/// Where `tracing` writes: one event per writer, printed above the bars while they are shown
/// (so a log line never tears a bar), straight to stderr otherwise.
pub(super) struct TraceWriter {
    progress: std::sync::Arc<std::sync::Mutex<Option<ProgressView>>>,
    buffer: Vec<u8>,
}

impl TraceWriter {
    pub(super) fn new(progress: std::sync::Arc<std::sync::Mutex<Option<ProgressView>>>) -> Self {
        Self {
            progress,
            buffer: Vec::new(),
        }
    }
}

impl std::io::Write for TraceWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buffer);
        let text = text.trim_end_matches('\n');
        if text.is_empty() {
            return;
        }
        let guard = match self.progress.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let shown = guard
            .as_ref()
            .is_some_and(|view| view.multi.println(text).is_ok());
        if !shown {
            eprintln!("{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_is_the_average_pace_so_far() {
        assert_eq!(left_at_average_pace(Duration::from_secs(30), 0, 49), None);
        assert_eq!(
            left_at_average_pace(Duration::from_secs(30), 10, 40),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            left_at_average_pace(Duration::from_secs(30), 49, 49),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn the_overall_bar_counts_planned_steps_and_tops_up_a_finished_vm() {
        let mut view = ProgressView::new(&["vm-1".to_owned(), "vm-2".to_owned()]);
        view.planned(&[("vm-1".to_owned(), 3), ("vm-2".to_owned(), 2)]);
        assert_eq!(view.overall.length(), Some(5));
        assert!(view.step("vm-1", "create".to_owned()));
        assert!(view.step("vm-1", "wait".to_owned()));
        assert!(view.step("vm-1", "start".to_owned()));
        // A step beyond the planned ones (a wait) does not run the bar past the VM's share.
        assert!(view.step("vm-1", "guest".to_owned()));
        assert_eq!(view.overall.position(), 3);
        assert!(!view.step("vm-9", "create".to_owned()));
        assert!(!view.done("vm-2", Duration::from_secs(1)));
        assert_eq!(view.overall.position(), 5);
        assert!(view.done("vm-1", Duration::from_secs(2)));
        assert_eq!(view.overall.position(), 5);
    }
}
