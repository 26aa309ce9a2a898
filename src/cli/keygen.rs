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
    #[arg(long, short, conflicts_with = "chunk_key")]
    pub output: Option<PathBuf>,
    /// Instead: write a new chunk key for deduplicated storage (`storage = "chunked"`) to this
    /// file (mode 0600; refuses to overwrite), for `encryption.chunk_key_file`. Backup hosts need
    /// it; restore does not.
    #[arg(long, value_name = "FILE")]
    pub chunk_key: Option<PathBuf>,
}

/// Create `path` (0600, never overwriting) holding `text`.
fn write_new(path: &std::path::Path, text: &str) -> Result<(), Error> {
    write_new_with_mode(path, text, 0o600)
}

/// Create `path` with `mode` (never overwriting) holding `text`, synced.
pub(super) fn write_new_with_mode(path: &std::path::Path, text: &str, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| Error::WriteFile { path: path.to_path_buf(), source })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|source| Error::WriteFile { path: path.to_path_buf(), source })
}

pub fn run(args: &Args, printer: &Printer) -> Result<i32, Error> {
    if let Some(path) = &args.chunk_key {
        write_new(path, &crate::chunked::key::generate())?;
        if printer.json {
            printer.json(&serde_json::json!({ "chunk_key_file": path }));
        } else {
            printer.note(&format!(
                "chunk key written to {}; set `chunk_key_file` under [encryption] to it and give every host that backs up to the same targets the same file",
                path.display()
            ));
        }
        return Ok(0);
    }
    let (identity, recipient) = keys::generate();
    match &args.output {
        Some(path) => {
            write_new(path, &identity)?;
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
