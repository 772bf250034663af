//! The one place that prints: data on stdout, diagnostics and progress on stderr.
//!
//! Honours `--output json`, `--quiet`, `--no-color` and `NO_COLOR`; colour only when stderr is a
//! terminal.
#![allow(clippy::print_stderr)]

use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};

use crate::cli::{GlobalArgs, OutputFormat};
use crate::exit::ExitStatus;
use crate::profile::diagnostic::{self, Diagnostic};

pub use provision_base::SECURITY_TARGET;

mod progress;
use progress::ProgressView;

/// Where and how output goes for this run.
#[derive(Debug, Clone)]
pub struct Reporter {
    format: OutputFormat,
    color: bool,
    quiet: bool,
    verbose: u8,
    /// Progress bars instead of lines: stderr is a terminal, text output, not `--quiet`.
    bars: bool,
    progress: Arc<Mutex<Option<ProgressView>>>,
}

impl Reporter {
    /// From the global flags and the environment (`NO_COLOR`, whether stderr is a terminal).
    pub fn new(global: &GlobalArgs) -> Self {
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Self {
            format: global.output,
            color: !global.no_color && !no_color_env && std::io::stderr().is_terminal(),
            quiet: global.quiet,
            verbose: global.verbose,
            bars: std::io::stderr().is_terminal()
                && !global.quiet
                && global.output == OutputFormat::Text,
            progress: Arc::new(Mutex::new(None)),
        }
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    pub fn color(&self) -> bool {
        self.color
    }

    pub fn verbose(&self) -> u8 {
        self.verbose
    }

    /// Data for stdout (a trailing newline is added when missing).
    pub fn data(&self, text: &str) {
        if text.ends_with('\n') {
            self.stdout(text);
        } else {
            self.stdout(&format!("{text}\n"));
        }
    }

    /// Writes to stdout. A reader that went away (`provision plan | head -1`) is not an error:
    /// the rest of the data is dropped quietly and the command ends with its own status, as
    /// ripgrep and uv do. Any other write error is said on stderr.
    fn stdout(&self, text: &str) {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(error) => self.error(&format!("cannot write to stdout: {error}"), None),
        }
    }

    /// A plan diff on stdout: coloured by its `+`, `~`, `-/+`, `-` markers when stdout is a
    /// terminal and colours are allowed, plain otherwise (a pipe, a file, `NO_COLOR`).
    pub fn diff(&self, text: &str) {
        if self.color && std::io::stdout().is_terminal() {
            self.data(&paint_diff(text));
        } else {
            self.data(text);
        }
    }

    /// One JSON document on stdout.
    pub fn json<T: serde::Serialize + ?Sized>(&self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => self.data(&text),
            // Only a map with non-string keys fails; say so rather than print nothing.
            Err(error) => self.error(&format!("cannot encode the result as JSON: {error}"), None),
        }
    }

    /// A command's result on stdout, from one value: its JSON with `--output json`, its text
    /// ([`std::fmt::Display`]) otherwise.
    pub fn result<T: serde::Serialize + std::fmt::Display>(&self, value: &T) {
        match self.format {
            OutputFormat::Json => self.json(value),
            OutputFormat::Text => self.data(&value.to_string()),
        }
    }

    /// A progress or status line on stderr (hidden by `--quiet`).
    pub fn status(&self, text: &str) {
        if !self.quiet {
            self.line(text);
        }
    }

    /// A question on stderr (shown even with `--quiet`: the answer is needed).
    pub fn prompt(&self, text: &str) {
        self.line(text);
    }

    /// A line shown even with `--quiet`, above the progress bars (an interrupt arrived).
    pub fn notice(&self, text: &str) {
        self.line(text);
    }

    /// The last line of an interrupted run, under the bars frozen where each VM stopped.
    pub fn interrupted(&self, text: &str) {
        let view = match self.progress.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(view) = view {
            view.stop();
            // indicatif leaves the cursor at the end of the last bar.
            eprintln!();
        }
        eprintln!("{text}");
    }

    /// Detail shown only with `-v`.
    pub fn detail(&self, text: &str) {
        if self.verbose > 0 && !self.quiet {
            self.line(text);
        }
    }

    /// A line on stderr, above the progress bars while they are shown.
    fn line(&self, text: &str) {
        let shown = self.with_view(|view| view.multi.println(text).is_ok());
        if shown != Some(true) {
            eprintln!("{text}");
        }
    }

    fn with_view<T>(&self, f: impl FnOnce(&mut ProgressView) -> T) -> Option<T> {
        let mut guard = match self.progress.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.as_mut().map(f)
    }

    /// Removes the progress bars (before an error, or when the run ends).
    fn end_progress(&self) {
        let mut guard = match self.progress.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(view) = guard.take() {
            view.overall.finish_and_clear();
            for line in view.vms.values() {
                line.bar.finish_and_clear();
            }
            if view.multi.clear().is_err() {
                // stderr is gone: nothing left to clear.
            }
        }
    }

    /// An error with an optional hint, on stderr.
    pub fn error(&self, message: &str, hint: Option<&str>) {
        self.end_progress();
        let (red, cyan, reset) = if self.color {
            ("\x1b[1;31m", "\x1b[1;36m", "\x1b[0m")
        } else {
            ("", "", "")
        };
        eprintln!("{red}error{reset}: {message}");
        if let Some(hint) = hint {
            eprintln!("  = {cyan}hint{reset}: {hint}");
        }
    }

    /// Located diagnostics on stderr, with snippets from `text` when given. Warnings are
    /// hidden by `--quiet`; errors never are.
    pub fn diagnostics(&self, diagnostics: &[Diagnostic], text: Option<&str>) {
        for item in diagnostics {
            if self.quiet && item.severity == diagnostic::Severity::Warning {
                continue;
            }
            eprint!("{}", diagnostic::render(item, text, self.color));
            eprintln!();
        }
    }

    /// Prints a command-line parsing error (or the help / version text clap produced) and says
    /// how the process ends.
    pub fn clap_error(error: &clap::Error) -> ExitStatus {
        if error.print().is_err() {
            // stdout/stderr is closed: there is nobody left to tell.
        }
        match error.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                ExitStatus::Success
            }
            _ => ExitStatus::UserError,
        }
    }

    /// Routes `tracing` events to stderr at a level chosen by `-v` (or `RUST_LOG`).
    pub fn init_tracing(&self) {
        let level = if self.quiet {
            format!("error,{SECURITY_TARGET}=warn")
        } else {
            match self.verbose {
                0 => "warn",
                1 => "info",
                2 => "debug",
                _ => "trace",
            }
            .to_owned()
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        let result = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer({
                let progress = Arc::clone(&self.progress);
                move || progress::TraceWriter::new(Arc::clone(&progress))
            })
            .with_ansi(self.color)
            .without_time()
            .try_init();
        if result.is_err() {
            // A subscriber is already installed (tests running commands in-process): keep it.
        }
    }
}

/// Execution progress: with a terminal, an indicatif multi-progress (one line per VM with its
/// current step, an overall bar with the elapsed time); otherwise plain stderr lines.
impl crate::exec::ProgressSink for Reporter {
    fn event(&self, event: crate::exec::ExecEvent) {
        use crate::exec::ExecEvent;
        if self.bars && self.progress_event(&event) {
            return;
        }
        match event {
            ExecEvent::Planned { .. } => {}
            ExecEvent::Started { vms } => {
                if !vms.is_empty() {
                    self.status(&format!("working on {} VMs", vms.len()));
                }
            }
            ExecEvent::Step { vm, step } => self.detail(&format!("{vm}: {step}")),
            ExecEvent::Retry {
                vm,
                step,
                attempt,
                delay,
                error,
            } => self.status(&format!(
                "{vm}: {step} failed (attempt {attempt}), retrying in {:.1}s (at {}): {error}",
                delay.as_secs_f64(),
                crate::state::human_time(std::time::SystemTime::now() + delay)
            )),
            ExecEvent::VmDone { vm, elapsed } => {
                self.status(&format!("{vm}: done in {:.1}s", elapsed.as_secs_f64()))
            }
            ExecEvent::Global { what } => self.status(&what),
            ExecEvent::Transfer { what, done, total } => self.status(&format!(
                "{what}: {}% ({} of {})",
                done.saturating_mul(100) / total.max(1),
                indicatif::HumanBytes(done),
                indicatif::HumanBytes(total)
            )),
            ExecEvent::Note { message } => self.status(&message),
        }
    }
}

/// A plan diff with terraform's colours: `+` green, `~` yellow, `-/+` magenta, `-` red, the
/// warnings and the summary bold; other lines as they are.
fn paint_diff(text: &str) -> String {
    let paint = |line: &str| {
        let marker = line.trim_start();
        let colour = if marker.starts_with("-/+ ") {
            "\x1b[35m"
        } else if marker.starts_with("+ ") {
            "\x1b[32m"
        } else if marker.starts_with("~ ") {
            "\x1b[33m"
        } else if marker.starts_with("- ") {
            "\x1b[31m"
        } else if marker.starts_with("warning:") || marker.starts_with("Plan:") {
            "\x1b[1m"
        } else {
            return line.to_owned();
        };
        format!("{colour}{line}\x1b[0m")
    };
    text.lines().map(paint).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_diff_is_painted_by_its_markers() {
        let text = "+ vm-1 (vmid 100 on pve1)\n      ~ cores: 4 → 8\n-/+ vm-2\n- vm-3\n      name: x\nPlan: 1 to create.";
        let painted = super::paint_diff(text);
        let lines: Vec<&str> = painted.lines().collect();
        assert_eq!(lines[0], "\x1b[32m+ vm-1 (vmid 100 on pve1)\x1b[0m");
        assert_eq!(lines[1], "\x1b[33m      ~ cores: 4 → 8\x1b[0m");
        assert_eq!(lines[2], "\x1b[35m-/+ vm-2\x1b[0m");
        assert_eq!(lines[3], "\x1b[31m- vm-3\x1b[0m");
        assert_eq!(lines[4], "      name: x");
        assert_eq!(lines[5], "\x1b[1mPlan: 1 to create.\x1b[0m");
    }
}
