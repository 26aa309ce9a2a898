//! Notifications (issue 18) against a local HTTP receiver (a plain TCP server in this test that
//! records every request): a webhook's JSON body, an ntfy message with its title, priority and
//! token, healthchecks pings (`/start`, success, `/fail`), the per-channel event and job filters,
//! a failed drill, and a receiver that is down (the backup is not affected, its URL never shown).

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::*;
use daemon::*;

#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An HTTP server on 127.0.0.1 that answers 200 to everything and keeps what it got.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Request>>> = Arc::default();
        let keep = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
                let len = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                keep.lock().unwrap().push(Request { path, headers, body: String::from_utf8_lossy(&body).into() });
                let _ = (&conn).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Receiver { url, got }
    }

    /// What reached `path` (the channel's own path on this receiver), in order.
    fn at(&self, prefix: &str) -> Vec<Request> {
        self.got.lock().unwrap().iter().filter(|r| r.path.starts_with(prefix)).cloned().collect()
    }
}

/// A volume job `vol` (its `before` hook fails while `fail` exists) and three channels on `rx`.
fn setup(s: &Scratch, rx: &Receiver) {
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "notify\n").unwrap();
    std::fs::write(s.path("ntfy.token"), "tk_secret_ntfy_token\n").unwrap();
    std::fs::write(s.path("hook.url"), format!("{}/webhook/s3cr3t-path-token\n", rx.url)).unwrap();
    s.write_config(&format!(
        "{head}[notify.ops]\ntype = \"webhook\"\nurl_file = \"{hook}\"\n\n\
         [notify.phone]\ntype = \"ntfy\"\nurl = \"{u}/ntfy/drctl-topic\"\ntoken_file = \"{token}\"\n\n\
         [notify.hc]\ntype = \"healthchecks\"\nurl = \"{u}/ping/1234-uuid\"\njobs = [\"vol\"]\n\n\
         [jobs.vol]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{data}\"\nbefore = [\"test ! -e '{fail}'\"]\n",
        head = s.head(),
        hook = s.path("hook.url").display(),
        token = s.path("ntfy.token").display(),
        u = rx.url,
        data = data.display(),
        fail = s.path("fail").display(),
    ));
}

#[test]
fn channels_get_the_events_they_subscribe_to_in_their_formats() {
    let rx = Receiver::start();
    let s = Scratch::new();
    setup(&s, &rx);

    // a good backup: only the pings (start, then success); the problem channels stay quiet
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 0, "{r:?}");
    let pings: Vec<String> = rx.at("/ping/").iter().map(|r| r.path.clone()).collect();
    assert_eq!(pings, ["/ping/1234-uuid/start", "/ping/1234-uuid"]);
    assert!(rx.at("/webhook/").is_empty() && rx.at("/ntfy/").is_empty());

    // a failed backup
    std::fs::write(s.path("fail"), "").unwrap();
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 1, "{r:?}");
    let hook = rx.at("/webhook/");
    assert_eq!(hook.len(), 1, "{hook:?}");
    assert_eq!(hook[0].path, "/webhook/s3cr3t-path-token");
    assert_eq!(hook[0].header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&hook[0].body).unwrap();
    assert_eq!(body["event"], "failure");
    assert_eq!(body["job"], "vol");
    assert_eq!(body["operation"], "backup");
    assert_eq!(body["outcome"], "failed");
    assert!(body["backup_id"].as_str().unwrap().len() > 16, "{body}");
    assert!(body["error"].as_str().unwrap().contains("before hook 1 of 1"), "{body}");
    assert!(body["hint"].as_str().is_some(), "{body}");
    let ntfy = rx.at("/ntfy/");
    assert_eq!(ntfy.len(), 1, "{ntfy:?}");
    assert_eq!(ntfy[0].header("authorization"), Some("Bearer tk_secret_ntfy_token"));
    assert_eq!(ntfy[0].header("priority"), Some("high"));
    assert_eq!(ntfy[0].header("title"), Some("drctl: vol backup failed"));
    assert!(ntfy[0].body.contains("before hook 1 of 1"), "{:?}", ntfy[0]);
    let pings: Vec<String> = rx.at("/ping/").iter().map(|r| r.path.clone()).collect();
    assert_eq!(pings[2..], ["/ping/1234-uuid/start".to_string(), "/ping/1234-uuid/fail".to_string()]);
    assert!(rx.at("/ping/").last().unwrap().body.contains("before hook"), "the fail ping says why");

    // a drill that fails (the newest backup's data gone from the target) reaches the webhook
    std::fs::remove_file(s.path("fail")).unwrap();
    let files = s.fs_files();
    for f in files.iter().filter(|f| f.ends_with(".data.tar.zst.age")) {
        std::fs::remove_file(s.path("backups").join(f)).unwrap();
    }
    let r = run(s.drctl().args(["verify", "vol"]));
    assert_eq!(r.code, 1, "{r:?}");
    let hook = rx.at("/webhook/");
    let last: serde_json::Value = serde_json::from_str(&hook.last().unwrap().body).unwrap();
    assert_eq!((last["event"].as_str(), last["operation"].as_str()), (Some("drill_failed"), Some("drill")), "{last}");
}

#[test]
fn a_receiver_that_is_down_does_not_fail_the_backup_nor_show_its_url() {
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "x\n").unwrap();
    // a port nothing listens on: bound, then released
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    s.write_config(&format!(
        "{}[notify.hc]\ntype = \"healthchecks\"\nurl = \"http://127.0.0.1:{port}/ping/secret-uuid-4711\"\n\n\
         [jobs.vol]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{}\"\n",
        s.head(),
        data.display()
    ));
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("notification not delivered"), "{r:?}");
    assert!(!r.stderr.contains("secret-uuid-4711"), "the URL is a secret: {r:?}");
}

#[test]
fn notify_configuration_errors_name_the_channel() {
    let s = Scratch::new();
    s.write_config(&format!(
        "{}[notify.a]\ntype = \"ntfy\"\n\n[notify.b]\ntype = \"webhook\"\nurl = \"ftp://x\"\n\n\
         [notify.c]\ntype = \"webhook\"\nurl = \"http://x\"\njobs = [\"nope\"]\nevents = [\"failure\"]\n",
        s.head()
    ));
    let r = run(s.drctl().args(["check"]));
    assert_eq!(r.code, 2, "{r:?}");
    for want in [
        "notify.a",
        "needs `url` or `url_file`",
        "notify.b.url",
        "not an http(s) URL",
        "notify.c.jobs[0]",
        "unknown job `nope`",
    ] {
        assert!(r.stderr.contains(want), "`{want}` in {}", r.stderr);
    }
    s.write_config(&format!("{}[notify.d]\ntype = \"pager\"\nurl = \"http://x\"\n", s.head()));
    let r = run(s.drctl().args(["check"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("notify.d.type") && r.stderr.contains("`webhook`, `ntfy`, `healthchecks`"), "{r:?}");
}

#[test]
fn the_daemon_says_stale_once_per_stretch_and_counts_what_it_could_not_deliver() {
    // SAFETY: nextest runs each test in its own process; set before any thread reads it
    unsafe { std::env::set_var("DRCTL_TEST_WATCH_MS", "200") };
    let rx = Receiver::start();
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "stale\n").unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let api = free_addr();
    // no schedule: the job is run from outside (a CronJob); the daemon only watches it
    s.write_config(&format!(
        "{}[api]\nlisten = \"{api}\"\n\n[notify.ops]\ntype = \"webhook\"\nurl = \"{}/webhook\"\nevents = [\"stale\"]\n\n\
         [notify.down]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/x\"\nevents = [\"stale\"]\n\n\
         [jobs.vol]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{}\"\nrpo = \"2s\"\n",
        s.head(),
        rx.url,
        data.display()
    ));
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 0, "{r:?}");
    let mut d = Daemon::start(&s, "daemon", &api);
    let stale = |rx: &Receiver| {
        rx.at("/webhook")
            .iter()
            .filter(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["event"] == "stale")
            .count()
    };
    // fresh at the start; stale once the 2 s rpo passed
    wait_for(std::time::Duration::from_secs(30), "a stale notification", || (stale(&rx) >= 1).then_some(()));
    let body: serde_json::Value = serde_json::from_str(&rx.at("/webhook")[0].body).unwrap();
    assert_eq!((body["job"].as_str(), body["outcome"].as_str()), (Some("vol"), Some("stale")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("rpo 2s"), "{body}");
    // the channel that is down: one failure counted, once
    let failures = "drctl_notify_failures_total{channel=\"down\"}";
    wait_for(std::time::Duration::from_secs(30), "the failed delivery counted", || {
        (d.metric(failures) >= 1.0).then_some(())
    });
    // still stale for five more watch periods: nothing more is sent (an absence needs a window of
    // time to be seen; this waits for no event)
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(stale(&rx), 1, "one notification per stretch, not one per look: {:?}", rx.at("/webhook"));
    // a backup makes it fresh; once the rpo passes again, a second stretch, a second notification
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 0, "{r:?}");
    wait_for(std::time::Duration::from_secs(30), "a second stale notification", || (stale(&rx) >= 2).then_some(()));
    wait_for(std::time::Duration::from_secs(30), "the second failure counted", || {
        (d.metric(failures) >= 2.0).then_some(())
    });
    let text = d.get("/metrics").1;
    assert_eq!(d.stop(std::time::Duration::from_secs(30)).0, 0, "{}", d.log());
    // the watch ran every 200 ms for seconds: one notification per stretch, not one per look
    assert_eq!(stale(&rx), 2, "{:?}", rx.at("/webhook"));
    assert_eq!(metric(&text, failures), 2.0, "{text}");
}
