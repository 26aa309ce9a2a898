//! 3-2-1 for one job, as a pure function: copies = 1 (the live data) + targets holding the
//! backup; media = distinct `medium` among those targets; offsite = any of them `offsite = true`.
//! A job meets 3-2-1 with at least 3 copies, 2 media and 1 offsite copy.

use std::collections::BTreeSet;

use serde::Serialize;

/// What 3-2-1 needs to know about a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub target: String,
    pub medium: String,
    pub offsite: bool,
}

/// The 3-2-1 state of one backup (normally a job's newest committed backup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule321 {
    /// 1 (the live data) + the targets holding the backup.
    pub copies: usize,
    /// Distinct media among the targets holding it.
    pub media: usize,
    /// Whether one of them is offsite.
    pub offsite: bool,
    pub ok: bool,
    /// What is missing, in words, when not ok.
    pub missing: Vec<String>,
}

/// Evaluate 3-2-1 for a backup held by `holders` (a subset of the job's placements).
pub fn evaluate(holders: &[&Placement]) -> Rule321 {
    let copies = 1 + holders.len();
    let media: BTreeSet<&str> = holders.iter().map(|p| p.medium.as_str()).collect();
    let offsite = holders.iter().any(|p| p.offsite);
    let mut missing = Vec::new();
    if copies < 3 {
        missing.push(format!("{copies} copies (live data + {} targets), need 3", holders.len()));
    }
    if media.len() < 2 {
        missing.push(format!("{} medium, need 2 distinct `medium` values", media.len()));
    }
    if !offsite {
        missing.push("no offsite copy (a target with `offsite = true`)".into());
    }
    Rule321 { copies, media: media.len(), offsite, ok: missing.is_empty(), missing }
}

/// Whether a job whose backups go to all of `targets` can ever meet 3-2-1 (config validation).
pub fn achievable(targets: &[Placement]) -> Rule321 {
    evaluate(&targets.iter().collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(target: &str, medium: &str, offsite: bool) -> Placement {
        Placement { target: target.into(), medium: medium.into(), offsite }
    }

    #[test]
    fn table() {
        let fs = p("local", "disk", false);
        let sftp = p("box", "remote-disk", true);
        let s3 = p("s3", "object-storage", true);
        let fs2 = p("local2", "disk", false);
        /// holders → (copies, media, offsite, ok)
        type Case<'a> = (Vec<&'a Placement>, (usize, usize, bool, bool));
        let cases: Vec<Case> = vec![
            (vec![&fs, &sftp, &s3], (4, 3, true, true)),
            (vec![&fs, &s3], (3, 2, true, true)),
            (vec![&fs, &fs2], (3, 1, false, false)),
            (vec![&s3], (2, 1, true, false)),
            (vec![], (1, 0, false, false)),
            (vec![&fs, &sftp], (3, 2, true, true)),
        ];
        for (holders, (copies, media, offsite, ok)) in cases {
            let r = evaluate(&holders);
            assert_eq!((r.copies, r.media, r.offsite, r.ok), (copies, media, offsite, ok), "{holders:?}");
            assert_eq!(r.ok, r.missing.is_empty());
        }
    }
}
