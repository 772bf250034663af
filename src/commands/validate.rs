//! `provision validate --profile NAME|PATH`: load, check, summarise.

use crate::cli::{OutputFormat, ValidateArgs};
use crate::exit::ExitStatus;

use super::Context;
use super::output::ValidateOutput;

pub async fn run(context: &Context, args: ValidateArgs) -> anyhow::Result<ExitStatus> {
    let loaded = super::scope::load(context, &args.profile, &args.overrides)?;
    context.reporter.detail(&format!(
        "read {} ({} bytes)",
        loaded.source_name,
        loaded.text.len()
    ));
    let output = ValidateOutput::new(&args.profile, &loaded);
    if context.reporter.format() == OutputFormat::Text {
        context
            .reporter
            .diagnostics(&loaded.warnings, Some(&loaded.text));
    }
    context.reporter.result(&output);
    Ok(ExitStatus::Success)
}
