//! drctl: a backup and disaster-recovery orchestrator.
//!
//! The library holds everything; `src/main.rs` only calls [`cli::main`]. The engine
//! ([`engine`]) is shared by the CLI and the daemon ([`scheduler`]). See docs/architecture.md for the
//! data flow and module layout.

pub mod api;
pub mod catalog;
pub mod chunked;
pub mod cli;
pub mod config;
pub mod drill;
pub mod engine;
pub mod error;
pub mod exec;
pub mod finding;
pub mod generate;
pub mod host;
pub mod jobs;
pub mod layout;
pub mod manifest;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod progress;
pub mod redact;
pub mod retention;
pub mod scheduler;
pub mod targets;
pub mod tool_output;
pub mod units;

pub use error::{Error, Result};
