//! The next step after a failed target operation, chosen by what the failure says: refused
//! credentials, no access, a missing bucket and a stalled target each get their own hint (wrong
//! credentials are not "retry once the target is back"), the rest one by its [`FailureKind`].

use crate::error::FailureKind;

/// The next step after a failed target operation, from what failed: wrong credentials are not
/// "retry once the target is back". `message` is the error's text (S3 errors carry the HTTP status
/// and the S3 error code, see `s3::describe`).
pub fn hint(target: &str, kind: FailureKind, message: &str) -> String {
    if let Some(h) = cause_hint(target, message) {
        return h;
    }
    match kind {
        FailureKind::Transient => format!("target `{target}` may be down or overloaded: retry, and run `drctl check`"),
        FailureKind::Permanent => {
            format!("check the credentials and permissions of target `{target}`; `drctl check` tests them")
        }
        FailureKind::NotFound => {
            format!("the object is missing on target `{target}`: try another target or `drctl catalog rebuild`")
        }
    }
}

/// The hint for a target failure whose cause the text names (refused credentials, no access,
/// no bucket, a stalled target), `None` when it names none of these. `drctl run` prints it under
/// each target that got no copy.
pub fn cause_hint(target: &str, message: &str) -> Option<String> {
    let has = |needles: &[&str]| needles.iter().any(|n| message.contains(n));
    let low = message.to_ascii_lowercase();
    if has(&["`InvalidAccessKeyId`", "`SignatureDoesNotMatch`", "HTTP 401", "`InvalidToken`", "`ExpiredToken`"])
        || (has(&["HTTP 403"]) && low.contains("signature"))
    {
        return Some(format!(
            "the store refused the credentials of target `{target}`: check `access_key_id` and `secret_access_key` \
             (or their `_file`s); `drctl check` tests them"
        ));
    }
    if has(&["`AccessDenied`", "HTTP 403"]) {
        return Some(format!(
            "target `{target}` refused access: check its key's permissions on the bucket (and the key pair itself); \
             `drctl check` tests them"
        ));
    }
    if has(&["`NoSuchBucket`"]) {
        return Some(format!(
            "the bucket of target `{target}` does not exist: create it, or fix `bucket` (and `endpoint`, `region`)"
        ));
    }
    if has(&["timed out", "no answer within", "accepted no data for"]) {
        return Some(format!(
            "target `{target}` stopped answering (stalled or overloaded): retry once the target is back (`drctl sync` \
             copies missing backups); `timeouts` on the target sets how long drctl waits"
        ));
    }
    None
}
