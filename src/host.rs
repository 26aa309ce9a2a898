//! This host's name, as records and logs show it (a manifest's and a drill record's `host`, the
//! daemon's lock owner).

/// The kernel's host name, else `$HOSTNAME`, else `unknown`.
pub fn name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}
