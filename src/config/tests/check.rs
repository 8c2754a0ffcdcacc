//! `--check-config`'s report and the files a configuration reads (the admin token).

use super::*;

fn effective(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["baremetal-image-cache"];
    all.extend_from_slice(args);
    match load_from(all, vars(env)) {
        Ok(loaded) => loaded.effective.to_string(),
        Err(e) => panic!("{args:?}: {e}"),
    }
}

#[test]
fn the_report_names_each_origin_and_redacts_every_secret() {
    let token = config_file("admin-token-in-a-file-0123456789\n");
    let file = config_file("ttl = \"5m\"\nmax-headers = 50\n");
    let report = effective(
        &[
            "--config",
            path_of(&file),
            "--redis",
            "redis://user:hunter2-password@127.0.0.1:6379/0",
            "--admin-token-file",
            path_of(&token),
        ],
        &[(
            "BAREMETAL_IMAGE_CACHE_REDIS_GRANT_KEY",
            "grant-key-hunter2-0123456789abcdefghij",
        )],
    );
    for secret in ["hunter2", "admin-token-in-a-file"] {
        assert!(!report.contains(secret), "{secret} in:\n{report}");
    }
    let lines: Vec<&str> = report.lines().collect();
    let line = |key: &str| -> &str {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in:\n{report}"))
    };
    assert_eq!(
        line("redis"),
        "redis = \"redis://***@127.0.0.1:6379/0\"  # --redis"
    );
    assert_eq!(
        line("redis-grant-key"),
        "redis-grant-key = \"<redacted>\"  # BAREMETAL_IMAGE_CACHE_REDIS_GRANT_KEY"
    );
    assert!(line("ttl").starts_with("ttl = \"5m\"  # config file "));
    assert!(line("ttl").ends_with("line 1: key `ttl`"));
    assert!(line("max-headers").starts_with("max-headers = 50  # config file "));
    assert_eq!(line("stale-if-error"), "stale-if-error = \"5m\"  # default");
    assert_eq!(line("redis-cluster"), "redis-cluster = false  # default");
    assert!(line("admin-token-file").ends_with("# --admin-token-file"));
    assert!(lines.contains(&"# log-filter is not set"), "{report}");
    assert!(
        lines.iter().any(|l| l.starts_with("# config = ")),
        "the file's own path, as a comment:\n{report}"
    );
    // Every setting is accounted for, and what is printed is a file the proxy takes.
    for setting in SETTINGS {
        assert!(
            report.contains(&format!("{} = ", setting.key))
                || report.contains(&format!("# {} is not set", setting.key)),
            "{}",
            setting.key
        );
    }
    let printed: String = lines
        .iter()
        .filter(|l| !l.starts_with('#') && !l.starts_with("redis"))
        .map(|l| format!("{l}\n"))
        .collect();
    let reloaded = config_file(&printed);
    let again = loaded(&["--config", path_of(&reloaded)], &[]);
    assert_eq!(again.ttl, Duration::from_secs(300));
    assert_eq!(again.max_headers, 50);
}

#[test]
fn the_admin_token_file_is_read_checked_and_never_quoted() {
    let good = config_file("  an-admin-token-of-20c \n");
    let config = loaded(&["--admin-token-file", path_of(&good)], &[]);
    assert_eq!(
        config.admin_token.as_ref().map(Secret::expose),
        Some(&b"an-admin-token-of-20c"[..])
    );
    assert!(!format!("{config:?}").contains("an-admin-token"));
    for (text, why) in [
        ("short-token\n", "at least 16 characters"),
        ("two words in-a-token-file\n", "one token of visible ASCII"),
        (
            "first-line-token-0123\nsecond-line\n",
            "one token of visible ASCII",
        ),
        ("", "at least 16 characters"),
    ] {
        let file = config_file(text);
        let message = refused(&["--admin-token-file", path_of(&file)], &[]);
        assert!(
            message.starts_with("--admin-token-file: ") && message.contains(why),
            "{text:?}: {message}"
        );
        for word in text.split_whitespace() {
            assert!(!message.contains(word), "{message}");
        }
    }
    let huge = config_file(&"x".repeat(5000));
    let message = refused(&["--admin-token-file", path_of(&huge)], &[]);
    assert!(message.contains("larger than 4096 bytes"), "{message}");
    let message = refused(&["--admin-token-file", "/nonexistent/token"], &[]);
    assert!(
        message.starts_with("--admin-token-file: cannot read /nonexistent/token"),
        "{message}"
    );
}

#[test]
fn a_log_filter_must_parse() {
    let config = loaded(&["--log-filter", "warn,baremetal_image_cache=debug"], &[]);
    assert_eq!(
        config.log_filter.as_deref(),
        Some("warn,baremetal_image_cache=debug")
    );
    let message = refused(&["--log-filter", "info,[[["], &[]);
    assert!(
        message.starts_with("--log-filter: is not a log filter"),
        "{message}"
    );
}

#[test]
fn only_a_regular_file_is_read_for_a_token() {
    let message = refused(&["--admin-token-file", "/dev/zero"], &[]);
    assert_eq!(
        message,
        "--admin-token-file: /dev/zero is not a regular file"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let message = refused(
        &[
            "--admin-token-file",
            dir.path().to_str().unwrap_or_default(),
        ],
        &[],
    );
    assert!(message.ends_with("is not a regular file"), "{message}");
}
