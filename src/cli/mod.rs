//! The command line: parse arguments, call the engine, render the report (human or `--json`),
//! choose the exit code. No backup logic lives here.
//!
//! Exit codes (public contract): 0 success, 1 the operation failed, 2 usage or configuration
//! error, 3 partial (stored on some targets but not all).

mod catalog;
mod check;
mod check_deadline;
mod completions;
mod daemon;
mod generate;
mod init;
mod keygen;
mod list;
mod logging;
mod output;
mod prune;
mod restore;
mod run;
mod sync;
mod verify;
mod wal;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::Error;
use crate::engine::Engine;

pub use output::Printer;

#[derive(Parser, Debug)]
#[command(name = "drctl", version, about = "Backup and disaster-recovery orchestrator", propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: $DRCTL_CONFIG, else ./drctl.toml)
    #[arg(long, global = true, env = "DRCTL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v info, -vv debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// A new setup in a directory: config, first job, keys, targets; then `check`
    Init(init::Args),
    /// Back up now; prints the backup id(s)
    Run(run::Args),
    /// Backups known to the catalog, newest first
    List(list::Args),
    /// Restore a backup (into the job's source, another server, a file or stdout)
    Restore(restore::Args),
    /// Restore drill into a scratch instance: checks, measured restore time (exit 1 when one fails)
    Verify(verify::Args),
    /// Apply retention on every target (prints the plan with the reason for each backup)
    Prune(prune::Args),
    /// Copy committed backups to targets that miss them (repairs 3-2-1 after exit 3)
    Sync(sync::Args),
    /// Validate the config, reach every target and source
    Check(check::Args),
    /// Catalog maintenance
    Catalog {
        #[command(subcommand)]
        command: catalog::Command,
    },
    /// Create a new age identity and print its recipient
    Keygen(keygen::Args),
    /// Scheduler and HTTP API: runs every job on its `schedule`, serves `[api] listen`
    Daemon(daemon::Args),
    /// Deployment manifests from this config: Kubernetes CronJobs and RBAC, or a Swarm stack
    Generate(generate::Args),
    /// WAL archiving of physical PostgreSQL jobs: the receiver, and the restore_command
    Wal {
        #[command(subcommand)]
        command: wal::Command,
    },
    /// Shell completion script for bash, zsh, fish, elvish or powershell, on stdout
    Completions(completions::CompletionArgs),
    /// Manual page (roff) on stdout, or one per subcommand into a directory
    Man(completions::ManArgs),
}

/// Entry point used by `main`: never panics on user errors, always returns a documented code.
pub fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Daemon(_) | Command::Wal { command: wal::Command::Stream { .. } }) {
        logging::init_daemon(cli.json, cli.verbose, cli.quiet);
    } else {
        logging::init(cli.verbose, cli.quiet);
    }
    let printer = Printer { json: cli.json, quiet: cli.quiet };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drctl: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        if matches!(cli.command, Command::Daemon(_) | Command::Wal { .. }) {
            // the daemon and the WAL receiver handle SIGINT and SIGTERM themselves: they drain
            // their work first (a `wal fetch` is too short to interrupt: its file is temporary
            // until renamed)
            return dispatch(&cli, &printer).await;
        }
        tokio::select! {
            code = dispatch(&cli, &printer) => code,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("drctl: interrupted: nothing was committed by the interrupted operation");
                130
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    ExitCode::from(code as u8)
}

/// `drctl list | head`: once the reader has what it wanted and closed the pipe, the next
/// `println!` fails with `EPIPE` (Rust ignores `SIGPIPE`) and panics. That is no error of drctl's
/// or the user's: exit quietly with status 0, like `ls | head`. Every other panic still reports.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_closed_stdout(info) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Whether a panic is std's "failed printing to stdout" on a broken pipe.
fn is_closed_stdout(info: &std::panic::PanicHookInfo<'_>) -> bool {
    let payload = info
        .payload()
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| info.payload().downcast_ref::<&str>().copied())
        .unwrap_or_default();
    payload.starts_with("failed printing to stdout") && payload.contains("Broken pipe")
}

async fn dispatch(cli: &Cli, printer: &Printer) -> i32 {
    let result = match &cli.command {
        Command::Keygen(args) => keygen::run(args, printer),
        Command::Init(args) => init::run(args, printer).await,
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
        Command::Wal { command: wal::Command::Relay { socket, name, path } } => Ok(wal::relay(socket, name, path)),
        Command::Daemon(args) => {
            crate::scheduler::schedule::allow_seconds(args.seconds_schedules);
            match engine(cli) {
                Ok(engine) => daemon::run(engine).await,
                Err(e) => Err(e),
            }
        }
        command => match engine(cli) {
            Ok(engine) => match command {
                Command::Run(args) => run::run(&engine, args, printer).await,
                Command::List(args) => list::run(&engine, args, printer).await,
                Command::Restore(args) => restore::run(&engine, args, printer).await,
                Command::Check(args) => check_deadline::run(&engine, args, printer).await,
                Command::Catalog { command } => catalog::run(&engine, command, printer).await,
                Command::Prune(args) => prune::run(&engine, args, printer).await,
                Command::Sync(args) => sync::run(&engine, args, printer).await,
                Command::Verify(args) => verify::run(&engine, args, printer).await,
                Command::Generate(args) => generate::run(&engine, args, printer),
                Command::Wal { command } => wal::run(&engine, command, printer).await,
                Command::Keygen(_)
                | Command::Daemon(_)
                | Command::Init(_)
                | Command::Completions(_)
                | Command::Man(_) => {
                    unreachable!("handled above")
                }
            },
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => code,
        // PostgreSQL takes exit 1 and 2 of a restore_command for "not archived" and ends recovery
        // early: any failure of `wal fetch` (an unreadable config, say) must stop it instead
        Err(e) if matches!(&cli.command, Command::Wal { command: wal::Command::Fetch { .. } }) => {
            printer.error(&e);
            wal::FETCH_FAILED
        }
        Err(e) => printer.error(&e),
    }
}

fn engine(cli: &Cli) -> Result<Engine, Error> {
    let path = cli.config.clone().unwrap_or_else(|| PathBuf::from("drctl.toml"));
    let config = crate::config::load(&path)?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let mut engine = Engine::new(config);
    engine.progress = !cli.json && !cli.quiet && std::io::stderr().is_terminal();
    Ok(engine)
}
