//! Where things live on a target, and what a backup id looks like (public interface: see
//! docs/architecture.md, "On the target").
//!
//! ```text
//! <root>/<job>/<YYYY>/<MM>/<DD>/<backup-id>.<artifact>.<ext>.zst.age   an artifact
//! <root>/<job>/<YYYY>/<MM>/<DD>/<backup-id>.manifest.json              written last: commits the backup
//! <root>/<job>/<YYYY>/<MM>/<DD>/<backup-id>.verify.json                the newest restore drill's result
//! ```
//!
//! A backup id is `YYYYMMDDTHHMMSSZ-xxxxxx` (UTC start time plus random hex): ids sort by time as
//! strings, and carry their date so the directory of a backup follows from its id.

use jiff::Timestamp;

/// A new backup id for a backup started at `at`.
pub fn new_backup_id(at: Timestamp) -> String {
    format!("{}-{}", at.strftime("%Y%m%dT%H%M%SZ"), random_suffix())
}

/// Six random hex digits.
pub fn random_suffix() -> String {
    use rand::Rng;
    format!("{:06x}", rand::thread_rng().gen_range(0..0x100_0000u32))
}

/// The start time encoded in a backup id.
pub fn id_time(id: &str) -> Option<Timestamp> {
    let stamp = id.get(..16)?;
    let dt = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp).ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// `<job>/<YYYY>/<MM>/<DD>` for a backup id.
pub fn backup_dir(job: &str, id: &str) -> String {
    let y = id.get(0..4).unwrap_or("0000");
    let m = id.get(4..6).unwrap_or("00");
    let d = id.get(6..8).unwrap_or("00");
    format!("{job}/{y}/{m}/{d}")
}

pub fn manifest_key(job: &str, id: &str) -> String {
    format!("{}/{id}.manifest.json", backup_dir(job, id))
}

/// Key of the record of the newest restore drill of a backup (written by `drctl verify`, replaced
/// by the next drill; never part of the commit).
pub fn verify_key(job: &str, id: &str) -> String {
    format!("{}/{id}.verify.json", backup_dir(job, id))
}

/// Key of an artifact: `artifact` names it within the backup (a database), `ext` its format.
pub fn artifact_key(job: &str, id: &str, artifact: &str, ext: &str) -> String {
    format!("{}/{id}.{artifact}.{ext}.zst.age", backup_dir(job, id))
}

/// Key of a chunked artifact's recipe (`storage = "chunked"`): where its stream twin would be.
pub fn recipe_key(job: &str, id: &str, artifact: &str, ext: &str) -> String {
    format!("{}/{id}.{artifact}.{ext}.recipe.zst.age", backup_dir(job, id))
}

/// Where the deduplicated chunk repositories live on a target (`chunks/<scope>/…`, laid out in
/// `chunked::repo`). Here because uploads are locked by what their key is ([`retention_of`]).
pub const CHUNKS_ROOT: &str = "chunks";

/// How long an upload stays under Object Lock on a target that has it (`object_lock` on S3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Not locked: coordination objects a chunk repository replaces or deletes by design (lock
    /// markers, fossil records). They hold no backup data; locking them would only keep their
    /// old versions billed.
    Unlocked,
    /// `days` from the upload: what one backup owns (manifest, artifacts, recipes, drill records).
    Backup,
    /// `days` plus a slack ([`shared_slack_days`]) from the upload: packs and indexes of a chunk
    /// repository. Later backups reuse them and must extend their lock to outlive their own
    /// (`chunked::retain`); the slack means that happens for a pack about once per slack, not at
    /// every backup.
    Shared,
}

/// The retention class of an upload of `key`.
pub fn retention_of(key: &str) -> Retention {
    let Some(rest) = key.strip_prefix(CHUNKS_ROOT).and_then(|r| r.strip_prefix('/')) else {
        return Retention::Backup;
    };
    match rest.split('/').nth(1) {
        Some("locks" | "fossils") => Retention::Unlocked,
        Some("packs" | "index") => Retention::Shared,
        _ => Retention::Backup,
    }
}

/// The slack [`Retention::Shared`] adds to a lock of `days`: half of it, at least one day, at
/// most seven.
pub fn shared_slack_days(days: u32) -> u32 {
    (days / 2).clamp(1, 7)
}

/// If `key` is a manifest key, the backup id it commits.
pub fn manifest_id(key: &str) -> Option<&str> {
    let file = key.rsplit('/').next()?;
    file.strip_suffix(".manifest.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_map_to_dirs() {
        let t1: Timestamp = "2026-11-23T01:02:03Z".parse().unwrap();
        let t2: Timestamp = "2026-11-23T01:02:04Z".parse().unwrap();
        let (a, b) = (new_backup_id(t1), new_backup_id(t2));
        assert!(a < b);
        assert_eq!(id_time(&a), Some(t1));
        assert_eq!(backup_dir("pg", &a), "pg/2026/11/23");
        let mk = manifest_key("pg", &a);
        assert_eq!(manifest_id(&mk), Some(a.as_str()));
        assert!(artifact_key("pg", &a, "app", "dump").ends_with(".app.dump.zst.age"));
        let vk = verify_key("pg", &a);
        assert_eq!(vk, format!("pg/2026/11/23/{a}.verify.json"));
        assert_eq!(manifest_id(&vk), None, "a drill record is not a manifest");
    }

    #[test]
    fn retention_classes() {
        use Retention::*;
        for (key, class) in [
            ("pg/2026/11/23/x.manifest.json", Backup),
            ("pg/2026/11/23/x.db.dump.recipe.zst.age", Backup),
            ("chunks/ab12/config.json", Backup),
            ("chunks/ab12/packs/3f/3f00.pack", Shared),
            ("chunks/ab12/index/x.json", Shared),
            ("chunks/ab12/locks/x.shared.json", Unlocked),
            ("chunks/ab12/fossils/x.json", Unlocked),
            // a job named `chunks` keeps its own objects as a backup's
            ("chunksjob/2026/11/23/x.manifest.json", Backup),
        ] {
            assert_eq!(retention_of(key), class, "{key}");
        }
        assert_eq!((shared_slack_days(1), shared_slack_days(10), shared_slack_days(365)), (1, 5, 7));
    }
}
