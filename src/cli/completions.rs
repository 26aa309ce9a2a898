//! `drctl completions SHELL` and `drctl man [--dir DIR]`: shell completion scripts and manual
//! pages, generated from the same clap definitions the parser uses, so they never drift from it.

use std::io::Write;
use std::path::PathBuf;

use clap::CommandFactory;

use crate::Error;

#[derive(clap::Args, Debug)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell. Install, e.g. for bash:
    /// `drctl completions bash > /etc/bash_completion.d/drctl`; zsh: into a directory of `$fpath`
    /// as `_drctl`; fish: `~/.config/fish/completions/drctl.fish`.
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write drctl.1 and one page per subcommand (drctl-restore.1, …) into this directory
    /// instead of printing drctl.1 to stdout. View one with `man -l drctl.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn completions(args: &CompletionArgs) -> Result<i32, Error> {
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "drctl", &mut out);
    write_stdout(&out)
}

pub fn man(args: &ManArgs) -> Result<i32, Error> {
    let cmd = super::Cli::command();
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| Error::WriteFile { path: dir.clone(), source })?;
            clap_mangen::generate_to(cmd, dir).map_err(|source| Error::WriteFile { path: dir.clone(), source })?;
            Ok(0)
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|source| Error::WriteFile { path: PathBuf::from("-"), source })?;
            write_stdout(&out)
        }
    }
}

fn write_stdout(bytes: &[u8]) -> Result<i32, Error> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|_| stdout.flush())
        .map_err(|source| Error::WriteFile { path: PathBuf::from("-"), source })?;
    Ok(0)
}
