//! Secrets given as files (`*_file` settings): read where they are used, never kept in the
//! config's text or shown.

use std::path::Path;

use crate::redact::Secret;

/// Read a `*_file` secret: the first line, without surrounding whitespace.
///
/// # Errors
/// [`crate::Error::ReadFile`] naming the file (never its content).
pub fn read_secret_file(path: &Path) -> crate::Result<Secret> {
    let text =
        std::fs::read_to_string(path).map_err(|source| crate::Error::ReadFile { path: path.to_path_buf(), source })?;
    Ok(Secret::new(text.lines().next().unwrap_or("").trim()))
}
