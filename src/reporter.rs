//! The one place that prints: data on stdout, diagnostics and progress on stderr.
//!
//! Honours `--output json`, `--quiet`, `--no-color` and `NO_COLOR`; colour only when stderr is a
//! terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::IsTerminal as _;

use crate::cli::{GlobalArgs, OutputFormat};
use crate::exit::ExitStatus;
use crate::profile::diagnostic::{self, Diagnostic};

/// Where and how output goes for this run.
#[derive(Debug, Clone)]
pub struct Reporter {
    format: OutputFormat,
    color: bool,
    quiet: bool,
    verbose: u8,
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
            print!("{text}");
        } else {
            println!("{text}");
        }
    }

    /// One JSON document on stdout.
    pub fn json(&self, value: &serde_json::Value) {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
        println!("{text}");
    }

    /// A progress or status line on stderr (hidden by `--quiet`).
    pub fn status(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    /// Detail shown only with `-v`.
    pub fn detail(&self, text: &str) {
        if self.verbose > 0 && !self.quiet {
            eprintln!("{text}");
        }
    }

    /// An error with an optional hint, on stderr.
    pub fn error(&self, message: &str, hint: Option<&str>) {
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
            "error"
        } else {
            match self.verbose {
                0 => "warn",
                1 => "info",
                2 => "debug",
                _ => "trace",
            }
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        let result = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(self.color)
            .without_time()
            .try_init();
        if result.is_err() {
            // A subscriber is already installed (tests running commands in-process): keep it.
        }
    }
}

/// Execution progress as plain stderr lines (one per VM step).
// TODO-completeness: an indicatif multi-progress view (one line per VM, overall bar, elapsed)
// when stderr is a terminal.
impl crate::exec::ProgressSink for Reporter {
    fn event(&self, event: crate::exec::ExecEvent) {
        use crate::exec::ExecEvent;
        match event {
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
            } => self.detail(&format!(
                "{vm}: {step} failed (attempt {attempt}), retrying in {:.1}s: {error}",
                delay.as_secs_f64()
            )),
            ExecEvent::VmDone { vm, elapsed } => {
                self.status(&format!("{vm}: done in {:.1}s", elapsed.as_secs_f64()))
            }
            ExecEvent::Global { what } => self.status(&what),
            ExecEvent::Note { message } => self.status(&message),
        }
    }
}
