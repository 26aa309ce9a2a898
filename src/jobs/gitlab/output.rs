//! Finding the backup ID in what the backup command printed — never by looking for the newest
//! file, which could be another run's archive.
//!
//! `gitlab-backup create` (lib/backup/manager.rb) logs, each line behind a `<time> -- ` prefix,
//! `Creating backup archive: <ID>_gitlab_backup.tar ... ` and `… done`, and since GitLab 15 ends
//! with `Backup <ID> is done.`. The chart's `backup-utility` ends with
//! `[DONE] Backup can be found at s3://<bucket>/<ID>_gitlab_backup.tar` (or `gs://…`).

/// File name suffix of every backup archive.
pub const SUFFIX: &str = "_gitlab_backup.tar";

/// `<ID>_gitlab_backup.tar`.
pub fn archive_name(id: &str) -> String {
    format!("{id}{SUFFIX}")
}

/// A backup ID is one file-name-safe word (`1700000000_2023_11_14_16.5.1-ee`, or whatever
/// `BACKUP=` named it).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id.len() <= 200
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The GitLab version in a default ID: `<unix time>_<YYYY>_<MM>_<DD>_<version>`.
pub fn version_from_id(id: &str) -> Option<String> {
    let mut it = id.splitn(5, '_');
    let digits = |s: Option<&str>, n: usize| s.is_some_and(|s| s.len() == n && s.bytes().all(|b| b.is_ascii_digit()));
    if !digits(it.next(), 10) || !digits(it.next(), 4) || !digits(it.next(), 2) || !digits(it.next(), 2) {
        return None;
    }
    it.next().filter(|v| !v.is_empty()).map(str::to_string)
}

/// Why no single ID could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    None,
    Several(Vec<String>),
}

fn single(ids: Vec<String>) -> Result<String, NotFound> {
    let mut distinct: Vec<String> = Vec::new();
    for id in ids {
        if !distinct.contains(&id) {
            distinct.push(id);
        }
    }
    match distinct.len() {
        0 => Err(NotFound::None),
        1 => Ok(distinct.remove(0)),
        _ => Err(NotFound::Several(distinct)),
    }
}

/// The ID `gitlab-backup create` reported: from `Backup <ID> is done.` when present, else from
/// `Creating backup archive: <ID>_gitlab_backup.tar`.
pub fn omnibus_id(output: &str) -> Result<String, NotFound> {
    let mut done = Vec::new();
    let mut archive = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        if let Some(i) = line.find("Backup ")
            && let Some(id) = line[i + "Backup ".len()..].strip_suffix(" is done.")
            && valid_id(id)
        {
            done.push(id.to_string());
        }
        if let Some(i) = line.find("Creating backup archive: ") {
            let word = line[i + "Creating backup archive: ".len()..].split_whitespace().next().unwrap_or("");
            if let Some(id) = word.strip_suffix(SUFFIX)
                && valid_id(id)
            {
                archive.push(id.to_string());
            }
        }
    }
    if done.is_empty() { single(archive) } else { single(done) }
}

/// The archive URL and ID `backup-utility` reported (`[DONE] Backup can be found at URL`).
pub fn helm_id(output: &str) -> Result<(String, String), NotFound> {
    let mut found = Vec::new();
    for line in output.lines() {
        if let Some(i) = line.find("Backup can be found at ") {
            let url = line[i + "Backup can be found at ".len()..].trim();
            let file = url.rsplit('/').next().unwrap_or("");
            if let Some(id) = file.strip_suffix(SUFFIX)
                && valid_id(id)
                && url.contains("://")
            {
                found.push(format!("{id} {url}"));
            }
        }
    }
    single(found).map(|s| {
        let (id, url) = s.split_once(' ').unwrap_or_default();
        (id.to_string(), url.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OMNIBUS: &str = "\
2023-11-14 16:00:00 UTC -- Dumping database ... 
2023-11-14 16:00:01 UTC -- Dumping database ... done
2023-11-14 16:00:01 UTC -- Dumping container registry images ... [DISABLED]
2023-11-14 16:00:02 UTC -- Creating backup archive: 1700000000_2023_11_14_16.5.1_gitlab_backup.tar ... 
2023-11-14 16:00:03 UTC -- Creating backup archive: 1700000000_2023_11_14_16.5.1_gitlab_backup.tar ... done
2023-11-14 16:00:03 UTC -- Uploading backup archive to remote storage  ... [SKIPPED]
2023-11-14 16:00:03 UTC -- Deleting old backups ... [SKIPPED]
2023-11-14 16:00:03 UTC -- Warning: Your gitlab.rb and gitlab-secrets.json files contain sensitive data 
and are not included in this backup. You will need these files to restore a backup.
Please back them up manually.
2023-11-14 16:00:03 UTC -- Backup 1700000000_2023_11_14_16.5.1 is done.
";

    #[test]
    fn omnibus_formats() {
        assert_eq!(omnibus_id(OMNIBUS).unwrap(), "1700000000_2023_11_14_16.5.1");
        // GitLab before 15: no "is done" line, no time prefix
        let old = "Dumping uploads ...\ndone\nCreating backup archive: 1560323223_2019_06_12_11.10.0-ee_gitlab_backup.tar ... done\nUploading backup archive to remote storage  ... skipped\n";
        assert_eq!(omnibus_id(old).unwrap(), "1560323223_2019_06_12_11.10.0-ee");
        assert_eq!(omnibus_id("Dumping database ... done\n"), Err(NotFound::None));
        assert_eq!(omnibus_id(""), Err(NotFound::None));
        let two = "Backup 1_a is done.\nBackup 2_b is done.\n";
        assert_eq!(omnibus_id(two), Err(NotFound::Several(vec!["1_a".into(), "2_b".into()])));
        // a path or a shell word is not an ID
        assert_eq!(omnibus_id("Backup ../../etc is done.\n"), Err(NotFound::None));
    }

    #[test]
    fn helm_format() {
        let out = "Packing up backup tar\n[DONE] Backup can be found at s3://gitlab-backups/1700000000_2023_11_14_16.5.1-ee_gitlab_backup.tar\n";
        assert_eq!(
            helm_id(out).unwrap(),
            (
                "1700000000_2023_11_14_16.5.1-ee".to_string(),
                "s3://gitlab-backups/1700000000_2023_11_14_16.5.1-ee_gitlab_backup.tar".to_string()
            )
        );
        assert_eq!(helm_id("Packing up backup tar\n"), Err(NotFound::None));
    }

    #[test]
    fn versions_from_ids() {
        assert_eq!(version_from_id("1700000000_2023_11_14_16.5.1").as_deref(), Some("16.5.1"));
        assert_eq!(version_from_id("1493107454_2018_04_25_10.6.4-ce").as_deref(), Some("10.6.4-ce"));
        assert_eq!(version_from_id("1493107454"), None);
        assert_eq!(version_from_id("dump"), None);
        assert_eq!(archive_name("x"), "x_gitlab_backup.tar");
    }
}
