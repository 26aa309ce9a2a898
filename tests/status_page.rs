//! The status page in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `scripts/services.sh install`) loads `GET /` of the API served over a catalog that real
//! `drctl run`s filled, the test checks the rows of the rendered DOM (job names and their
//! red/amber/green classes) and the screenshot, which it keeps as a test artifact in
//! `target/test-artifacts/status-page.png`.
//!
//! A missing Chromium is a failure, never a skip. [`dump_dom`] and [`screenshot`] take any URL:
//! `status_page_of_a_running_daemon` starts the real `drctl daemon` binary on fast schedules, waits
//! until it has backed up on its own, and checks its page the same way
//! (`target/test-artifacts/status-page-daemon.png`).

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use daemon::*;
use drctl::api::{Accepted, ApiState, Control, ControlError};
use tokio_util::sync::CancellationToken;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The scheduler's answers for the page: `good` is scheduled and `single` is running.
struct PageControl;

impl Control for PageControl {
    fn run_now(&self, job: &str) -> Result<Accepted, ControlError> {
        Ok(Accepted::backup(job))
    }
    fn verify_now(&self, job: &str) -> Result<Accepted, ControlError> {
        Ok(Accepted::verify(job))
    }
    fn next_run(&self, job: &str) -> Option<jiff::Timestamp> {
        (job == "good").then(|| "2030-01-02T03:05:00Z".parse().unwrap())
    }
    fn running(&self, job: &str) -> bool {
        job == "single"
    }
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Volume jobs with real backups: `good` (3-2-1 met: green), `single` (one target: amber),
/// `broken` (its `before` hook fails: red).
fn scratch_with_backups() -> Scratch {
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("file.txt"), "status page\n".repeat(5000)).unwrap();
    let config = format!(
        "{head}[daemon]\ntimezone = \"Europe/Berlin\"\n\n[targets.offsite]\ntype = \"fs\"\npath = \"{offsite}\"\nmedium = \"usb\"\noffsite = true\n\n\
         [jobs.good]\nkind = \"volume\"\ntargets = [\"local\", \"offsite\"]\npath = \"{data}\"\nschedule = \"*/5 * * * *\"\n\n\
         [jobs.single]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{data}\"\nschedule = \"@daily\"\n\n\
         [jobs.broken]\nkind = \"volume\"\ntargets = [\"local\", \"offsite\"]\npath = \"{data}\"\nbefore = [\"exit 3\"]\n",
        head = s.head(),
        offsite = s.path("offsite").display(),
        data = data.display(),
    );
    s.write_config(&config);
    for job in ["good", "single"] {
        let r = run(s.drctl().args(["run", job]));
        assert_eq!(r.code, 0, "drctl run {job}: {r:?}");
    }
    let r = run(s.drctl().args(["run", "broken"]));
    assert_eq!(r.code, 1, "{r:?}");
    s
}

/// Serve the API for `config` on 127.0.0.1:0 in `rt`; returns the base URL.
fn serve(rt: &tokio::runtime::Runtime, config: &Path, shutdown: CancellationToken) -> String {
    let config = Arc::new(drctl::config::load(config).unwrap());
    rt.block_on(async {
        let engine = drctl::engine::Engine::new((*config).clone());
        let catalog = engine.catalog().await.unwrap();
        let state = ApiState::new(config, catalog, Arc::new(String::new), Arc::new(PageControl)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(drctl::api::serve_on(listener, state, shutdown));
        base
    })
}

/// Chromium, or a failure that says how to install it.
fn chromium() -> PathBuf {
    let p = PathBuf::from(CHROMIUM);
    assert!(
        p.exists(),
        "{CHROMIUM} is missing: install it with `SERVICES=chromium scripts/services.sh install` \
         (or `scripts/services.sh install`, or apt-get install chromium chromium-driver)"
    );
    p
}

/// Headless Chromium with the flags that work on a machine without network access (no
/// background connections, no GPU, no sandbox as root) and a fresh profile.
fn chromium_command(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    c
}

/// Run `cmd` with a deadline; returns stdout. Panics with stderr on failure or timeout.
fn run_with_deadline(mut cmd: Command, what: &str, deadline: Duration) -> String {
    let out_path = tempfile::NamedTempFile::new().unwrap();
    let err_path = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdout(out_path.reopen().unwrap())
        .stderr(err_path.reopen().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start chromium: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: chromium did not finish in {deadline:?}; stderr:\n{}",
                std::fs::read_to_string(err_path.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(err_path.path()).unwrap_or_default();
    assert!(status.success(), "{what}: chromium exited with {status}; stderr:\n{stderr}");
    std::fs::read_to_string(out_path.path()).unwrap()
}

/// The DOM of `url` after Chromium loaded it.
pub fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = chromium_command(profile.path());
    cmd.arg("--dump-dom").arg(url);
    run_with_deadline(cmd, &format!("--dump-dom {url}"), Duration::from_secs(90))
}

/// A 1280x800 screenshot of `url` saved as `png`.
pub fn screenshot(url: &str, png: &Path) {
    let profile = tempfile::tempdir().unwrap();
    let _ = std::fs::remove_file(png);
    let mut cmd = chromium_command(profile.path());
    cmd.arg(format!("--screenshot={}", png.display())).arg("--window-size=1280,800").arg(url);
    run_with_deadline(cmd, &format!("--screenshot {url}"), Duration::from_secs(90));
}

/// The document's width and the viewport's, in CSS pixels, of `url` in a `width`x`height` window:
/// read through the DevTools protocol once the page has loaded (the page itself may run no script).
fn layout_widths(url: &str, width: u32, height: u32) -> (i64, i64) {
    use std::io::{BufRead, BufReader, Read, Write};
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = chromium_command(profile.path());
    cmd.arg("--remote-debugging-port=0").arg("about:blank");
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let browser = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split("DevTools listening on ").nth(1).map(str::to_string))
        .expect("chromium announces its DevTools endpoint");
    std::thread::spawn(move || lines.for_each(drop)); // keep its stderr drained
    let port: u16 = browser.split("127.0.0.1:").nth(1).and_then(|r| r.split('/').next()).unwrap().parse().unwrap();
    // the page's own endpoint, once chromium lists it
    let page_ws = wait_for(Duration::from_secs(30), "chromium's page target", || {
        // HTTP/1.1 (it answers nothing to 1.0) and it keeps the connection: read Content-Length bytes
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        // (the Host header names the port: chromium builds the page's URL from it)
        conn.write_all(format!("GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).ok()?;
        let mut reader = BufReader::new(conn);
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().ok()?;
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        let body: serde_json::Value = serde_json::from_slice(&body).ok()?;
        body.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"].as_str().map(str::to_string)
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let widths = rt.block_on(async {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let (mut ws, _) = tokio_tungstenite::connect_async(page_ws.as_str())
            .await
            .unwrap_or_else(|e| panic!("DevTools at {page_ws}: {e}"));
        // send a command, then read until `done` accepts a message (its answer, or an event)
        let mut call =
            async |id: u64, method: &str, params: serde_json::Value, done: &dyn Fn(&serde_json::Value) -> bool| {
                let call = serde_json::json!({"id": id, "method": method, "params": params});
                ws.send(Message::Text(call.to_string().into())).await.unwrap();
                while let Some(msg) = ws.next().await {
                    if let Message::Text(text) = msg.unwrap() {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                        if done(&v) {
                            return v;
                        }
                    }
                }
                panic!("the DevTools connection closed");
            };
        let answer = |id: u64| move |v: &serde_json::Value| v["id"] == id;
        call(1, "Page.enable", serde_json::json!({}), &answer(1)).await;
        // a phone's viewport (a headless window is at least 500 px wide)
        let metrics =
            serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500});
        call(2, "Emulation.setDeviceMetricsOverride", metrics, &answer(2)).await;
        // the page, and its load event (not a delay)
        call(3, "Page.navigate", serde_json::json!({"url": url}), &|v| v["method"] == "Page.loadEventFired").await;
        let expression = "[document.documentElement.scrollWidth, innerWidth]";
        let params = serde_json::json!({"expression": expression, "returnByValue": true});
        let v = call(4, "Runtime.evaluate", params, &answer(4)).await;
        v["result"]["result"]["value"].as_array().cloned().unwrap_or_else(|| panic!("no widths in {v}"))
    });
    let _ = child.kill();
    let _ = child.wait();
    (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap())
}

/// `target/test-artifacts` (next to the test binary's `target/debug/deps`).
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).expect("test binary in target/<profile>/deps").to_path_buf();
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `<tr …>` of `job` in `dom`.
fn row<'a>(dom: &'a str, job: &str) -> &'a str {
    let start = dom.find(&format!("id=\"job-{job}\"")).unwrap_or_else(|| panic!("no row for `{job}` in:\n{dom}"));
    let start = dom[..start].rfind("<tr").unwrap();
    let end = start + dom[start..].find("</tr>").unwrap();
    &dom[start..end]
}

#[test]
fn status_page_in_headless_chromium() {
    let s = scratch_with_backups();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let shutdown = CancellationToken::new();
    let base = serve(&rt, &s.config_path(), shutdown.clone());
    let url = format!("{base}/");

    let dom = dump_dom(&url);
    assert!(dom.contains("<title>drctl status</title>"), "{dom}");
    assert!(dom.contains("<table id=\"jobs\">"), "{dom}");
    let names: Vec<&str> = dom.match_indices("data-job=\"").map(|(i, m)| &dom[i + m.len()..]).collect();
    let names: Vec<&str> = names.iter().map(|r| &r[..r.find('"').unwrap()]).collect();
    assert_eq!(names, ["broken", "single", "good"], "one row per job, red first, then amber, then green");

    let good = row(&dom, "good");
    assert!(good.contains("class=\"job green\""), "{good}");
    assert!(good.contains("3 copies") && good.contains("3-2-1 ok"), "{good}");
    // the schedule and the next run, in the zone the schedule runs in (03:05 UTC is 04:05 in Berlin)
    assert!(good.contains("<code>*/5 * * * *</code>"), "the schedule: {good}");
    assert!(good.contains("2030-01-02 04:05 CET"), "next run in the configured zone: {good}");
    assert!(good.contains(">never</td>"), "no drill yet: {good}");
    assert!(good.contains(" ago</td>"), "age of the last backup: {good}");
    assert!(good.contains("KiB"), "size: {good}");

    let single = row(&dom, "single");
    assert!(single.contains("class=\"job amber\""), "{single}");
    assert!(single.contains("3-2-1 broken") && single.contains("running"), "{single}");
    assert!(single.contains("<code>@daily</code>"), "schedule without a next run from the daemon: {single}");

    let broken = row(&dom, "broken");
    assert!(broken.contains("class=\"job red\""), "{broken}");
    assert!(broken.contains(">failed<") && broken.contains("the last backup failed"), "{broken}");
    assert!(broken.contains("<td class=\"age\" data-label=\"Last success\">never</td>"), "{broken}");
    assert!(broken.contains("not scheduled"), "{broken}");
    assert!(dom.contains("1 green") && dom.contains("1 amber") && dom.contains("1 red"), "summary: {dom}");
    assert!(dom.contains(" CET</p>"), "the page's own time in the configured zone: {dom}");

    // a phone-sized screen: every row fits, nothing scrolls sideways; a desktop one keeps the table
    let (page, _) = layout_widths(&url, 390, 844);
    assert!(page <= 390, "at 390 px the page is {page} px wide: it scrolls sideways");
    let (page, _) = layout_widths(&url, 1280, 800);
    assert!(page <= 1280, "at 1280 px the page is {page} px wide");

    // the screenshot: a real 1280x800 PNG with the page's green, amber and red in it
    let png = artifacts_dir().join("status-page.png");
    screenshot(&url, &png);
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(bytes.len() > 10_000, "screenshot is {} bytes only", bytes.len());
    let image = png::decode(&bytes);
    assert_eq!((image.width, image.height), (1280, 800));
    for (name, rgb) in [("green", [0x1a, 0x7f, 0x37]), ("amber", [0xb7, 0x79, 0x1f]), ("red", [0xcf, 0x22, 0x2e])] {
        let n = image.count(rgb);
        assert!(n > 50, "the screenshot has {n} {name} pixels: {}", png.display());
    }
    eprintln!("screenshot: {}", png.display());
    shutdown.cancel();
}

// ---------------------------------------------------------------- against a running daemon

#[test]
fn status_page_of_a_running_daemon() {
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("file.txt"), "daemon status page\n".repeat(5000)).unwrap();
    std::fs::write(data.join("sub/blob.bin"), vec![42u8; 200_000]).unwrap();
    // `nowhere` lives below a regular file: nothing can ever be written there
    std::fs::write(s.path("blocker"), "not a directory").unwrap();
    let api = free_addr();
    s.write_config(&format!(
        "{head}[api]\nlisten = \"{api}\"\n\n[daemon]\ngrace = \"20s\"\n\n\
         [targets.offsite]\ntype = \"fs\"\npath = \"{offsite}\"\nmedium = \"usb\"\noffsite = true\n\n\
         [targets.nowhere]\ntype = \"fs\"\npath = \"{nowhere}\"\nmedium = \"disk\"\n\n\
         [jobs.healthy]\nkind = \"volume\"\ntargets = [\"local\", \"offsite\"]\npath = \"{data}\"\nschedule = \"*/2 * * * * *\"\n\n\
         [jobs.lost]\nkind = \"volume\"\ntargets = [\"nowhere\"]\npath = \"{data}\"\nschedule = \"*/3 * * * * *\"\n",
        head = s.head(),
        offsite = s.path("offsite").display(),
        nowhere = s.path("blocker/nowhere").display(),
        data = data.display(),
    ));
    let mut d = Daemon::start(&s, "daemon", &api);
    wait_for(Duration::from_secs(30), "the daemon's /healthz", || (d.get("/healthz").0 == 200).then_some(()));

    // the daemon backs up on its own: two committed backups of `healthy`, a failed run of `lost`
    let ok = "drctl_backup_runs_total{drctl_job=\"healthy\",result=\"ok\"}";
    let failed = "drctl_backup_runs_total{drctl_job=\"lost\",result=\"failed\"}";
    wait_for(Duration::from_secs(60), "scheduled runs in the daemon's /metrics", || {
        (d.metric(ok) >= 2.0 && d.metric(failed) >= 1.0).then_some(())
    });
    assert_eq!(d.metric("drctl_backup_last_status{drctl_job=\"healthy\"}"), 1.0);
    assert_eq!(d.metric("drctl_backup_suspicious{drctl_job=\"healthy\"}"), 0.0);
    assert_eq!(d.metric("drctl_backup_last_status{drctl_job=\"lost\"}"), 0.0);

    let url = format!("http://{api}/");
    let dom = dump_dom(&url);
    assert!(dom.contains("<title>drctl status</title>") && dom.contains("<table id=\"jobs\">"), "{dom}");
    let names: Vec<&str> = dom.match_indices("data-job=\"").map(|(i, m)| &dom[i + m.len()..]).collect();
    let names: Vec<&str> = names.iter().map(|r| &r[..r.find('"').unwrap()]).collect();
    assert_eq!(names, ["lost", "healthy"], "one row per job, red first");

    let healthy = row(&dom, "healthy");
    assert!(healthy.contains("class=\"job green\"") && healthy.contains("data-health=\"green\""), "{healthy}");
    assert!(healthy.contains("3 copies") && healthy.contains("3-2-1 ok"), "{healthy}");
    assert!(healthy.contains("<span class=\"badge ok\">ok</span>"), "newest run ok: {healthy}");
    assert!(healthy.contains(" ago</td>") && healthy.contains("KiB"), "age and size of the backup: {healthy}");
    assert!(
        healthy.contains("<code>*/2 * * * * *</code><div class=\"when\">20"),
        "next run from the scheduler: {healthy}"
    );
    assert!(healthy.contains(">never</td>"), "{healthy}");
    assert!(!healthy.contains("suspicious"), "{healthy}");

    let lost = row(&dom, "lost");
    assert!(lost.contains("class=\"job red\"") && lost.contains("data-health=\"red\""), "{lost}");
    assert!(lost.contains("<span class=\"badge failed\">failed</span>"), "{lost}");
    assert!(lost.contains("the last backup failed") && lost.contains("nowhere"), "names the broken target: {lost}");
    assert!(lost.contains(">never</td>"), "{lost}");
    assert!(lost.contains("<code>*/3 * * * * *</code>"), "{lost}");
    assert!(dom.contains("1 green") && dom.contains("0 amber") && dom.contains("1 red"), "summary: {dom}");

    let png = artifacts_dir().join("status-page-daemon.png");
    screenshot(&url, &png);
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    let image = png::decode(&bytes);
    assert_eq!((image.width, image.height), (1280, 800));
    for (name, rgb) in [("green", [0x1a, 0x7f, 0x37]), ("red", [0xcf, 0x22, 0x2e])] {
        let n = image.count(rgb);
        assert!(n > 50, "the screenshot has {n} {name} pixels: {}", png.display());
    }
    eprintln!("screenshot: {}", png.display());

    assert_eq!(d.stop(Duration::from_secs(40)).0, 0, "a clean drain exits 0\n{}", d.log());
}

/// Just enough of a PNG decoder (8-bit RGB/RGBA, non-interlaced: what Chromium writes) to count
/// pixels of a colour.
mod png {
    use std::io::Read;

    pub struct Image {
        pub width: usize,
        pub height: usize,
        channels: usize,
        pixels: Vec<u8>,
    }

    impl Image {
        pub fn count(&self, rgb: [u8; 3]) -> usize {
            self.pixels.chunks_exact(self.channels).filter(|p| p[..3] == rgb).count()
        }
    }

    pub fn decode(png: &[u8]) -> Image {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        let (mut pos, mut idat, mut header) = (8, Vec::new(), None);
        while pos + 8 <= png.len() {
            let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
            let kind = &png[pos + 4..pos + 8];
            let data = &png[pos + 8..pos + 8 + len];
            match kind {
                b"IHDR" => header = Some(data.to_vec()),
                b"IDAT" => idat.extend_from_slice(data),
                b"IEND" => break,
                _ => {}
            }
            pos += 12 + len;
        }
        let h = header.expect("IHDR");
        let width = u32::from_be_bytes(h[0..4].try_into().unwrap()) as usize;
        let height = u32::from_be_bytes(h[4..8].try_into().unwrap()) as usize;
        let (depth, color, interlace) = (h[8], h[9], h[12]);
        assert_eq!((depth, interlace), (8, 0), "8-bit, non-interlaced");
        let channels = match color {
            2 => 3,
            6 => 4,
            c => panic!("PNG colour type {c} not supported here"),
        };
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..]).read_to_end(&mut raw).unwrap();
        let stride = width * channels;
        let mut pixels = vec![0u8; stride * height];
        for y in 0..height {
            let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
            let (filter, src) = (line[0], &line[1..]);
            for x in 0..stride {
                let a = if x >= channels { pixels[y * stride + x - channels] } else { 0 };
                let b = if y > 0 { pixels[(y - 1) * stride + x] } else { 0 };
                let c = if y > 0 && x >= channels { pixels[(y - 1) * stride + x - channels] } else { 0 };
                let predicted = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((a as u16 + b as u16) / 2) as u8,
                    4 => {
                        let p = a as i16 + b as i16 - c as i16;
                        let (pa, pb, pc) = ((p - a as i16).abs(), (p - b as i16).abs(), (p - c as i16).abs());
                        if pa <= pb && pa <= pc {
                            a
                        } else if pb <= pc {
                            b
                        } else {
                            c
                        }
                    }
                    f => panic!("PNG filter {f}"),
                };
                pixels[y * stride + x] = src[x].wrapping_add(predicted);
            }
        }
        Image { width, height, channels, pixels }
    }
}
