//! The operations drctl performs — run, restore, prune, sync, check, catalog rebuild — shared by
//! the CLI and the daemon. Nothing here prints: every operation returns a report the caller renders.

pub mod check;
mod fanout;
pub mod grace;
pub mod leaks;
pub mod prune;
pub mod read_data;
pub mod rebuild;
pub mod restore;
pub mod run;
pub mod sync;

use std::sync::Arc;

use crate::catalog::{self, Catalog};
use crate::config::Config;
use crate::targets::Target;
use crate::{Error, Result};

/// Configuration plus the handles operations need: one per process, shared by every operation
/// (the CLI's one command, or all of the daemon's runs).
pub struct Engine {
    pub config: Config,
    /// Show progress bars (a terminal is attached and the user did not ask for quiet/json).
    pub progress: bool,
    /// The catalog, opened (and migrated) once, on first use.
    catalog: tokio::sync::OnceCell<Arc<Catalog>>,
    /// The `[notify]` channels, their secrets read once.
    pub notifier: Arc<crate::notify::Notifier>,
}

impl Engine {
    pub fn new(config: Config) -> Self {
        let notifier = Arc::new(crate::notify::Notifier::new(&config.notify));
        Engine { config, progress: false, catalog: tokio::sync::OnceCell::new(), notifier }
    }

    pub fn catalog_url(&self) -> String {
        self.config.catalog.url.clone().unwrap_or_else(catalog::default_url)
    }

    /// The catalog: opened and migrated on first use, then the same pool for every operation. A
    /// failure to open is not kept: the next call tries again (the database may come back).
    pub async fn catalog(&self) -> Result<Arc<Catalog>> {
        self.catalog.get_or_try_init(|| async { Catalog::open(&self.catalog_url()).await.map(Arc::new) }).await.cloned()
    }

    /// How new backups (and WAL) are encoded: the configured zstd level and threads, and the
    /// recipients.
    pub fn encode_params(&self) -> Result<crate::pipeline::EncodeParams> {
        Ok(crate::pipeline::EncodeParams {
            zstd_level: self.config.compression.level,
            zstd_threads: self.config.compression.threads,
            recipients: crate::pipeline::keys::parse_recipients(&self.config.encryption.recipients)?,
        })
    }

    /// Open the target called `name`: a new client per operation (cheap: no connection is made
    /// until the first request), so a daemon's runs never share a connection a stalled run left.
    pub fn target(&self, name: &str) -> Result<Arc<Target>> {
        let config = self.config.targets.get(name).ok_or_else(|| Error::Target {
            target: name.to_string(),
            op: "open",
            key: String::new(),
            kind: crate::error::FailureKind::Permanent,
            message: "no such target in the configuration".into(),
            hint: format!("configured targets: {}", self.config.targets.keys().cloned().collect::<Vec<_>>().join(", ")),
        })?;
        Target::open(name, config).map(Arc::new)
    }
}
