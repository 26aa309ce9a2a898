//! `src/exec/`: Kubernetes pod exec through kube against the stand-in API server
//! (tests/common/kubeapi.rs: the real upgrade handshake and channel frames, commands run locally),
//! and `docker exec` through the stand-in docker CLI (tests/standins/docker).

#[path = "common/kubeapi.rs"]
mod kubeapi;

use drctl::exec::KubernetesExec;
use drctl::exec::pod::Pod;
use drctl::exec::{Place, argv};
use kubeapi::{Behaviour, FakePod, KubeApi};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pods() -> Vec<FakePod> {
    vec![
        FakePod::running("cache", "redis-1", &[("app", "redis")], &["redis", "exporter"]),
        FakePod::running("cache", "redis-0", &[("app", "redis")], &["redis", "exporter"]),
        FakePod { phase: "Pending".into(), ..FakePod::running("cache", "redis-00", &[("app", "redis")], &["redis"]) },
        FakePod { phase: "Pending".into(), ..FakePod::running("cache", "web-0", &[("app", "web")], &["web"]) },
    ]
}

async fn client(api: &KubeApi) -> kube::Client {
    let mut config = kube::Config::new(api.url.parse().unwrap());
    config.default_namespace = "cache".into();
    kube::Client::try_from(config).unwrap()
}

async fn place(api: &KubeApi, cfg: KubernetesExec) -> Place {
    Place::Kubernetes(Pod::find_with(client(api).await, &cfg).await.unwrap())
}

fn by_name(pod: &str, container: Option<&str>) -> KubernetesExec {
    KubernetesExec {
        namespace: Some("cache".into()),
        pod: Some(pod.into()),
        selector: None,
        container: container.map(Into::into),
    }
}

#[tokio::test]
async fn kube_exec_streams_stdout_and_reads_success() {
    let api = KubeApi::start(pods(), Behaviour::default());
    let place = place(&api, by_name("redis-0", Some("redis"))).await;
    // 40 MiB through the 1 MiB window: hashed on the way, never held whole
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy");
    let script = format!("head -c 41943040 /dev/urandom | tee {}", copy.display());
    let mut r = place.spawn(&argv(&["sh", "-c", &script]), false).await.unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    loop {
        let n = r.stdout.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
        hasher.update(&buf[..n]);
    }
    assert_eq!(total, 41_943_040);
    assert_eq!(hasher.finalize().as_slice(), Sha256::digest(std::fs::read(&copy).unwrap()).as_slice());
    let f = r.wait().await.unwrap();
    assert!(f.success, "{f:?}");
    let rec = &api.execs()[0];
    assert_eq!(rec.pod, "redis-0");
    assert_eq!(rec.container.as_deref(), Some("redis"));
    assert!(!rec.stdin);
}

#[tokio::test]
async fn kube_exec_stdout_bytes_arrive_exactly() {
    let api = KubeApi::start(pods(), Behaviour::default());
    let place = place(&api, by_name("redis-0", None)).await;
    let data = std::env::temp_dir().join(format!("drctl-kube-{}", std::process::id()));
    let payload: Vec<u8> = (0..(5 << 20)).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&data, &payload).unwrap();
    let mut r = place.read_file(&data).await.unwrap();
    let mut got = Vec::new();
    r.stdout.read_to_end(&mut got).await.unwrap();
    assert!(r.wait().await.unwrap().success);
    std::fs::remove_file(&data).unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "stdout differs from the file");
    assert_eq!(api.execs()[0].command, vec!["cat".to_string(), "--".into(), data.display().to_string()]);
}

#[tokio::test]
async fn kube_exec_stdin_reaches_the_command_v5() {
    let api = KubeApi::start(pods(), Behaviour::default());
    let place = place(&api, by_name("redis-0", None)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("in.bin");
    let script = format!("cat > {} && echo stored", out.display());
    let mut r = place.spawn(&argv(&["sh", "-c", &script]), true).await.unwrap();
    let mut w = r.stdin.take().unwrap();
    let payload: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut said = String::new();
    r.stdout.read_to_string(&mut said).await.unwrap();
    writer.await.unwrap();
    let f = r.wait().await.unwrap();
    assert!(f.success, "{f:?}");
    assert_eq!(said.trim(), "stored");
    assert_eq!(std::fs::read(&out).unwrap(), payload);
    assert!(api.execs()[0].stdin);
}

#[tokio::test]
async fn kube_exec_nonzero_exit_gives_code_and_stderr() {
    let api = KubeApi::start(pods(), Behaviour::default());
    let place = place(&api, by_name("redis-0", None)).await;
    let (f, out) =
        place.output(&argv(&["sh", "-c", "echo partial; echo 'disk full' >&2; exit 7"]), 1024).await.unwrap();
    assert!(!f.success);
    assert_eq!(f.status, "exit code 7");
    assert_eq!(f.stderr, "disk full");
    assert_eq!(out.trim(), "partial");
    let err = place.run(&argv(&["sh", "-c", "echo 'disk full' >&2; exit 7"])).await.unwrap_err();
    assert!(err.message.contains("in pod cache/redis-0"), "{}", err.message);
    assert!(err.message.contains("exit code 7") && err.message.contains("disk full"), "{}", err.message);
}

#[tokio::test]
async fn kube_selector_picks_first_running_pod_by_name() {
    let api = KubeApi::start(pods(), Behaviour::default());
    let cfg = KubernetesExec { namespace: None, pod: None, selector: Some("app=redis".into()), container: None };
    let p = Pod::find_with(client(&api).await, &cfg).await.unwrap();
    // redis-00 sorts first but is Pending; the namespace comes from the client's default
    assert_eq!(p.describe(), "pod cache/redis-0");

    let none = KubernetesExec { selector: Some("app=web".into()), ..cfg.clone() };
    let err = Pod::find_with(client(&api).await, &none).await.err().unwrap();
    assert!(
        err.message.contains("no running pod in namespace `cache` matches `app=web` (1 matched, none running)"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("kubectl -n cache get pods -l app=web"));
}

#[tokio::test]
async fn kube_exec_missing_pod_container_and_forbidden_are_clear() {
    let api = KubeApi::start(pods(), Behaviour::default());
    let gone = place(&api, by_name("redis-9", None)).await;
    let err = gone.spawn(&argv(&["true"]), false).await.err().unwrap();
    assert!(err.message.contains("pods \"redis-9\" not found"), "{}", err.message);
    assert!(err.hint.unwrap().contains("namespace"));

    let wrong = place(&api, by_name("redis-0", Some("sidecar"))).await;
    let err = wrong.spawn(&argv(&["true"]), false).await.err().unwrap();
    assert!(err.message.contains("container sidecar is not valid for pod redis-0"), "{}", err.message);

    let api = KubeApi::start(pods(), Behaviour { forbid_exec: true, ..Default::default() });
    let p = place(&api, by_name("redis-0", None)).await;
    let err = p.spawn(&argv(&["true"]), false).await.err().unwrap();
    assert!(err.message.contains("forbidden"), "{}", err.message);
    assert!(err.hint.unwrap().contains("`create` on `pods/exec`"));
}

#[tokio::test]
async fn kube_exec_cut_stream_is_a_failure_not_a_success() {
    let api = KubeApi::start(pods(), Behaviour { cut_stdout_after: Some(1 << 20), ..Default::default() });
    let place = place(&api, by_name("redis-0", None)).await;
    let mut r = place.spawn(&argv(&["head", "-c", "10000000", "/dev/zero"]), false).await.unwrap();
    let mut sink = Vec::new();
    let _ = r.stdout.read_to_end(&mut sink).await;
    assert!(sink.len() < 10_000_000);
    let f = r.wait().await.unwrap();
    assert!(!f.success, "a cut stream must not count as success: {f:?}");
    assert!(f.status.contains("without an exit status"), "{}", f.status);
}

#[tokio::test]
async fn kube_exec_v4_server_without_stdin_works() {
    let api = KubeApi::start(pods(), Behaviour { v4_only: true, ..Default::default() });
    let place = place(&api, by_name("redis-0", None)).await;
    assert_eq!(place.run(&argv(&["sh", "-c", "printf v4"])).await.unwrap(), "v4");
    let (f, _) = place.output(&argv(&["sh", "-c", "exit 3"]), 10).await.unwrap();
    assert_eq!(f.status, "exit code 3");
}

#[tokio::test]
async fn docker_exec_through_the_cli() {
    // the stand-in CLI (no engine on CI): exec runs here for known containers
    let standin = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/standins/docker");
    // SAFETY: nextest runs each test in its own process; nothing else reads the environment here
    unsafe {
        std::env::set_var("DRCTL_DOCKER", standin);
        std::env::set_var("DRCTL_STANDIN_CONTAINERS", "redis");
    }
    let place = Place::Docker { container: "redis".into() };
    assert_eq!(place.run(&argv(&["sh", "-c", "printf hi"])).await.unwrap(), "hi");
    let mut r = place.spawn(&argv(&["cat"]), true).await.unwrap();
    let mut w = r.stdin.take().unwrap();
    w.write_all(b"through stdin").await.unwrap();
    drop(w);
    let mut got = String::new();
    r.stdout.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "through stdin");
    assert!(r.wait().await.unwrap().success);

    let err = Place::Docker { container: "nope".into() }.run(&argv(&["true"])).await.unwrap_err();
    assert!(
        err.message
            .contains("in docker container `nope` (exit code 1): Error response from daemon: No such container: nope"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn kube_exec_v4_stdin_end_is_never_a_false_success() {
    // v4 has no "stdin closed" signal: kube closes the socket, the output and status are lost;
    // that must read as a failure, never as a restore that worked
    let api = KubeApi::start(pods(), Behaviour { v4_only: true, ..Default::default() });
    let place = place(&api, by_name("redis-0", None)).await;
    let mut r = place.spawn(&argv(&["sh", "-c", "cat > /dev/null; echo done"]), true).await.unwrap();
    let mut w = r.stdin.take().unwrap();
    w.write_all(b"data").await.unwrap();
    w.shutdown().await.unwrap();
    drop(w);
    let mut out = String::new();
    let _ = r.stdout.read_to_string(&mut out).await;
    let f = r.wait().await.unwrap();
    assert!(!f.success, "{f:?}");
}
