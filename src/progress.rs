//! Progress of long byte streams: a bar on a terminal (bytes, rate, ETA), nothing otherwise.
//!
//! The pipeline only calls [`Progress::inc`]; whether and how that is shown is decided once, by the
//! CLI, when it creates the handle.

use std::io::IsTerminal;

/// A cheap, clonable progress handle. `Progress::hidden()` does nothing.
#[derive(Clone)]
pub struct Progress(indicatif::ProgressBar);

impl Progress {
    pub fn hidden() -> Self {
        Progress(indicatif::ProgressBar::hidden())
    }

    /// A byte counter shown on stderr when it is a terminal and `enabled`; `total` enables an ETA.
    pub fn bytes(label: &str, total: Option<u64>, enabled: bool) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Self::hidden();
        }
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t).with_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(label.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Progress(bar)
    }

    /// A step without bytes to count (a tool finishing after its input ended): a spinner with
    /// what is happening and for how long, on stderr when it is a terminal and `enabled`.
    pub fn step(label: &str, enabled: bool) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Self::hidden();
        }
        let bar = indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(label.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Progress(bar)
    }

    pub fn inc(&self, n: u64) {
        self.0.inc(n)
    }

    pub fn finish(&self) {
        self.0.finish_and_clear()
    }
}
