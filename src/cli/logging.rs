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

pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("DRCTL_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},sqlx=error,aws=warn,hyper=warn")));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| ScrubbedStderr).with_target(false).try_init();
}
