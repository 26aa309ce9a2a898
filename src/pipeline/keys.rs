//! age keys: parsing recipients, loading identity files, generating new identities.

use std::path::Path;

use crate::{Error, Result};

/// Parse `age1…` recipients (the config validator has already rejected malformed ones).
pub fn parse_recipients(recipients: &[String]) -> Result<Vec<age::x25519::Recipient>> {
    recipients
        .iter()
        .map(|r| r.parse::<age::x25519::Recipient>().map_err(|e| Error::Encryption(format!("recipient `{r}`: {e}"))))
        .collect()
}

/// Identities loaded from an identity file; the file's content never appears in errors.
pub type Identities = Vec<Box<dyn age::Identity + Send + Sync>>;

/// Load the identities in an age identity file (`AGE-SECRET-KEY-1…` lines, comments allowed).
pub fn load_identities(path: &Path) -> Result<Identities> {
    let file = std::fs::File::open(path).map_err(|source| Error::ReadFile { path: path.to_path_buf(), source })?;
    let parsed = age::IdentityFile::from_buffer(std::io::BufReader::new(file)).map_err(|e| {
        Error::Encryption(format!("identity file `{}` is not an age identity file: {e}", path.display()))
    })?;
    let ids =
        parsed.into_identities().map_err(|e| Error::Encryption(format!("identity file `{}`: {e}", path.display())))?;
    if ids.is_empty() {
        return Err(Error::Encryption(format!("identity file `{}` holds no identity", path.display())));
    }
    Ok(ids)
}

/// The public recipients of the X25519 identities in a file (to check it matches the config).
pub fn recipients_of_identity_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile { path: path.to_path_buf(), source })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
        .filter_map(|l| l.parse::<age::x25519::Identity>().ok())
        .map(|i| i.to_public().to_string())
        .collect())
}

/// A new identity: returns (identity file text, recipient).
pub fn generate() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let created = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let text =
        format!("# created: {created} by drctl\n# public key: {recipient}\n{}\n", id.to_string().expose_secret());
    (text, recipient)
}
