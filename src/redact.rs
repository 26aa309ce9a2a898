//! Keeping secrets out of everything drctl prints or stores.
//!
//! Two layers: values known to be secret are wrapped in [`Secret`] (whose `Debug`, `Display` and `Serialize`
//! all print `***`), and every secret value loaded from the configuration is
//! also registered here so that [`scrub`] can remove it from free text that drctl did not write
//! itself (a child process's stderr, a server's error body) before that text reaches a log or error.
//! URLs are shown with their password stripped ([`url_for_display`]).

use std::fmt;
use std::sync::{OnceLock, RwLock};

const MASK: &str = "***";

fn registry() -> &'static RwLock<Vec<String>> {
    static REG: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    REG.get_or_init(|| RwLock::new(Vec::new()))
}

/// Remember a secret value so that [`scrub`] removes it from any text. Values shorter than four
/// characters are not registered: masking them would mangle ordinary words.
pub fn register(secret: &str) {
    if secret.len() < 4 {
        return;
    }
    let mut reg = registry().write().unwrap_or_else(|e| e.into_inner());
    if !reg.iter().any(|s| s == secret) {
        reg.push(secret.to_string());
        // longest first, so a secret that contains another is masked whole
        reg.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Replace every registered secret in `text` with `***`.
pub fn scrub(text: &str) -> String {
    let reg = registry().read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for s in reg.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// Decode `%XX` escapes (URL user names, passwords and paths); invalid escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL with any password replaced by `***`, for messages. Strings that do not parse as URLs are
/// scrubbed instead.
pub fn url_for_display(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some(MASK));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let secret = matches!(k.as_ref(), "password" | "sslpassword" | "secret" | "token");
                    (k.into_owned(), if secret { MASK.to_string() } else { v.into_owned() })
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            scrub(u.as_str())
        }
        Err(_) => scrub(raw),
    }
}

/// Serialize a URL with its password masked (for config fields that are URLs).
pub fn serialize_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&url_for_display(url))
}

/// [`serialize_url`] for optional URLs.
pub fn serialize_opt_url<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&url_for_display(u)),
        None => s.serialize_none(),
    }
}

/// A secret value: prints and serializes as `***`, registered for scrubbing on creation.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Secret(value)
    }

    /// The secret itself, for handing to the one place that needs it (a connection, a signer).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
    }

    #[test]
    fn scrub_removes_registered_values() {
        register("s3cr3t-token-value");
        assert_eq!(scrub("auth failed for s3cr3t-token-value!"), "auth failed for ***!");
    }

    #[test]
    fn url_password_is_stripped() {
        let shown = url_for_display("postgres://backup:pa55word@db:5432/app?sslmode=require&password=x1");
        assert!(!shown.contains("pa55word"), "{shown}");
        assert!(!shown.contains("x1"), "{shown}");
        assert!(shown.contains("backup:***@db:5432/app"), "{shown}");
    }
}
