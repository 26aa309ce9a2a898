//! `method = "physical"`: base backups and continuous WAL archiving, for point-in-time recovery.
//!
//! * [`receiver`]: `drctl wal stream JOB`, the WAL receiver (own replication client,
//!   [`replication`]) that ships segments and partials to every target ([`store`]) and confirms
//!   to the slot only what every target holds;
//! * [`base`]: `drctl run JOB`, a `pg_basebackup` tar streamed through the pipeline, committed
//!   once its WAL is archived;
//! * [`recover`]: `drctl restore JOB --to-time T --to-dir DIR` and `drctl wal fetch`, the
//!   `restore_command` the recovering server calls.

pub mod base;
pub mod coverage;
pub(crate) mod drill;
pub mod lsn;
pub mod receiver;
pub mod recover;
pub mod relay;
pub mod replication;
pub mod retention;
pub mod store;
mod tartap;

pub use base::{BaseBackup, FORMAT_BASE, PhysicalFacts};
pub use recover::{Recovery, RecoveryAction, RecoveryTarget};
