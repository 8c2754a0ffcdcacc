//! The table agrees with `--help`, the example file, the README and [`Config`].

use super::*;

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
        // What a reload cannot change: sockets, the upstream client and its connector, the
        // cache's own size and tenancy, the Redis tier's connections, the log's format, and
        // the caps sized against the descriptor limit at start-up.
        let fixed = s.key.starts_with("redis")
            || matches!(
                s.key,
                "config"
                    | "listen"
                    | "admin-listen"
                    | "upstream"
                    | "auth-mode"
                    | "max-capacity"
                    | "connect-timeout"
                    | "log-format"
                    | "max-connections"
                    | "max-upstream-requests"
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
        &["--redis", "redis://127.0.0.1:6379", "--log-filter", "info"],
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
