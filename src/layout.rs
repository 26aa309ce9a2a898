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
}
