//! `drctl generate kubernetes|swarm|helm-values`: deployment manifests (or the Helm chart's
//! values) rendered from this config.

use std::path::PathBuf;

use super::Printer;
use crate::Error;
use crate::engine::Engine;
use crate::generate::{self, Options, Sources};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub platform: Platform,
    /// Write to this file instead of stdout
    #[arg(long, short, global = true)]
    pub output: Option<PathBuf>,
    /// Container image
    #[arg(long, global = true, default_value = concat!("ghcr.io/drctl/drctl:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
}

#[derive(clap::Subcommand, Debug)]
pub enum Platform {
    /// ConfigMap, claims, a CronJob per backup and drill schedule (or the daemon), RBAC for pod exec
    Kubernetes {
        /// Namespace drctl runs in
        #[arg(long, default_value = "drctl")]
        namespace: String,
        /// Render the daemon as a Deployment with a Service and probes, instead of the CronJobs
        #[arg(long)]
        daemon: bool,
    },
    /// A Docker Swarm stack file running the daemon
    Swarm,
    /// Values for the Helm chart in deploy/helm/drctl: the same objects as `kubernetes`
    HelmValues {
        /// Run the daemon (a Deployment with a Service) instead of the CronJobs
        #[arg(long)]
        daemon: bool,
    },
}

pub fn run(engine: &Engine, args: &Args, printer: &Printer) -> Result<i32, Error> {
    let sources = Sources::read(&engine.config.path)?;
    let (text, notes) = match &args.platform {
        Platform::Kubernetes { namespace, daemon } => {
            let opts = Options { namespace: namespace.clone(), image: args.image.clone(), daemon: *daemon };
            generate::kubernetes::render(&engine.config, &sources, &opts)?
        }
        Platform::HelmValues { daemon } => {
            let opts = Options { namespace: String::new(), image: args.image.clone(), daemon: *daemon };
            generate::helm::render(&engine.config, &sources, &opts)?
        }
        Platform::Swarm => {
            let opts = Options { namespace: String::new(), image: args.image.clone(), daemon: true };
            generate::swarm::render(&engine.config, &sources, &opts)?
        }
    };
    for n in &notes {
        printer.note(n);
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text).map_err(|source| Error::WriteFile { path: path.clone(), source })?;
            if printer.json {
                printer.json(&serde_json::json!({ "output": path, "notes": notes }));
            }
        }
        None if printer.json => printer.json(&serde_json::json!({ "manifests": text, "notes": notes })),
        None => print!("{text}"),
    }
    Ok(0)
}
