//! The one confirmation every disruptive command asks for (`up` that restarts, replaces or
//! destroys a running VM, and `down`): the plan summary, then `Proceed? [y/N]` on a terminal;
//! `--yes` (`-y`, `--auto-approve`) skips it, and off a terminal it is required.

use std::io::{BufRead as _, IsTerminal as _};

use super::{Context, UserError};

/// Ask before `what` (`restart, replace or remove 3 running VMs of cluster lab`), after showing
/// `summary`. `Ok` to go on; a [`UserError`] (nothing changed) otherwise.
pub fn confirm(context: &Context, what: &str, summary: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(UserError::new(
            format!("refusing to {what} without confirmation; nothing was changed"),
            Some("run it on a terminal to confirm, or pass --yes (-y, --auto-approve)"),
        )
        .into());
    }
    if !summary.is_empty() {
        context.reporter.prompt(summary);
    }
    context
        .reporter
        .prompt(&format!("This will {what}. Proceed? [y/N]"));
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if is_yes(&answer) {
        Ok(())
    } else {
        Err(UserError::new("not confirmed; nothing was changed", None).into())
    }
}

/// `y` or `yes`, any case; anything else (an empty line included) is no.
fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::is_yes;

    #[test]
    fn only_y_or_yes_confirms() {
        for yes in ["y", "Y\n", " yes ", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yess", "lab"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }
}
