//! The binary as an operator runs it: configuration failures, health endpoints, logs that
//! never carry a credential, and a SIGTERM that drains in-flight requests before exit 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use baremetal_api_sim::{Fault, FaultScope};
use http::{Method, Request, StatusCode};

use crate::support::{self, *};

const BIN: &str = env!("CARGO_BIN_EXE_baremetal-image-cache");

/// Arguments, environment, and what the error message must name.
type Case = (Vec<String>, Vec<(&'static str, &'static str)>, &'static str);

/// Runs the binary with these arguments and environment; it must fail at once.
fn fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("binary runs");
    assert!(!output.status.success(), "{args:?} {env:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_bad_configuration_fails_naming_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "ttl = \"5s\"\nttll = \"5s\"\n").unwrap();
    let bad_value = dir.path().join("bad.toml");
    std::fs::write(&bad_value, "stale-if-error = \"for a while\"\n").unwrap();
    let negative = dir.path().join("negative.toml");
    std::fs::write(&negative, "max-capacity = -1\n").unwrap();

    let cases: Vec<Case> = vec![
        (vec!["--ttl".into(), "soon".into()], vec![], "--ttl"),
        (
            vec!["--max-capacity".into(), "-5MiB".into()],
            vec![],
            "--max-capacity",
        ),
        (
            vec!["--max-capacity".into(), "lots".into()],
            vec![],
            "--max-capacity",
        ),
        (
            vec!["--upstream".into(), "ftp://example".into()],
            vec![],
            "--upstream",
        ),
        (
            vec!["--auth-mode".into(), "everyone".into()],
            vec![],
            "--auth-mode",
        ),
        (
            vec!["--listen".into(), "localhost".into()],
            vec![],
            "--listen",
        ),
        (vec!["--ttl".into(), "0s".into()], vec![], "ttl"),
        (vec!["--ttl".into(), "31days".into()], vec![], "ttl"),
        (
            vec!["--redis".into(), "http://cache:6379".into()],
            vec![],
            "redis",
        ),
        (
            vec![
                "--redis".into(),
                "redis://cache:6379".into(),
                "--redis-prefix".into(),
                "fleet{a}:".into(),
            ],
            vec![],
            "redis-prefix",
        ),
        (
            vec![
                "--redis".into(),
                "rediss://cache:6379".into(),
                "--redis-ca-file".into(),
                "/nonexistent/ca.pem".into(),
            ],
            vec![],
            "redis-ca-file",
        ),
        (
            vec!["--redis".into(), "redis://127.0.0.1:6379".into()],
            vec![("BAREMETAL_IMAGE_CACHE_REDIS_GRANT_KEY", "short")],
            "BAREMETAL_IMAGE_CACHE_REDIS_GRANT_KEY",
        ),
        (
            vec![
                "--redis".into(),
                "rediss://cache:6379".into(),
                "--redis-cert-file".into(),
                "/nonexistent/client.pem".into(),
            ],
            vec![],
            "redis-key-file",
        ),
        (
            vec![
                "--redis".into(),
                "rediss://cache:6379".into(),
                "--redis-cert-file".into(),
                "/nonexistent/client.pem".into(),
                "--redis-key-file".into(),
                "/nonexistent/client.key".into(),
            ],
            vec![],
            "redis-cert-file",
        ),
        (
            vec![
                "--redis".into(),
                "redis://cache:6379".into(),
                "--redis-cert-file".into(),
                "/nonexistent/client.pem".into(),
                "--redis-key-file".into(),
                "/nonexistent/client.key".into(),
            ],
            vec![],
            "rediss://",
        ),
        (
            vec![],
            vec![("BAREMETAL_IMAGE_CACHE_TTL", "soon")],
            "BAREMETAL_IMAGE_CACHE_TTL",
        ),
        (
            vec![],
            vec![("BAREMETAL_IMAGE_CACHE_TTLL", "5s")],
            "BAREMETAL_IMAGE_CACHE_TTLL",
        ),
        (
            vec!["--config".into(), "/nonexistent/bic.toml".into()],
            vec![],
            "/nonexistent/bic.toml",
        ),
        (
            vec!["--config".into(), unknown.display().to_string()],
            vec![],
            "ttll",
        ),
        (
            vec!["--config".into(), bad_value.display().to_string()],
            vec![],
            "stale-if-error",
        ),
        (
            vec!["--config".into(), negative.display().to_string()],
            vec![],
            "max-capacity",
        ),
    ];
    for (args, env, named) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = fails(&args, &env);
        assert!(stderr.contains(named), "{args:?} {env:?}: {stderr}");
    }
    // A password in a bad Redis URL is not repeated back.
    let stderr = fails(
        &["--redis", "rediss://user:hunter2@cache:6379,ftp://x"],
        &[],
    );
    assert!(
        stderr.contains("redis") && !stderr.contains("hunter2"),
        "{stderr}"
    );
    let stderr = fails(&["--redis", "ftp://user:hunter2@cache"], &[]);
    assert!(
        stderr.contains("redis") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}

/// Runs the binary; it must exit with code 2 at once. Returns what it printed.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("binary runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {printed}");
    printed
}

#[test]
fn absurd_durations_sizes_and_counts_are_refused_at_start_naming_the_key() {
    for (flag, value) in [
        ("--stale-if-error", "2000years"),
        ("--stale-if-error", "31days"),
        ("--negative-ttl", "31days"),
        ("--upstream-timeout", "500000000000years"),
        ("--upstream-timeout", "2h"),
        ("--connect-timeout", "1year"),
        ("--header-read-timeout", "500000000000years"),
        ("--shutdown-grace", "1000years"),
        ("--max-capacity", "16EiB"),
        ("--max-entry-size", "1GiB"),
        ("--max-header-size", "1GiB"),
        ("--max-request-body", "1TiB"),
        ("--max-waiters", "100000000"),
        ("--max-waiters-per-key", "100000000"),
    ] {
        let printed = refused(&[flag, value], &[]);
        assert!(
            printed.contains(flag.trim_start_matches("--")),
            "{flag} {value}: {printed}"
        );
        assert!(
            printed.contains("at most") || printed.contains(" to "),
            "{printed}"
        );
    }
}

#[test]
fn secrets_never_appear_in_errors_or_help() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "hunter2secret";
    type Case = (Vec<String>, Vec<(&'static str, String)>);
    let cases: Vec<Case> = vec![
        (
            vec![
                "--upstream".into(),
                format!("http://user:{secret}@exa mple.com"),
            ],
            vec![],
        ),
        (
            vec![
                "--upstream".into(),
                format!("ftp://user:{secret}@example.com"),
            ],
            vec![],
        ),
        (
            vec![
                "--upstream".into(),
                format!("https://example.com/?token={secret}"),
            ],
            vec![],
        ),
        (
            vec![],
            vec![(
                "BAREMETAL_IMAGE_CACHE_UPSTREAM",
                format!("http://u:{secret}@host"),
            )],
        ),
        (
            vec![],
            vec![(
                "BAREMETAL_IMAGE_CACHE_UPSTREAM",
                format!("http://u:{secret}@ho st"),
            )],
        ),
    ];
    for (args, env) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let printed = refused(&args, &env);
        // The error names where the value came from: the flag, or the variable.
        let named = env.first().map_or("--upstream", |(name, _)| *name);
        assert!(printed.contains(named), "{printed}");
        assert!(!printed.contains(secret), "{args:?} {env:?}: {printed}");
    }
    // A key of the wrong type in the file, a secret one among them.
    for text in [
        "redis = \"redis://127.0.0.1:6379\"\nredis-grant-key = 987654321987654321\n",
        "redis = 987654321987654321\n",
    ] {
        let file = dir.path().join("wrong-type.toml");
        std::fs::write(&file, text).unwrap();
        let printed = refused(&["--config", file.to_str().unwrap()], &[]);
        assert!(printed.contains("redis"), "{printed}");
        assert!(!printed.contains("987654321"), "{printed}");
    }
    // --help shows which variables are read, never what they hold.
    let help = Command::new(BIN)
        .arg("--help")
        .env_clear()
        .env(
            "BAREMETAL_IMAGE_CACHE_UPSTREAM",
            format!("https://u:{secret}@host"),
        )
        .env(
            "BAREMETAL_IMAGE_CACHE_REDIS",
            format!("redis://:{secret}@host"),
        )
        .env("BAREMETAL_IMAGE_CACHE_REDIS_GRANT_KEY", secret)
        .env("BAREMETAL_IMAGE_CACHE_TTL", "5s")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("BAREMETAL_IMAGE_CACHE_UPSTREAM"), "{help}");
    assert!(!help.contains(secret), "{help}");
}

#[test]
fn the_example_configuration_is_valid_and_complete() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/baremetal-image-cache.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    // Every flag that is a setting has its key in the example.
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let actions = ["--help", "--version", "--config", "--check-config"];
    for flag in help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && !actions.contains(w))
    {
        let key = flag.trim_start_matches("--");
        assert!(text.contains(&format!("{key} =")), "example lacks `{key}`");
    }
    // Uncommented, it loads as is (but for the client certificate, which needs real files
    // and a rediss:// server, and the admin token's file: the fleet and operations modules
    // cover them).
    let needs_files = ["redis-cert-file", "redis-key-file", "admin-token-file"];
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.split(" = ").next().is_some_and(|k| {
                    !k.is_empty()
                        && k.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                        && !needs_files.contains(&k)
                }) && rest.contains(" = ") =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), uncommented).unwrap();
    let loaded = baremetal_image_cache::Config::load([
        "baremetal-image-cache",
        "--config",
        file.path().to_str().unwrap(),
    ]);
    assert!(loaded.is_ok(), "{:?}", loaded.err());
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary against `upstream` and waits until its readiness endpoint answers.
async fn start_binary(upstream: &str, extra_env: &[(&str, &str)]) -> (Child, String, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(BIN);
    command
        .args([
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
            "--upstream",
            upstream,
        ])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        command.env(k, v);
    }
    let child = Child(command.spawn().expect("binary starts"));
    until_ready(&admin).await;
    (child, listen, admin)
}

/// Waits until the binary's readiness endpoint on `admin` answers 200.
async fn until_ready(admin: &str) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    eventually("the proxy becomes ready", || {
        let request = Request::get(format!("http://{admin}/readyz"))
            .body(Default::default())
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(1), client.request(request));
        async move {
            match answer.await {
                Ok(Ok(r)) if r.status() == StatusCode::OK => Ok(()),
                Ok(Ok(r)) => Err(format!("/readyz answered {}", r.status())),
                Ok(Err(e)) => Err(format!("/readyz: {e}")),
                Err(_) => Err("/readyz did not answer within 1 s".to_string()),
            }
        }
    })
    .await
}

/// Stops the binary (SIGTERM) and reads everything it logged.
async fn stop_and_read_logs(child: &mut Child) -> Vec<String> {
    let pid = child.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let stderr = child.0.stderr.take().unwrap();
    tokio::task::spawn_blocking(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let sim = simulator();
    let upstream = sim.clone().spawn().await.unwrap();
    sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(1500)),
        None,
    );
    let (mut child, listen, admin) = start_binary(&format!("http://{upstream}"), &[]).await;

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let health = support::send(
        &client,
        Request::get(format!("http://{admin}/healthz"))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(health.status, StatusCode::OK);

    let in_flight = {
        let client = client.clone();
        let request = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{listen}{}", image_path(IMG)))
            .header("authorization", format!("Bearer {ALICE}"))
            .body(Default::default())
            .unwrap();
        tokio::spawn(async move { support::send(&client, request).await })
    };
    {
        let sim = &sim;
        eventually("the request reaches the upstream", || async move {
            (sim.request_count() >= 1).then_some(())
        })
        .await;
    }
    assert_eq!(sim.request_count(), 1, "the request is in flight");
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // While it drains, the admin listener still answers, and says it is not ready.
    {
        let (client, admin) = (&client, &admin);
        eventually("/readyz turns 503 during the drain", || async move {
            let probe = Request::get(format!("http://{admin}/readyz"))
                .body(Default::default())
                .unwrap();
            match support::send(client, probe).await.status {
                StatusCode::SERVICE_UNAVAILABLE => Ok(()),
                status => Err(format!("/readyz answered {status}")),
            }
        })
        .await;
    }

    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight request finished"
    );
    assert_eq!(reply.json(), expected_body(&sim, IMG));
    let status = tokio::task::spawn_blocking(move || {
        let status = child.0.wait().unwrap();
        (status, child)
    })
    .await
    .unwrap()
    .0;
    assert!(status.success(), "exit 0 after draining, got {status:?}");
    assert!(
        tokio::net::TcpStream::connect(&listen).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_the_logs() {
    let sim = simulator();
    let upstream = sim.clone().spawn().await.unwrap();
    let (mut child, listen, _admin) = start_binary(
        &format!("http://{upstream}"),
        &[("BAREMETAL_IMAGE_CACHE_LOG_FORMAT", "json")],
    )
    .await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    for (target, token) in [
        (image_path(IMG), ALICE),
        (image_path(IMG), ALICE),
        (image_path(IMG), BOB),
        (image_path(MISSING), FORGED),
        ("/baremetal/v1alpha/zones".to_string(), ALICE),
    ] {
        let request = Request::get(format!("http://{listen}{target}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Default::default())
            .unwrap();
        support::send(&client, request).await;
    }
    let lines = stop_and_read_logs(&mut child).await;
    assert!(
        lines.iter().any(|l| l.contains("upstream fetch")),
        "fetches are logged: {lines:?}"
    );
    for line in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "JSON log line: {line}"
        );
        for secret in [ALICE, BOB, FORGED, "t1."] {
            assert!(!line.contains(secret), "credential in the log: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_into_a_pipe_carry_no_colour_codes() {
    let sim = simulator();
    let upstream = sim.clone().spawn().await.unwrap();
    let (mut child, listen, _admin) = start_binary(&format!("http://{upstream}"), &[]).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = Request::get(format!("http://{listen}{}", image_path(IMG)))
        .header("authorization", format!("Bearer {ALICE}"))
        .body(Default::default())
        .unwrap();
    assert_eq!(support::send(&client, request).await.status, StatusCode::OK);
    let lines = stop_and_read_logs(&mut child).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("INFO") && l.contains("upstream fetch")),
        "text lines are logged: {lines:?}"
    );
    for line in &lines {
        assert!(
            !line.contains('\x1b'),
            "colour code in a piped log: {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_descriptor_limit_an_overloaded_proxy_answers_503_instead_of_hanging() {
    let sim = simulator();
    let upstream = sim.clone().spawn().await.unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    // `ulimit -n` lowers the hard limit too, so the proxy cannot raise it back.
    let mut child = Child(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n 256 && exec {BIN} --listen {listen} --admin-listen {admin} \
                 --upstream http://{upstream} --header-read-timeout 30s"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    until_ready(&admin).await;
    // 300 idle connections: more than 256 descriptors could hold.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(&listen).await.unwrap());
    }
    // A new client is never left hanging: it is answered, or closed while the proxy is busy
    // refusing the idle ones, and soon gets the documented 503.
    {
        let listen = &listen;
        eventually("a 503 comes", || async move {
            let request = Request::get(format!("http://{listen}/baremetal/v1alpha/zones"))
                .body(Default::default())
                .unwrap();
            let fresh =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_max_idle_per_host(0)
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            let answered = tokio::time::timeout(Duration::from_secs(5), fresh.request(request))
                .await
                .expect("answered or closed, not left hanging");
            let reply = answered.map_err(|e| format!("closed: {e}"))?;
            assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(reply.headers()["retry-after"], "1");
            Ok(())
        })
        .await;
    }
    let scrape = support::send(
        &client,
        Request::get(format!("http://{admin}/metrics"))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    let text = String::from_utf8_lossy(&scrape.body).into_owned();
    let rejected = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("baremetal_image_cache_rejected_total{reason=\"connections\"} ")
        })
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(rejected >= 150.0, "{rejected} connections refused");
    drop(idle);
    let lines = stop_and_read_logs(&mut child).await;
    assert!(
        lines.iter().any(|l| l.contains("descriptor limit")),
        "the smaller caps are announced: {lines:?}"
    );
}
