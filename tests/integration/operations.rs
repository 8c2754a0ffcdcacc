//! What an operator does to a running binary: `--check-config`, a reload by SIGHUP (a good
//! file, a setting that needs a restart, a broken file, a rotated admin token) and purges on
//! the admin listener with and without the admin token. Each test runs the real binary in
//! front of the simulator, with its own configuration file, and reads its JSON log lines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, StatusCode};

use crate::support::{self, *};

const BIN: &str = env!("CARGO_BIN_EXE_baremetal-image-cache");

const TOKEN: &str = "first-admin-token-0123456789";
const ROTATED: &str = "second-admin-token-abcdefghij";

/// The binary, running, with what it has logged so far (JSON lines, parsed).
struct Proxy {
    child: std::process::Child,
    listen: String,
    admin: String,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration file for the proxy in `dir`: its listeners and upstream, then `extra`.
fn write_config(path: &Path, listen: &str, admin: &str, upstream: &str, extra: &str) {
    let text = format!(
        "listen = \"{listen}\"\nadmin-listen = \"{admin}\"\nupstream = \"{upstream}\"\n{extra}"
    );
    std::fs::write(path, text).unwrap();
}

impl Proxy {
    /// Starts the binary with `--config config` (which [`write_config`] made) and `args`.
    async fn start(config: &Path, listen: &str, admin: &str, args: &[&str]) -> Proxy {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let event = serde_json::from_str(&line)
                        .unwrap_or_else(|_| serde_json::json!({ "message": line }));
                    logs.lock().unwrap().push(event);
                }
            });
        }
        let proxy = Proxy {
            child,
            listen: listen.to_string(),
            admin: admin.to_string(),
            logs,
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
        };
        let (client, admin) = (&proxy.client, &proxy.admin);
        eventually("the proxy becomes ready", || async move {
            let probe = Request::get(format!("http://{admin}/readyz"))
                .body(Default::default())
                .unwrap();
            match tokio::time::timeout(Duration::from_secs(1), client.request(probe)).await {
                Ok(Ok(r)) if r.status() == StatusCode::OK => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        proxy
    }

    fn hangup(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Sends SIGHUP and waits until the reload has ended as `result` ("ok" or "failed"),
    /// the `n`th reload with that result.
    async fn reload(&self, result: &str, n: f64) {
        self.hangup();
        let series = format!("{P}_config_reloads_total{{result=\"{result}\"}}");
        let series = &series;
        eventually(&format!("reload number {n} ends {result}"), || async move {
            match self.metric(series).await {
                seen if seen >= n => Ok(()),
                seen => Err(format!("{series} is {seen}")),
            }
        })
        .await;
    }

    /// The log events with this message, once there are `n` (the log is read by a thread of
    /// its own, a little after the event).
    async fn until_logged(&self, message: &str, n: usize) -> Vec<serde_json::Value> {
        eventually(&format!("{n} events {message:?}"), || async {
            let events = self.logged(message);
            match events.len() {
                seen if seen >= n => Ok(events),
                seen => Err(format!("{seen} so far")),
            }
        })
        .await
    }

    /// The log events with this message so far.
    fn logged(&self, message: &str) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|event| event["message"] == message)
            .cloned()
            .collect()
    }

    async fn get(&self, id: &str) -> Reply {
        let request = Request::get(format!("http://{}{}", self.listen, image_path(id)))
            .header("authorization", format!("Bearer {ALICE}"))
            .body(Default::default())
            .unwrap();
        support::send(&self.client, request).await
    }

    async fn admin(&self, method: Method, path: &str, token: Option<&str>) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        support::send(&self.client, request.body(Default::default()).unwrap()).await
    }

    async fn metric(&self, series: &str) -> f64 {
        let reply = self.admin(Method::GET, "/metrics", None).await;
        assert_eq!(reply.status, StatusCode::OK);
        let text = String::from_utf8(reply.body.to_vec()).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in the scrape"))
            .parse()
            .unwrap()
    }
}

/// The `ttl=` of a reply's `cache-status`.
fn ttl(reply: &Reply) -> i64 {
    let status = reply.header("cache-status").expect("cache-status");
    status
        .split("; ")
        .find_map(|part| part.strip_prefix("ttl="))
        .unwrap_or_else(|| panic!("no ttl in {status}"))
        .parse()
        .unwrap()
}

/// A simulator, served, and its URL.
async fn upstream() -> (baremetal_api_sim::Simulator, String) {
    let sim = simulator();
    let addr = sim.clone().spawn().await.unwrap();
    (sim, format!("http://{addr}"))
}

/// A scratch directory with the paths of the configuration and token files in it.
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let token = dir.path().join("admin-token");
    (dir, config, token)
}

fn listeners() -> (String, String) {
    (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    )
}

/// What the reload and purge tests start from: a simulator, served, and its URL; a scratch
/// directory; free ports for the two listeners; and the configuration file written with
/// `extra`.
struct Prepared {
    sim: baremetal_api_sim::Simulator,
    upstream: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    listen: String,
    admin: String,
}

impl Prepared {
    async fn new(extra: &str) -> Prepared {
        let (sim, upstream) = upstream().await;
        let (dir, config, _) = scratch();
        let (listen, admin) = listeners();
        let prepared = Prepared {
            sim,
            upstream,
            dir,
            config,
            listen,
            admin,
        };
        prepared.write(extra);
        prepared
    }

    /// Writes the configuration file again: the listeners and the upstream, then `extra`.
    fn write(&self, extra: &str) {
        write_config(
            &self.config,
            &self.listen,
            &self.admin,
            &self.upstream,
            extra,
        );
    }

    async fn start(&self) -> Proxy {
        Proxy::start(&self.config, &self.listen, &self.admin, &[]).await
    }
}

#[test]
fn check_config_prints_the_effective_configuration_without_secrets_and_exits_0() {
    let (_dir, config, token) = scratch();
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    write_config(
        &config,
        "127.0.0.1:1",
        "127.0.0.1:2",
        "http://127.0.0.1:3",
        &format!(
            "ttl = \"5m\"\nredis = \"redis://default:hunter2-password@127.0.0.1:6379\"\n\
             admin-token-file = \"{}\"\n",
            token.display()
        ),
    );
    let output = Command::new(BIN)
        .arg("--check-config")
        .arg("--config")
        .arg(&config)
        .env(
            "BAREMETAL_IMAGE_CACHE_REDIS_GRANT_KEY",
            "grant-key-hunter2-0123456789abcdefghij",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    for secret in ["hunter2", TOKEN] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    for expected in [
        "listen = \"127.0.0.1:1\"  # config file ",
        "ttl = \"5m\"  # config file ",
        "stale-if-error = \"5m\"  # default",
        "redis = \"redis://***@127.0.0.1:6379\"  # config file ",
        "redis-grant-key = \"<redacted>\"  # BAREMETAL_IMAGE_CACHE_REDIS_GRANT_KEY",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(expected)),
            "no line starting {expected:?} in:\n{stdout}"
        );
    }
    // Nothing was bound: port 1 is not ours to bind, and the check did not try.
    assert!(output.stderr.is_empty(), "{:?}", output.stderr);
}

#[test]
fn check_config_exits_2_naming_the_key_and_where_it_came_from() {
    let (_dir, config, token) = scratch();
    std::fs::write(&token, "short\n").unwrap();
    for (extra, named) in [
        ("ttl = \"soon\"\n".to_string(), "line 4: key `ttl`"),
        (
            format!("admin-token-file = \"{}\"\n", token.display()),
            "key `admin-token-file`: the token in",
        ),
        (
            "log-filter = \"info,[[[\"\n".to_string(),
            "key `log-filter`",
        ),
        (
            "max-entry-size = \"2GiB\"\n".to_string(),
            "key `max-entry-size`",
        ),
    ] {
        write_config(
            &config,
            "127.0.0.1:1",
            "127.0.0.1:2",
            "http://127.0.0.1:3",
            &extra,
        );
        let output = Command::new(BIN)
            .arg("--check-config")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra}: {stderr}");
        assert!(output.stdout.is_empty(), "{extra}");
        assert!(stderr.contains(named), "{extra}: {stderr}");
        assert!(!stderr.contains("short\n"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_live_settings_to_new_entries_and_keeps_the_cache() {
    let prepared = Prepared::new("ttl = \"1h\"\n").await;
    let proxy = prepared.start().await;
    assert_eq!(proxy.get(IMG).await.x_cache(), "MISS");
    assert!(ttl(&proxy.get(IMG).await) > 3000);
    eventually("the miss's fetch is logged", || async {
        (proxy.logged("upstream fetch").len() == 1).then_some(())
    })
    .await;

    prepared.write("ttl = \"30s\"\nlog-filter = \"warn\"\n");
    proxy.reload("ok", 1.0).await;
    let applied = proxy.until_logged("configuration reloaded", 1).await;
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert_eq!(applied[0]["applied"], "ttl, log-filter");
    // The cache was kept, with the entry's own freshness; a new entry takes the new TTL.
    let kept = proxy.get(IMG).await;
    assert_eq!(kept.x_cache(), "HIT");
    assert!(ttl(&kept) > 3000, "{:?}", kept.header("cache-status"));
    assert_eq!(proxy.get(IMG2).await.x_cache(), "MISS");
    let new = proxy.get(IMG2).await;
    assert_eq!(new.x_cache(), "HIT");
    assert!(ttl(&new) <= 30, "{:?}", new.header("cache-status"));
    assert_eq!(prepared.sim.image_get_count(IMG), 1);
    assert_eq!(
        proxy
            .metric(&format!("{P}_config_last_reload_successful"))
            .await,
        1.0
    );
    // The new filter is in force: the info event of a fetch was written for the miss before
    // the reload, not for those after it. (The warning of a second reload, written after
    // them, shows that the log has been read far enough.)
    assert_eq!(proxy.get(MISSING).await.status, StatusCode::NOT_FOUND);
    let (moved, _) = listeners();
    write_config(
        &prepared.config,
        &moved,
        &prepared.admin,
        &prepared.upstream,
        "ttl = \"30s\"\nlog-filter = \"warn\"\n",
    );
    proxy.reload("ok", 2.0).await;
    let restart =
        "configuration reload: these settings take a restart and keep their running values";
    proxy.until_logged(restart, 1).await;
    assert_eq!(proxy.logged("upstream fetch").len(), 1);
    assert_eq!(
        proxy
            .metric(&format!("{P}_config_reloads_total{{result=\"failed\"}}"))
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_names_settings_that_need_a_restart_and_keeps_them() {
    let prepared = Prepared::new("").await;
    let proxy = prepared.start().await;
    let (other_listen, _) = listeners();
    write_config(
        &prepared.config,
        &other_listen,
        &prepared.admin,
        &prepared.upstream,
        "max-capacity = \"1GiB\"\nauth-mode = \"shared\"\nttl = \"2m\"\n",
    );
    proxy.reload("ok", 1.0).await;
    let warned = proxy
        .until_logged(
            "configuration reload: these settings take a restart and keep their running values",
            1,
        )
        .await;
    assert_eq!(warned.len(), 1);
    assert_eq!(warned[0]["settings"], "listen, max-capacity, auth-mode");
    assert_eq!(warned[0]["level"], "WARN");
    assert_eq!(
        proxy.until_logged("configuration reloaded", 1).await[0]["applied"],
        "ttl"
    );
    // Still on the old listener, still per-credential, with the new TTL.
    assert!(tokio::net::TcpStream::connect(&other_listen).await.is_err());
    assert_eq!(proxy.get(IMG).await.x_cache(), "MISS");
    let hit = proxy.get(IMG).await;
    assert!(ttl(&hit) <= 120, "{:?}", hit.header("cache-status"));
    assert_eq!(
        proxy.metric(&format!("{P}_capacity_bytes")).await,
        256.0 * 1024.0 * 1024.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_is_logged_and_the_running_configuration_kept() {
    let prepared = Prepared::new("ttl = \"1h\"\n").await;
    let proxy = prepared.start().await;
    let loaded_at = proxy
        .metric(&format!("{P}_config_last_reload_success_timestamp_seconds"))
        .await;
    assert!(loaded_at > 1.7e9, "{loaded_at}");

    for (before, (broken, named)) in [
        ("ttl = \"30s\"\nttl = [\n", "line"),
        (
            "ttl = \"30s\"\nnegative-ttl = \"forever\"\n",
            "key `negative-ttl`",
        ),
        ("ttl = \"30s\"\nttll = \"1m\"\n", "key `ttll`"),
    ]
    .into_iter()
    .enumerate()
    {
        prepared.write(broken);
        proxy.reload("failed", before as f64 + 1.0).await;
        let failed = proxy
            .until_logged(
                "configuration reload failed; the running configuration is kept",
                before + 1,
            )
            .await;
        assert_eq!(failed.len(), before + 1);
        let error = failed[before]["error"].as_str().unwrap();
        assert!(error.contains(named), "{broken}: {error}");
        assert_eq!(failed[before]["level"], "ERROR");
    }
    assert_eq!(
        proxy
            .metric(&format!("{P}_config_last_reload_successful"))
            .await,
        0.0
    );
    assert_eq!(
        proxy
            .metric(&format!("{P}_config_last_reload_success_timestamp_seconds"))
            .await,
        loaded_at
    );
    assert!(proxy.logged("configuration reloaded").is_empty());
    // Still the running TTL: an hour, not the broken file's 30 s.
    assert_eq!(proxy.get(IMG).await.x_cache(), "MISS");
    assert!(ttl(&proxy.get(IMG).await) > 3000);

    // Fixed, it loads.
    prepared.write("ttl = \"30s\"\n");
    proxy.reload("ok", 1.0).await;
    assert_eq!(
        proxy
            .metric(&format!("{P}_config_last_reload_successful"))
            .await,
        1.0
    );
    assert_eq!(proxy.get(IMG2).await.x_cache(), "MISS");
    assert!(ttl(&proxy.get(IMG2).await) <= 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_purges_need_it_and_a_reload_rotates_it() {
    let (sim, upstream) = upstream().await;
    let (_dir, config, token) = scratch();
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let (listen, admin) = listeners();
    write_config(
        &config,
        &listen,
        &admin,
        &upstream,
        &format!("admin-token-file = \"{}\"\n", token.display()),
    );
    let proxy = Proxy::start(&config, &listen, &admin, &[]).await;
    assert_eq!(proxy.get(IMG).await.x_cache(), "MISS");

    // The scrape and the probes stay open.
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            proxy.admin(Method::GET, path, None).await.status,
            StatusCode::OK
        );
    }
    // A purge without the token, or with a wrong one, even from loopback, is 401.
    for (path, presented) in [
        ("/cache", None),
        ("/cache", Some("first-admin-token-012345678")),
        ("/cache", Some(ROTATED)),
        ("/cache/images/ly5test0ready0000001", None),
        ("/cache/images/not-an-id!", None),
    ] {
        let refused = proxy.admin(Method::DELETE, path, presented).await;
        assert_eq!(
            refused.status,
            StatusCode::UNAUTHORIZED,
            "{path} {presented:?}"
        );
        assert_eq!(
            refused.header("www-authenticate"),
            Some("Bearer realm=\"baremetal-image-cache admin\"")
        );
        assert_eq!(refused.json()["code"], 16);
    }
    assert_eq!(proxy.get(IMG).await.x_cache(), "HIT", "nothing was purged");
    assert_eq!(
        proxy
            .metric(&format!(
                "{P}_rejected_total{{reason=\"admin_unauthorized\"}}"
            ))
            .await,
        5.0
    );
    let purged = proxy
        .admin(
            Method::DELETE,
            "/cache/images/ly5test0ready0000001",
            Some(TOKEN),
        )
        .await;
    assert_eq!(purged.status, StatusCode::OK);
    assert_eq!(purged.json()["purged"], 1);
    assert_eq!(proxy.get(IMG).await.x_cache(), "MISS");

    // Rotated: the file holds a new token, a reload reads it.
    std::fs::write(&token, format!("{ROTATED}\n")).unwrap();
    proxy.reload("ok", 1.0).await;
    assert_eq!(
        proxy.until_logged("configuration reloaded", 1).await[0]["applied"],
        "admin-token-file"
    );
    let old = proxy.admin(Method::DELETE, "/cache", Some(TOKEN)).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = proxy.admin(Method::DELETE, "/cache", Some(ROTATED)).await;
    assert_eq!(new.status, StatusCode::OK);
    assert_eq!(proxy.get(IMG).await.x_cache(), "MISS");
    assert_eq!(sim.image_get_count(IMG), 3);
    // The token never reaches the log.
    let logs = serde_json::to_string(&*proxy.logs.lock().unwrap()).unwrap();
    assert!(!logs.contains(TOKEN) && !logs.contains(ROTATED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_a_loopback_client_may_purge() {
    let prepared = Prepared::new("").await;
    let proxy = prepared.start().await;
    assert_eq!(proxy.get(IMG).await.x_cache(), "MISS");
    let purged = proxy.admin(Method::DELETE, "/cache", None).await;
    assert_eq!(purged.status, StatusCode::OK);
    assert_eq!(purged.json()["purged"], 1);
    assert_eq!(proxy.get(IMG).await.x_cache(), "MISS");
    // On loopback, no warning about an exposed admin listener (it would have come before
    // the fetches' events).
    proxy.until_logged("upstream fetch", 2).await;
    let exposed = "the admin listener is not on loopback and no admin token is set";
    assert!(proxy.logs.lock().unwrap().iter().all(|e| !e["message"]
        .as_str()
        .is_some_and(|m| m.starts_with(exposed))));
}

/// Runs `openssl` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs (it is a test dependency)");
    assert!(status.success(), "openssl {args:?}");
}

#[test]
fn check_config_parses_the_pem_files_as_start_up_would() {
    let (dir, config, token) = scratch();
    let dir = dir.path();
    for name in ["client", "other"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=test",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }
    std::fs::write(
        dir.join("garbage.crt"),
        "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(&token, "unused-but-valid-token-0000\n").unwrap();
    let check = |ca: &str, cert: &str, key: &str| {
        write_config(
            &config,
            "127.0.0.1:1",
            "127.0.0.1:2",
            "http://127.0.0.1:3",
            &format!(
                "redis = \"rediss://127.0.0.1:6390\"\nredis-ca-file = \"{}\"\n\
                 redis-cert-file = \"{}\"\nredis-key-file = \"{}\"\n",
                dir.join(ca).display(),
                dir.join(cert).display(),
                dir.join(key).display()
            ),
        );
        let output = Command::new(BIN)
            .arg("--check-config")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert_eq!(check("client.crt", "client.crt", "client.key").0, Some(0));
    let (code, message) = check("garbage.crt", "client.crt", "client.key");
    assert_eq!(code, Some(2));
    assert!(
        message.contains("key `redis-ca-file`: holds a certificate that does not parse"),
        "{message}"
    );
    let (code, message) = check("client.crt", "client.crt", "other.key");
    assert_eq!(code, Some(2));
    assert!(
        message.contains("key `redis-key-file`: does not go with the certificate"),
        "{message}"
    );
    let (code, message) = check("client.crt", "client.crt", "client.crt");
    assert_eq!(code, Some(2));
    assert!(
        message.contains("key `redis-key-file`: holds no PEM private key"),
        "{message}"
    );
    let key = std::fs::read_to_string(dir.join("client.key")).unwrap();
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!message.contains(line), "the key is quoted: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_it_says_ready_once_listening_and_stopping_on_sigterm() {
    let prepared = Prepared::new("").await;
    let socket_path = prepared.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&prepared.config)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let receive = move || {
        let mut buffer = [0u8; 256];
        let n = socket
            .recv(&mut buffer)
            .expect("a notification within 20 s");
        (String::from_utf8_lossy(&buffer[..n]).into_owned(), socket)
    };
    let (ready, socket) = tokio::task::spawn_blocking(receive).await.unwrap();
    assert_eq!(ready, "READY=1");
    // Ready means listening, and a reload may come at once.
    assert!(tokio::net::TcpStream::connect(&prepared.listen)
        .await
        .is_ok());
    assert!(Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(tokio::net::TcpStream::connect(&prepared.admin)
        .await
        .is_ok());
    assert!(
        child.try_wait().unwrap().is_none(),
        "a reload keeps it running"
    );
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let receive = move || {
        let mut buffer = [0u8; 256];
        let n = socket
            .recv(&mut buffer)
            .expect("a notification within 20 s");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    assert_eq!(
        tokio::task::spawn_blocking(receive).await.unwrap(),
        "STOPPING=1"
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
