//! `provision man [--dir DIR]`: the manual page (roff, generated from the command line with
//! clap_mangen) on stdout, or one page per subcommand written into DIR.

use anyhow::Context as _;

use crate::cli::ManArgs;
use crate::exit::ExitStatus;

use super::Context;

pub async fn run(context: &Context, args: ManArgs) -> anyhow::Result<ExitStatus> {
    let command = crate::cli::command();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("writing the manual pages into {}", dir.display()))?;
            context
                .reporter
                .status(&format!("wrote the manual pages into {}", dir.display()));
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .context("rendering the manual page")?;
            context.reporter.data(&String::from_utf8_lossy(&page));
        }
    }
    Ok(ExitStatus::Success)
}
