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

/// Configuration plus the handles operations need.
pub struct Engine {
    pub config: Config,
    /// Show progress bars (a terminal is attached and the user did not ask for quiet/json).
    pub progress: bool,
}

impl Engine {
    pub fn new(config: Config) -> Self {
        Engine { config, progress: false }
    }

    pub fn catalog_url(&self) -> String {
        self.config.catalog.url.clone().unwrap_or_else(catalog::default_url)
    }

    pub async fn catalog(&self) -> Result<Catalog> {
        Catalog::open(&self.catalog_url()).await
    }

    /// Open the target called `name`.
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
