//! `drctl keygen [--output FILE]`: a new age X25519 identity.

use std::io::Write;
use std::path::PathBuf;

use super::Printer;
use crate::Error;
use crate::pipeline::keys;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write the identity to this file (mode 0600; refuses to overwrite) and print the recipient.
    /// Without it the identity goes to stdout, as with age-keygen.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn run(args: &Args, printer: &Printer) -> Result<i32, Error> {
    let (identity, recipient) = keys::generate();
    match &args.output {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| Error::WriteFile { path: path.clone(), source })?;
            f.write_all(identity.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|source| Error::WriteFile { path: path.clone(), source })?;
            if printer.json {
                printer.json(&serde_json::json!({ "recipient": recipient, "identity_file": path }));
            } else {
                println!("{recipient}");
                printer.note(&format!(
                    "identity written to {}; keep it OFF the backup hosts (only restore needs it) and put the recipient above in `encryption.recipients`",
                    path.display()
                ));
            }
        }
        None => {
            print!("{identity}");
            eprintln!("Public key: {recipient}");
        }
    }
    Ok(0)
}
