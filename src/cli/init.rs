//! `drctl init --kind KIND …`: a working setup from nothing. Writes a commented `drctl.toml` and
//! `jobs/NAME.toml`, a new age identity (unless `--recipient`), a chunk key, a local fs target
//! (and, if asked, an S3 or SFTP target), then runs `drctl check` on it. Never overwrites: if any
//! file it would write exists, it writes nothing.

use std::path::{Path, PathBuf};

use super::Printer;
use crate::Error;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitKind {
    Postgres,
    Redis,
    Volume,
    Vault,
    Gitlab,
}

impl InitKind {
    fn name(self) -> &'static str {
        match self {
            InitKind::Postgres => "postgres",
            InitKind::Redis => "redis",
            InitKind::Volume => "volume",
            InitKind::Vault => "vault",
            InitKind::Gitlab => "gitlab",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The kind of the first job.
    #[arg(long, value_enum)]
    pub kind: InitKind,
    /// The job's name (default: the kind).
    #[arg(long)]
    pub name: Option<String>,
    /// postgres and redis: the server's URL (`postgres://user@host:5432/db`, `redis://host:6379`);
    /// vault: its address (`https://vault:8200`).
    #[arg(long)]
    pub url: Option<String>,
    /// volume: the directory to back up.
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Where to write everything (default: the current directory).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Encrypt to this age recipient instead of creating an identity here (repeatable). The
    /// identity then stays wherever it is: backup hosts never need it.
    #[arg(long = "recipient", value_name = "AGE1…")]
    pub recipients: Vec<String>,
    /// Also an S3 target: the bucket (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
    /// or `*_file` fields in the config).
    #[arg(long, value_name = "BUCKET")]
    pub s3_bucket: Option<String>,
    /// The S3 endpoint (Hetzner: `https://fsn1.your-objectstorage.com`; default AWS).
    #[arg(long, requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    /// The S3 region (default `us-east-1`).
    #[arg(long, requires = "s3_bucket")]
    pub s3_region: Option<String>,
    /// Also an SFTP target, e.g. a Storage Box: `USER@HOST[:PORT]` (port default 23).
    #[arg(long, value_name = "USER@HOST[:PORT]")]
    pub sftp: Option<String>,
    /// Do not run `drctl check` afterwards.
    #[arg(long)]
    pub no_check: bool,
}

/// What `init` writes: the files, in order, and what to tell the user.
struct Plan {
    files: Vec<(PathBuf, String, bool)>,
    recipient: Option<String>,
    job: String,
}

/// Build the plan (pure: no file is touched).
fn plan(args: &Args, dir: &Path) -> Result<Plan, Error> {
    let usage = |flag: &str, message: String| Error::Usage {
        flag: flag.into(),
        value: String::new(),
        message,
        hint: format!("e.g. `drctl init --kind {} {}`", args.kind.name(), example(args.kind)),
    };
    let job = args.name.clone().unwrap_or_else(|| args.kind.name().to_string());
    if job.is_empty() || !job.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(usage("--name", format!("`{job}` is not a job name (letters, digits, `-`, `_`)")));
    }
    let spec = match args.kind {
        InitKind::Postgres | InitKind::Redis => {
            let url = args.url.as_deref().ok_or_else(|| usage("--url", "a server URL is needed".into()))?;
            let pw = if args.kind == InitKind::Postgres {
                "# a password in the URL is masked everywhere; better: password_file = \"secrets/pg-password\"\n"
            } else {
                "# a password in the URL is masked everywhere; better: password_file = \"secrets/redis-password\"\n"
            };
            format!("url = \"{}\"\n{pw}", toml_escape(url))
        }
        InitKind::Volume => {
            let path =
                args.path.as_deref().ok_or_else(|| usage("--path", "the directory to back up is needed".into()))?;
            let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            format!(
                "path = \"{}\"\n# exclude = [\"*.tmp\", \"cache/\"]\n\
                 # pause the writers around the backup (any kind has hooks):\n\
                 # before = [\"docker pause app\"]\n# after = [\"docker unpause app\"]\n",
                toml_escape(&path.display().to_string())
            )
        }
        InitKind::Vault => {
            let url =
                args.url.as_deref().ok_or_else(|| usage("--url", "the Vault/OpenBao address is needed".into()))?;
            format!(
                "address = \"{}\"\n# a token allowed to take raft snapshots (create the file, mode 0600)\n\
                 token_file = \"secrets/vault-token\"\n",
                toml_escape(url)
            )
        }
        InitKind::Gitlab => "# where gitlab-backup runs: here (default), or exec = { docker = \"gitlab\" }\n\
             # exec = { docker = \"gitlab\" }\n"
            .to_string(),
    };
    let (identity, recipients) = if args.recipients.is_empty() {
        let (identity, recipient) = crate::pipeline::keys::generate();
        (Some(identity), vec![recipient])
    } else {
        for r in &args.recipients {
            if r.parse::<age::x25519::Recipient>().is_err() {
                return Err(usage("--recipient", format!("`{r}` is not an age X25519 recipient (`age1…`)")));
            }
        }
        (None, args.recipients.clone())
    };

    let mut targets = vec!["local".to_string()];
    let mut target_text = format!(
        "# a directory on this machine (one copy; 3-2-1 wants another medium and an offsite copy too)\n\
         [targets.local]\ntype = \"fs\"\npath = \"{}\"\nmedium = \"disk\"\nkeep = {{ daily = 7, weekly = 4, monthly = 6 }}\n\n",
        toml_escape(&dir.join("backups").display().to_string())
    );
    if let Some(bucket) = &args.s3_bucket {
        targets.push("s3".into());
        target_text.push_str(&format!(
            "# S3 (Hetzner Object Storage, AWS, Garage, MinIO …); credentials from AWS_ACCESS_KEY_ID and\n\
             # AWS_SECRET_ACCESS_KEY, or access_key_id_file / secret_access_key_file\n\
             [targets.s3]\ntype = \"s3\"\n{}bucket = \"{}\"\nregion = \"{}\"\nmedium = \"object-storage\"\noffsite = true\n\
             keep = {{ daily = 7, weekly = 4, monthly = 6 }}\n# object_lock = {{ mode = \"compliance\", days = 30 }}\n\n",
            args.s3_endpoint.as_deref().map(|e| format!("endpoint = \"{}\"\n", toml_escape(e))).unwrap_or_default(),
            toml_escape(bucket),
            toml_escape(args.s3_region.as_deref().unwrap_or("us-east-1")),
        ));
    }
    if let Some(sftp) = &args.sftp {
        let (user, rest) =
            sftp.split_once('@').ok_or_else(|| usage("--sftp", format!("`{sftp}` is not USER@HOST[:PORT]")))?;
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| usage("--sftp", format!("`{p}` is not a port")))?),
            None => (rest, 23),
        };
        targets.push("box".into());
        target_text.push_str(&format!(
            "# SFTP (a Hetzner Storage Box, or any OpenSSH server): put the private key and the host key here:\n\
             #   ssh-keygen -t ed25519 -N '' -f secrets/sftp_ed25519   (then install secrets/sftp_ed25519.pub there)\n\
             #   ssh-keyscan -p {port} {host} > secrets/known_hosts\n\
             [targets.box]\ntype = \"sftp\"\nhost = \"{}\"\nport = {port}\nuser = \"{}\"\n\
             key_file = \"secrets/sftp_ed25519\"\nknown_hosts_file = \"secrets/known_hosts\"\nmedium = \"remote-disk\"\noffsite = true\n\
             keep = {{ daily = 7, weekly = 4, monthly = 6 }}\n\n",
            toml_escape(host),
            toml_escape(user),
        ));
    }

    let recipients_toml: Vec<String> = recipients.iter().map(|r| format!("\"{r}\"")).collect();
    let identity_line = if identity.is_some() {
        "# the identity decrypts backups: only restore needs it. Keep a copy OFF this machine (a\n\
         # password manager); on backup-only hosts leave it out entirely.\nidentity_file = \"age.key\"\n"
    } else {
        "# the identity that decrypts them is not on this machine: restore needs `identity_file`\n\
         # identity_file = \"age.key\"\n"
    };
    let main = format!(
        "# drctl configuration, written by `drctl init`. Every key: README, \"Configuration\".\n\
         # Check it with `drctl check`; back up with `drctl run {job}`; restore with\n\
         # `drctl restore {job} --latest …`.\n\n\
         [catalog]\n# the record of every backup (rebuildable from the targets: `drctl catalog rebuild`)\n\
         url = \"sqlite://{}\"\n\n\
         [encryption]\n# every backup is encrypted to these age recipients (public keys)\nrecipients = [{}]\n{identity_line}\
         # deduplicated storage: every host backing up to the same targets needs this same file\n\
         chunk_key_file = \"chunk.key\"\n\n\
         {target_text}\
         # [daemon]\n# timezone = \"Europe/Berlin\"     # schedules are read in this zone\n\n\
         # [notify.phone]                     # a message when a backup or drill fails\n\
         # type = \"ntfy\"\n# url = \"https://ntfy.sh/your-secret-topic\"\n",
        toml_escape(&dir.join("catalog.db").display().to_string()),
        recipients_toml.join(", "),
    );
    let targets_toml: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let job_text = format!(
        "# job `{job}`, written by `drctl init`: `drctl run {job}` backs it up now.\n\
         kind = \"{}\"\n# every backup goes to all of these targets at once\ntargets = [{}]\n\
         # when `drctl daemon` runs it (cron, in [daemon] timezone)\nschedule = \"0 3 * * *\"\n\
         # a restore drill each morning: restores the newest backup into a scratch instance and checks it\n\
         verify = {{ schedule = \"0 6 * * *\" }}\n{spec}",
        args.kind.name(),
        targets_toml.join(", "),
    );
    let mut files =
        vec![(dir.join("drctl.toml"), main, false), (dir.join("jobs").join(format!("{job}.toml")), job_text, false)];
    if let Some(identity) = identity {
        files.push((dir.join("age.key"), identity, true));
    }
    files.push((dir.join("chunk.key"), crate::chunked::key::generate(), true));
    Ok(Plan { files, recipient: recipients.first().cloned(), job })
}

fn example(kind: InitKind) -> &'static str {
    match kind {
        InitKind::Postgres => "--url postgres://postgres@localhost:5432/app",
        InitKind::Redis => "--url redis://localhost:6379",
        InitKind::Volume => "--path /srv/app/data",
        InitKind::Vault => "--url https://vault:8200",
        InitKind::Gitlab => "",
    }
}

/// A TOML basic string's content.
fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub async fn run(args: &Args, printer: &Printer) -> Result<i32, Error> {
    std::fs::create_dir_all(&args.dir).map_err(|source| Error::WriteFile { path: args.dir.clone(), source })?;
    let dir = std::path::absolute(&args.dir).map_err(|source| Error::WriteFile { path: args.dir.clone(), source })?;
    let plan = plan(args, &dir)?;
    if let Some((existing, _, _)) = plan.files.iter().find(|(p, _, _)| p.exists()) {
        return Err(Error::Usage {
            flag: "--dir".into(),
            value: dir.display().to_string(),
            message: format!("`{}` exists: `drctl init` never overwrites; nothing was written", existing.display()),
            hint: "use another `--dir`, or move the existing setup aside".into(),
        });
    }
    std::fs::create_dir_all(dir.join("jobs")).map_err(|source| Error::WriteFile { path: dir.join("jobs"), source })?;
    for (path, text, secret) in &plan.files {
        write_new(path, text, *secret)?;
    }
    let config = dir.join("drctl.toml");
    if printer.json {
        printer.json(&serde_json::json!({
            "config": config,
            "files": plan.files.iter().map(|(p, _, _)| p).collect::<Vec<_>>(),
            "recipient": plan.recipient,
            "job": plan.job,
        }));
    } else {
        for (path, _, _) in &plan.files {
            println!("wrote {}", path.display());
        }
        printer.note(&format!(
            "next: `drctl --config {c} run {j}`, then `drctl --config {c} restore {j} --latest --dry-run`; \
             keep a copy of age.key somewhere else (without it no backup can be restored)",
            c = config.display(),
            j = plan.job
        ));
    }
    // --json: one document on stdout; `drctl --json check` is the check's own
    if args.no_check || printer.json {
        return Ok(0);
    }
    let loaded = crate::config::load(&config)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let engine = crate::engine::Engine::new(loaded);
    super::check_deadline::run(&engine, &super::check::Args { read_data: false, fresh: true }, printer).await
}

/// Create `path` (never overwriting); secrets get mode 0600.
fn write_new(path: &Path, text: &str, secret: bool) -> Result<(), Error> {
    super::keygen::write_new_with_mode(path, text, if secret { 0o600 } else { 0o644 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kind: InitKind) -> Args {
        Args {
            kind,
            name: None,
            url: None,
            path: None,
            dir: PathBuf::from("/tmp/x"),
            recipients: vec![],
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: None,
            sftp: None,
            no_check: true,
        }
    }

    #[test]
    fn every_kind_renders_a_config_that_loads() {
        for kind in [InitKind::Postgres, InitKind::Redis, InitKind::Volume, InitKind::Vault, InitKind::Gitlab] {
            let mut a = args(kind);
            a.url = Some(
                match kind {
                    InitKind::Redis => "redis://h:6379",
                    InitKind::Vault => "https://vault:8200",
                    _ => "postgres://u@h:5432/db",
                }
                .into(),
            );
            a.path = Some("/srv".into());
            a.s3_bucket = Some("b".into());
            a.sftp = Some("u123@u123.your-storagebox.de".into());
            let p = plan(&a, Path::new("/tmp/x")).unwrap();
            let main = &p.files[0].1;
            let job = &p.files[1].1;
            let text = format!("{main}\n[jobs.{}]\n{job}", p.job);
            let c = crate::config::load_str(Path::new("/tmp/x/drctl.toml"), &text, Vec::new())
                .unwrap_or_else(|e| panic!("{kind:?}: {e}\n{text}"));
            assert_eq!(c.jobs[kind.name()].common.targets, ["local", "s3", "box"]);
        }
    }

    #[test]
    fn missing_source_and_bad_values_are_usage_errors() {
        assert!(plan(&args(InitKind::Postgres), Path::new("/tmp/x")).is_err());
        let mut a = args(InitKind::Volume);
        a.path = Some("/srv".into());
        a.sftp = Some("no-at-sign".into());
        assert!(plan(&a, Path::new("/tmp/x")).is_err());
        a.sftp = None;
        a.recipients = vec!["age1nope".into()];
        assert!(plan(&a, Path::new("/tmp/x")).is_err());
    }
}
