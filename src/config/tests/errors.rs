//! Precedence, and errors that name where a value came from and never quote a secret.

use super::*;

#[test]
fn flag_then_environment_then_file_then_default() {
    let file = config_file("ttl = \"30s\"\nnegative-ttl = \"2s\"\nmax-capacity = 8388608\n");
    let path = path_of(&file);
    let env = [
        ("BAREMETAL_IMAGE_CACHE_TTL", "20s"),
        ("BAREMETAL_IMAGE_CACHE_NEGATIVE_TTL", "4s"),
    ];
    let c = loaded(&["--config", path, "--ttl", "10s"], &env);
    assert_eq!(c.ttl, Duration::from_secs(10));
    assert_eq!(c.negative_ttl, Duration::from_secs(4));
    assert_eq!(c.max_capacity, 8 * 1024 * 1024);
    let c = loaded(&["--config", path], &env);
    assert_eq!(c.ttl, Duration::from_secs(20));
    let c = loaded(&[], &[("BAREMETAL_IMAGE_CACHE_CONFIG", path)]);
    assert_eq!(c.ttl, Duration::from_secs(30));
    assert_eq!(loaded(&[], &[]).ttl, Duration::from_secs(60));
}

#[test]
fn errors_name_the_flag_the_variable_or_the_file_and_line() {
    assert_eq!(
        refused(&["--ttl", "31days"], &[]),
        "--ttl: must be from 1ms to 30days, not 31days"
    );
    let message = refused(&["--ttl", "soon"], &[]);
    assert!(
        message.starts_with("--ttl: \"soon\" is not a duration"),
        "{message}"
    );
    let message = refused(&[], &[("BAREMETAL_IMAGE_CACHE_TTL", "soon")]);
    assert!(
        message.starts_with("BAREMETAL_IMAGE_CACHE_TTL: \"soon\" is not a duration"),
        "{message}"
    );
    let file = config_file("# tuned\n\nttl = \"soon\"\n");
    let path = path_of(&file);
    let message = refused(&["--config", path], &[]);
    let expected = format!("config file {path} line 3: key `ttl`: \"soon\" is not a duration");
    assert!(message.starts_with(&expected), "{message}");
    let file = config_file("ttl = \"5s\"\nmax-headers = \"lots\"\nttl-x = 1\n");
    assert_eq!(
        refused(&["--config", path_of(&file)], &[]),
        format!(
            "config file {} line 3: unknown key `ttl-x`; did you mean `ttl`?",
            path_of(&file)
        )
    );
    let file = config_file("ttl = 60\n");
    assert_eq!(
        refused(&["--config", path_of(&file)], &[]),
        format!(
            "config file {} line 1: key `ttl`: must be a string like \"60s\", not an integer",
            path_of(&file)
        )
    );
    // A text given to from_toml has no path.
    match Config::from_toml("\nmax-capacity = -5\n") {
        Err(ConfigError::Invalid(m)) => assert_eq!(
            m,
            "config file line 2: key `max-capacity`: \"-5\" is negative; a size is written like 8MiB"
        ),
        other => panic!("{other:?}"),
    }
    assert!(refused(&["--config", "/nonexistent/bic.toml"], &[])
        .starts_with("--config: cannot read config file /nonexistent/bic.toml: "));
    let env = [("BAREMETAL_IMAGE_CACHE_CONFIG", "/nonexistent/bic.toml")];
    assert!(refused(&[], &env).starts_with("BAREMETAL_IMAGE_CACHE_CONFIG: cannot read"));
}

#[test]
fn checks_across_settings_name_where_the_value_came_from() {
    assert_eq!(
        refused(&["--max-capacity", "512KiB"], &[]),
        "max-entry-size (default 1MiB): must not be larger than max-capacity (512KiB)"
    );
    assert_eq!(
        refused(
            &["--max-capacity", "2MiB"],
            &[("BAREMETAL_IMAGE_CACHE_MAX_ENTRY_SIZE", "4MiB")]
        ),
        "BAREMETAL_IMAGE_CACHE_MAX_ENTRY_SIZE: must not be larger than max-capacity (2MiB)"
    );
    let redis = ["--redis", "rediss://cache:6379"];
    let env = [(
        "BAREMETAL_IMAGE_CACHE_REDIS_CERT_FILE",
        "/nonexistent/c.pem",
    )];
    assert_eq!(
        refused(&redis, &env),
        "BAREMETAL_IMAGE_CACHE_REDIS_CERT_FILE: needs redis-key-file as well: give both or neither"
    );
    let file =
        config_file("redis = \"rediss://cache:6379\"\nredis-ca-file = \"/nonexistent/ca\"\n");
    let message = refused(&["--config", path_of(&file)], &[]);
    let expected = format!(
        "config file {} line 2: key `redis-ca-file`: cannot read /nonexistent/ca: ",
        path_of(&file)
    );
    assert!(message.starts_with(&expected), "{message}");
    assert_eq!(
        refused(&["--redis", "redis://c:1", "--redis-prefix", "a{b}"], &[]),
        "--redis-prefix: must not contain { or } (they would change the cluster hash tag)"
    );
    // Config::validate, for a Config built in code, names the key.
    let config = Config {
        max_capacity: 1,
        ..Config::default()
    };
    match config.validate() {
        Err(ConfigError::Invalid(m)) => assert!(m.starts_with("max-entry-size: "), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_variables_and_file_keys_get_a_did_you_mean() {
    let message = refused(&[], &[("BAREMETAL_IMAGE_CACHE_STALE_IF_EROR", "1m")]);
    assert!(
        message.contains("BAREMETAL_IMAGE_CACHE_STALE_IF_EROR")
            && message.ends_with("did you mean BAREMETAL_IMAGE_CACHE_STALE_IF_ERROR?"),
        "{message}"
    );
    let file = config_file("stale-if-eror = \"1m\"\n");
    let message = refused(&["--config", path_of(&file)], &[]);
    assert!(
        message.ends_with("line 1: unknown key `stale-if-eror`; did you mean `stale-if-error`?"),
        "{message}"
    );
    let message = refused(&["--auth-mode", "shard"], &[]);
    assert!(message.ends_with("did you mean shared?"), "{message}");
}

#[test]
fn localhost_means_127_0_0_1_and_other_host_names_are_refused_with_the_form() {
    let c = loaded(
        &[
            "--listen",
            "localhost:8081",
            "--admin-listen",
            "localhost:0",
        ],
        &[],
    );
    assert_eq!(c.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:0");
    let message = refused(&["--listen", "proxy.internal:8080"], &[]);
    assert!(
        message.starts_with("--listen: ") && message.contains("like 127.0.0.1:8080"),
        "{message}"
    );
    let message = refused(&[], &[("BAREMETAL_IMAGE_CACHE_ADMIN_LISTEN", "localhost")]);
    assert!(
        message.starts_with("BAREMETAL_IMAGE_CACHE_ADMIN_LISTEN: "),
        "{message}"
    );
}

#[test]
fn secrets_never_appear_in_errors() {
    let secret = "hunter2";
    let long_secret = format!("{secret}-{}", "x".repeat(40));
    let file_cases = [
        format!("redis = \"{secret}\"\n"),
        format!("redis = [\"redis://:{secret}@h\"]\n"),
        format!("redis = \"redis:/:{secret}@h\"\n"),
        format!("redis-grant-key = \"{secret}\"\n"),
        format!("redis = \"redis://h\"\nredis-grant-key = {{ k = \"{secret}\" }}\n"),
        format!("redis-grant-key = \"{long_secret}\"\nredis-grant-key = \"{long_secret}\"\n"),
    ];
    let mut messages = Vec::new();
    for text in &file_cases {
        let file = config_file(text);
        messages.push(refused(&["--config", path_of(&file)], &[]));
    }
    for args in [
        vec!["--redis", "hunter2"],
        vec!["--redis", "redis://ok:1,hunter2"],
        vec!["--redis", "ftp://user:hunter2@cache"],
        vec!["--redis", "rediss://user:hunter2@cache:99999999"],
        vec!["--redis-grant-key", "hunter2"],
        vec!["--redis", "redis://:hunter2@c:1", "--redis-cert-file", "/x"],
    ] {
        messages.push(refused(&args, &[]));
    }
    for env in [
        [("BAREMETAL_IMAGE_CACHE_REDIS", "hunter2")],
        [("BAREMETAL_IMAGE_CACHE_REDIS_GRANT_KEY", "hunter2")],
    ] {
        messages.push(refused(&[], &env));
    }
    for message in messages {
        assert!(!message.contains(secret), "{message}");
        assert!(message.to_ascii_lowercase().contains("redis"), "{message}");
    }
    // A syntax error is reported by its line alone.
    let file = config_file(&format!(
        "redis-grant-key = \"{long_secret}\"\nttl = \"soon\n"
    ));
    let message = refused(&["--config", path_of(&file)], &[]);
    assert!(
        message.contains("line 2: ") && !message.contains(secret),
        "{message}"
    );
}

#[test]
fn redis_settings_parse_and_never_show_secrets() {
    let file = config_file("redis-timeout = \"100ms\"\nredis-prefix = \"fleet-a:\"\n");
    let c = loaded(
        &[
            "--config",
            path_of(&file),
            "--redis",
            "redis://:pw-one@10.0.0.1:6379, rediss://u:pw-two@10.0.0.2:6380",
        ],
        &[(
            "BAREMETAL_IMAGE_CACHE_REDIS_GRANT_KEY",
            "0123456789abcdef0123456789abcdef-key",
        )],
    );
    let redis = c.redis.clone().unwrap_or_else(|| panic!("a Redis tier"));
    assert_eq!(redis.urls.len(), 2);
    assert!(redis.is_cluster());
    assert_eq!(redis.timeout, Duration::from_millis(100));
    assert_eq!(redis.lease, Duration::from_secs(3));
    assert_eq!(redis.prefix, "fleet-a:");
    let shown = format!("{c:?}");
    for secret in ["pw-one", "pw-two", "0123456789abcdef"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(shown.contains("10.0.0.2:6380"));
    let c = loaded(&["--redis", "redis://h:1", "--redis-cluster"], &[]);
    assert!(c.redis.is_some_and(|r| r.cluster));
    let file = config_file("redis = \"redis://h:1\"\nredis-cluster = true\n");
    let c = loaded(&["--config", path_of(&file), "--redis-cluster=false"], &[]);
    assert!(c.redis.is_some_and(|r| !r.cluster));
}

#[test]
fn from_toml_reads_the_text_alone() {
    let c = Config::from_toml("ttl = \"5s\"\nauth-mode = \"shared\"\nrefresh-ahead = 0\n");
    let c = c.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.ttl, Duration::from_secs(5));
    assert_eq!(c.auth_mode, AuthMode::Shared);
    assert_eq!(c.refresh_ahead, 0);
}
