//! The table agrees with `--help`, the example file, the README and [`Config`]; errors name
//! where a value came from; secrets stay out of errors.

use std::collections::BTreeSet;
use std::io::Write;

use super::validate::Measure;
use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut all = vec!["baremetal-image-cache"];
    all.extend_from_slice(args);
    load_from(all, vars(env))
}

fn loaded(args: &[&str], env: &[(&str, &str)]) -> Config {
    match load(args, env) {
        Ok(config) => config,
        Err(e) => panic!("{args:?} {env:?}: {e}"),
    }
}

/// The message of a configuration that must be refused.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    match load(args, env) {
        Err(ConfigError::Invalid(message)) => message,
        Err(ConfigError::Cli(e)) => panic!("{args:?} {env:?}: clap refused it: {e}"),
        Ok(_) => panic!("{args:?} {env:?} was taken"),
    }
}

/// A configuration file holding this text; its path is `.path()`.
fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = match tempfile::Builder::new().suffix(".toml").tempfile() {
        Ok(file) => file,
        Err(e) => panic!("{e}"),
    };
    if let Err(e) = file.write_all(text.as_bytes()) {
        panic!("{e}");
    }
    file
}

fn path_of(file: &tempfile::NamedTempFile) -> &str {
    file.path().to_str().unwrap_or_default()
}

fn read_doc(relative: &str) -> String {
    let path = format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// How the example file writes a default: numbers and booleans bare, the rest quoted.
fn toml_default(setting: &Setting, default: &str) -> String {
    match setting.kind {
        Kind::Count { .. } | Kind::Flag => default.to_string(),
        _ => format!("{default:?}"),
    }
}

#[test]
fn every_setting_has_its_flag_and_variable_in_help() {
    let help = cli::command().render_long_help().to_string();
    for s in SETTINGS {
        let flag = match s.kind {
            Kind::Flag => format!("--{} [<{}>]", s.key, s.value_name),
            _ => format!("--{} <{}>", s.key, s.value_name),
        };
        assert!(help.contains(&flag), "--help lacks {flag}:\n{help}");
        let env = format!("[env: {}]", env::env_name(s.key));
        assert!(help.contains(&env), "--help lacks {env}");
        if let Some(default) = s.default {
            assert!(help.contains(&format!("[default: {default}]")), "{}", s.key);
        }
    }
}

#[test]
fn every_setting_is_in_the_example_file_at_its_default_after_a_comment() {
    let text = read_doc("config/baremetal-image-cache.toml");
    let lines: Vec<&str> = text.lines().collect();
    let is_key_line = |line: &str| {
        line.strip_prefix("# ")
            .and_then(|rest| rest.split_once(" = "))
            .is_some_and(|(key, _)| super::settings::setting(key).is_some())
    };
    let mut last = 0;
    for s in SETTINGS.iter().filter(|s| s.in_file) {
        let prefix = format!("# {} = ", s.key);
        let Some(at) = lines.iter().position(|l| l.starts_with(&prefix)) else {
            panic!("the example lacks `{}`", s.key);
        };
        if let Some(default) = s.default {
            let expected = format!("{prefix}{}", toml_default(s, default));
            assert_eq!(lines[at], expected, "the example's default of `{}`", s.key);
        }
        assert!(
            at > 0 && lines[at - 1].starts_with('#') && !is_key_line(lines[at - 1]),
            "`{}` has no comment of its own in the example",
            s.key
        );
        assert!(
            at > last,
            "`{}` is out of the table's order in the example",
            s.key
        );
        last = at;
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("# config = ")),
        "`config` cannot be set in the file"
    );
}

#[test]
fn every_setting_has_its_row_in_the_readme() {
    let readme = read_doc("README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_default();
    let rows: Vec<Vec<&str>> = section
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    let mut last = 0;
    for s in SETTINGS {
        let flag = match s.kind {
            Kind::Flag => format!("`--{}`", s.key),
            _ => format!("--{} {}", s.key, s.value_name),
        };
        let Some(at) = rows.iter().position(|row| row[1].contains(&flag)) else {
            panic!("the README's table has no row for {flag}");
        };
        let row = &rows[at];
        match s.default {
            Some(default) => assert_eq!(row[2], format!("`{default}`"), "{flag}"),
            None => assert!(!row[2].starts_with('`'), "{flag} has no default"),
        }
        match s.kind.range_text() {
            Some(range) => assert!(row[3].starts_with(&range), "{flag}: {} vs {range}", row[3]),
            None => assert_eq!(row[3], "", "{flag} has no range"),
        }
        assert!(
            at >= last,
            "{flag} is out of the table's order in the README"
        );
        last = at;
    }
}

#[test]
fn every_setting_is_read_when_a_config_is_built() {
    let mut resolver = Resolver::new(Sources::default());
    let built = resolver.read_file().and_then(|()| build(&mut resolver));
    assert!(built.is_ok(), "{:?}", built.err());
    let read: BTreeSet<&str> = resolver.read_keys().collect();
    let all: BTreeSet<&str> = SETTINGS.iter().map(|s| s.key).collect();
    assert_eq!(read, all);
}

#[test]
fn the_table_has_each_key_once_and_well_formed() {
    let keys: BTreeSet<&str> = SETTINGS.iter().map(|s| s.key).collect();
    assert_eq!(keys.len(), SETTINGS.len(), "a key is in the table twice");
    for s in SETTINGS {
        assert!(
            s.key.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{}",
            s.key
        );
        assert!(!s.help.is_empty() && !s.help.contains('\n'), "{}", s.key);
    }
    let secret: Vec<&str> = SETTINGS
        .iter()
        .filter(|s| s.secret)
        .map(|s| s.key)
        .collect();
    assert_eq!(secret, ["redis", "redis-grant-key"]);
    for s in SETTINGS {
        // What a reload cannot change: sockets, the upstream client's target, the cache's
        // own size and tenancy, the Redis tier's connections.
        let fixed = s.key.starts_with("redis")
            || matches!(
                s.key,
                "config" | "listen" | "admin-listen" | "upstream" | "auth-mode" | "max-capacity"
            );
        assert_eq!(s.change == Change::Restart, fixed, "{}", s.key);
    }
}

#[test]
fn choices_are_the_words_of_their_enums() {
    use clap::ValueEnum;
    let words = |variants: Vec<Option<clap::builder::PossibleValue>>| -> Vec<String> {
        variants
            .into_iter()
            .flatten()
            .map(|v| v.get_name().to_string())
            .collect()
    };
    let auth = words(
        AuthMode::value_variants()
            .iter()
            .map(|v| v.to_possible_value())
            .collect(),
    );
    let log = words(
        LogFormat::value_variants()
            .iter()
            .map(|v| v.to_possible_value())
            .collect(),
    );
    for (key, enum_words) in [("auth-mode", auth), ("log-format", log)] {
        match settings::setting(key).map(|s| &s.kind) {
            Some(Kind::Choice(choices)) => assert_eq!(choices.to_vec(), enum_words, "{key}"),
            other => panic!("{key}: {other:?}"),
        }
    }
}

#[test]
fn the_defaults_are_valid_and_documented() {
    // Each default parses and is within its range...
    for s in SETTINGS {
        if let Some(default) = s.default {
            let value = parse::value(&s.kind, default);
            let checked = value.and_then(|v| v.measure().map_or(Ok(()), |m| s.kind.check(m)));
            assert_eq!(checked, Ok(()), "the default of `{}`", s.key);
        }
    }
    // ...and together they are the documented configuration (SPEC.md, the README).
    let c = Config::default();
    assert!(c.validate().is_ok());
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9464");
    assert_eq!(
        c.upstream.to_string(),
        "https://baremetal.api.cloud.yandex.net"
    );
    assert_eq!(c.ttl, Duration::from_secs(60));
    assert_eq!(c.stale_if_error, Duration::from_secs(300));
    assert_eq!(c.negative_ttl, Duration::ZERO);
    assert_eq!(c.max_capacity, 256 * 1024 * 1024);
    assert_eq!(c.max_entry_size, 1024 * 1024);
    assert_eq!(c.auth_mode, AuthMode::PerCredential);
    assert_eq!(c.upstream_timeout, Duration::from_secs(10));
    assert_eq!(c.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.max_waiters_per_key, 10_000);
    assert_eq!(c.max_waiters, 100_000);
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.refresh_ahead, 20);
    assert_eq!(c.max_header_size, 64 * 1024);
    assert_eq!(c.max_headers, 100);
    assert_eq!(c.max_request_body, 16 * 1024 * 1024);
    assert_eq!(c.max_connections, 10_000);
    assert_eq!(c.max_upstream_requests, 512);
    assert_eq!(c.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.request_body_timeout, Duration::from_secs(10));
    assert_eq!(c.upstream_retries, 2);
    assert_eq!(c.redis, None);
    let redis = loaded(&["--redis", "redis://127.0.0.1:6379"], &[]).redis;
    let redis = redis.unwrap_or_else(|| panic!("--redis gives a tier"));
    assert!(!redis.cluster && redis.grant_key.is_none());
    assert_eq!(redis.timeout, Duration::from_millis(250));
    assert_eq!(redis.lease, Duration::from_secs(3));
    assert_eq!(redis.prefix, "baremetal-image-cache:");
}

#[test]
fn validate_holds_every_ranged_setting_against_its_range() {
    let config = loaded(
        &["--redis", "redis://127.0.0.1:6379"],
        &[("BAREMETAL_IMAGE_CACHE_REDIS_GRANT_KEY", &"k".repeat(32))],
    );
    let measured: BTreeSet<&str> = config.measures().into_iter().map(|(k, _)| k).collect();
    let ranged: BTreeSet<&str> = SETTINGS
        .iter()
        .filter(|s| s.kind.range_text().is_some())
        .map(|s| s.key)
        .collect();
    assert_eq!(measured, ranged);
    let too_long = Config {
        request_body_timeout: Duration::from_secs(7200),
        ..Config::default()
    };
    match too_long.validate() {
        Err(ConfigError::Invalid(m)) => {
            assert_eq!(m, "request-body-timeout: must be from 1ms to 1h, not 2h")
        }
        other => panic!("{other:?}"),
    }
    let kind = Kind::Percent { max: 99 };
    assert!(kind.check(Measure::Percent(100)).is_err());
}

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
