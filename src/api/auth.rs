//! Bearer-token check for the POST endpoints.
//!
//! Both the presented and the configured token are hashed with SHA-256 and the digests compared
//! with [`subtle::ConstantTimeEq`]: the comparison takes the same time wherever the first
//! difference is, and since digests have a fixed length it does not reveal the token's length
//! either. Without a configured token the endpoints are disabled, never open.

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::redact::Secret;

/// Ok when `headers` carry `Authorization: Bearer <token>` matching `token`.
///
/// # Errors
/// [`ApiError::TokenNotConfigured`] (no token configured), [`ApiError::MissingToken`] (no or a
/// non-Bearer `Authorization` header), [`ApiError::InvalidToken`].
pub fn authorize(token: Option<&Secret>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Err(ApiError::TokenNotConfigured);
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or(ApiError::MissingToken)?;
    let want = Sha256::digest(token.expose().as_bytes());
    let got = Sha256::digest(presented.as_bytes());
    if bool::from(want.ct_eq(&got)) && !token.expose().is_empty() { Ok(()) } else { Err(ApiError::InvalidToken) }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_tokens() {
        let t = Secret::new("correct-horse-battery-staple");
        assert!(authorize(Some(&t), &with("Bearer correct-horse-battery-staple")).is_ok());
        assert!(authorize(Some(&t), &with("bearer correct-horse-battery-staple")).is_ok());
        assert!(matches!(authorize(Some(&t), &with("Bearer correct-horse")), Err(ApiError::InvalidToken)));
        assert!(matches!(authorize(Some(&t), &with("Bearer ")), Err(ApiError::InvalidToken)));
        assert!(matches!(authorize(Some(&t), &with("Basic Y29ycmVjdA==")), Err(ApiError::MissingToken)));
        assert!(matches!(authorize(Some(&t), &HeaderMap::new()), Err(ApiError::MissingToken)));
        assert!(matches!(
            authorize(None, &with("Bearer correct-horse-battery-staple")),
            Err(ApiError::TokenNotConfigured)
        ));
    }
}
