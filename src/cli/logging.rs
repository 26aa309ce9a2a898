//! Log setup: structured `tracing` events on stderr, scrubbed of registered secrets.

use std::io::Write;

use tracing_subscriber::EnvFilter;

/// stderr, with every registered secret removed from what is written.
struct ScrubbedStderr;

impl Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = crate::redact::scrub(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(text.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Log setup for one-shot commands: warnings only unless `-v`.
pub fn init(verbose: u8, quiet: bool) {
    setup(level(verbose, quiet, "warn"), false);
}

/// Log setup for the daemon: `info` by default (every run is logged), JSON lines with `--json`,
/// plain lines otherwise (colours only on a terminal).
pub fn init_daemon(json: bool, verbose: u8, quiet: bool) {
    // -v changes nothing here (already info), -vv is debug
    setup(level(if verbose >= 2 { 2 } else { 0 }, quiet, "info"), json);
}

fn level(verbose: u8, quiet: bool, default: &'static str) -> &'static str {
    match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => default,
        (false, 1) => "info",
        _ => "debug",
    }
}

fn setup(level: &str, json: bool) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("DRCTL_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},sqlx=error,aws=warn,hyper=warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| ScrubbedStderr).with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).try_init()
    };
}
