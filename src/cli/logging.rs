//! Log setup: structured `tracing` events on stderr, scrubbed of registered secrets. Plain lines
//! print fields logfmt-style (`status=ok`, `reason="no backup yet"`): bare values, quoted only when
//! they hold a space, a quote or an `=`, so a line reads as text and still splits into fields.

use std::fmt::{self, Debug};
use std::io::Write;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

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
        builder.with_ansi(std::io::stderr().is_terminal()).fmt_fields(Logfmt).try_init()
    };
}

/// Fields as `name=value`, the message first and bare.
struct Logfmt;

impl<'w> FormatFields<'w> for Logfmt {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = LogfmtVisitor { writer: &mut writer, result: Ok(()), first: true };
        fields.record(&mut v);
        v.result
    }
}

struct LogfmtVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
    first: bool,
}

impl LogfmtVisitor<'_, '_> {
    fn field(&mut self, name: &str, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if std::mem::replace(&mut self.first, false) { "" } else { " " };
        self.result = if name == "message" {
            write!(self.writer, "{sep}{value}")
        } else if needs_quotes(value) {
            write!(self.writer, "{sep}{name}={value:?}")
        } else {
            write!(self.writer, "{sep}{name}={value}")
        };
    }
}

impl Visit for LogfmtVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        // `%x` fields arrive here too, their Debug being their Display
        self.field(field.name(), &format!("{value:?}"));
    }
}

/// Whether a value must be quoted to stay one field: empty, or with a space, quote, `=` or a
/// control character in it.
fn needs_quotes(value: &str) -> bool {
    value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=')
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn fields_are_values_quoted_only_when_they_must_be() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .fmt_fields(Logfmt)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let backup: Option<&str> = Some("20261205T210531Z-88bc3e");
            let none: Option<&str> = None;
            tracing::info!(
                job = "vol",
                status = "ok",
                backup,
                skipped = none,
                schedule = %"*/2 * * * * *",
                reason = "no complete backup yet",
                bytes = 1043u64,
                empty = "",
                "backup committed"
            );
        });
        let line = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            line.trim(),
            "INFO backup committed job=vol status=ok backup=20261205T210531Z-88bc3e \
             schedule=\"*/2 * * * * *\" reason=\"no complete backup yet\" bytes=1043 empty=\"\""
        );
    }
}
