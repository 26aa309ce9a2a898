//! The operations drctl performs — run, restore, prune, sync, check, catalog rebuild — shared by
//! the CLI and the daemon. Nothing here prints: every operation returns a report the caller renders.

pub mod check;
mod fanout;
pub mod grace;
pub mod leaks;
pub mod prune;
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
    /// The targets opened so far: one client (S3 connection pool, SFTP sessions) per target for
    /// every operation of the process.
    targets: std::sync::Mutex<std::collections::BTreeMap<String, Arc<Target>>>,
}

impl Engine {
    pub fn new(config: Config) -> Self {
        Engine { config, progress: false, catalog: tokio::sync::OnceCell::new(), targets: Default::default() }
    }

    pub fn catalog_url(&self) -> String {
        self.config.catalog.url.clone().unwrap_or_else(catalog::default_url)
    }

    /// The catalog: opened and migrated on first use, then the same pool for every operation. A
    /// failure to open is not kept: the next call tries again (the database may come back).
    pub async fn catalog(&self) -> Result<Arc<Catalog>> {
        self.catalog.get_or_try_init(|| async { Catalog::open(&self.catalog_url()).await.map(Arc::new) }).await.cloned()
    }

    /// The target called `name`: opened on first use, then the same client for every operation
    /// (a broken SFTP session is replaced by its pool, S3's client reconnects).
    pub fn target(&self, name: &str) -> Result<Arc<Target>> {
        let mut open = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = open.get(name) {
            return Ok(t.clone());
        }
        let config = self.config.targets.get(name).ok_or_else(|| Error::Target {
            target: name.to_string(),
            op: "open",
            key: String::new(),
            kind: crate::error::FailureKind::Permanent,
            message: "no such target in the configuration".into(),
            hint: format!("configured targets: {}", self.config.targets.keys().cloned().collect::<Vec<_>>().join(", ")),
        })?;
        let target = Arc::new(Target::open(name, config)?);
        open.insert(name.to_string(), target.clone());
        Ok(target)
    }
}
