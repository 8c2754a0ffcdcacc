//! The table of settings: every setting is written here once, and its flag, environment
//! variable, TOML key, default, range and `--help` line are all derived from its row.
//!
//! Defaults are text, parsed by the same parser as user input, so a default cannot be
//! written in a form a user could not write (`tests::defaults_are_valid` proves they parse).

use std::time::Duration;

/// One setting of the proxy.
#[derive(Debug)]
pub struct Setting {
    /// The flag without `--`, the TOML key, and (upper case, `-` as `_`, after
    /// [`ENV_PREFIX`](super::ENV_PREFIX)) the environment variable.
    pub key: &'static str,
    /// What `--help` calls the value: `DURATION`, `BYTES`, `N`, ...
    pub value_name: &'static str,
    /// The value when no source gives one, written as a user would write it.
    pub default: Option<&'static str>,
    /// One line for `--help`.
    pub help: &'static str,
    pub kind: Kind,
    /// Never quoted in an error, never shown by `--help`, redacted in `Debug`.
    pub secret: bool,
    pub change: Change,
    /// `false` only for `config`, which names the file and so cannot be in it.
    pub in_file: bool,
}

/// What a setting's value is, with the range it must fall in (inclusive).
#[derive(Debug)]
pub enum Kind {
    Duration {
        min: Duration,
        max: Duration,
    },
    Size {
        min: u64,
        max: u64,
    },
    Count {
        min: u64,
        max: u64,
    },
    Percent {
        max: u8,
    },
    /// A text whose length (in characters) is bounded.
    Text {
        min: usize,
        max: Option<usize>,
    },
    /// An IP address and port (`localhost` stands for 127.0.0.1).
    Addr,
    /// The upstream's `http://` or `https://` URL.
    Upstream,
    /// One `redis://` or `rediss://` URL, or comma-separated cluster seeds.
    RedisUrls,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// `true` or `false`; the bare flag means `true`.
    Flag,
    Path,
}

/// Whether a running proxy could take a new value of the setting, or only a restart can.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Read per request, per connection or per fetch: a reload can apply it.
    Live,
    /// Fixed at start-up (a socket, a client, the cache's size, the Redis tier).
    Restart,
}

/// The setting of this key, if there is one.
pub(super) fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

const MS: Duration = Duration::from_millis(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
/// Longest `ttl`, `negative-ttl` and `stale-if-error`. Entries hold their freshness in
/// 32-bit milliseconds (49 days), and an image answer trusted for longer than a month is a
/// mistake anyway.
const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
/// Shortest `redis-grant-key`: a shorter key could be guessed, and with it a forged
/// authorization record would serve an image to a credential that may not read it.
const MIN_GRANT_KEY_LEN: usize = 32;

/// A row of the table that a reload could apply.
const fn live(
    key: &'static str,
    value_name: &'static str,
    default: Option<&'static str>,
    kind: Kind,
    help: &'static str,
) -> Setting {
    Setting {
        key,
        value_name,
        default,
        help,
        kind,
        secret: false,
        change: Change::Live,
        in_file: true,
    }
}

/// A row of the table that only a restart can change.
const fn restart(
    key: &'static str,
    value_name: &'static str,
    default: Option<&'static str>,
    kind: Kind,
    help: &'static str,
) -> Setting {
    Setting {
        change: Change::Restart,
        ..live(key, value_name, default, kind, help)
    }
}

impl Setting {
    const fn secret(self) -> Setting {
        Setting {
            secret: true,
            ..self
        }
    }

    const fn not_in_file(self) -> Setting {
        Setting {
            in_file: false,
            ..self
        }
    }
}

const fn duration(min: Duration, max: Duration) -> Kind {
    Kind::Duration { min, max }
}

const fn size(min: u64, max: u64) -> Kind {
    Kind::Size { min, max }
}

const fn count(min: u64, max: u64) -> Kind {
    Kind::Count { min, max }
}

/// Every setting, in the order `--help`, the README and the example file list them.
pub const SETTINGS: &[Setting] = &[
    restart(
        "config",
        "FILE",
        None,
        Kind::Path,
        "TOML configuration file (keys are the flag names without `--`)",
    )
    .not_in_file(),
    restart(
        "listen",
        "ADDR",
        Some("127.0.0.1:8080"),
        Kind::Addr,
        "Proxy listener",
    ),
    restart(
        "admin-listen",
        "ADDR",
        Some("127.0.0.1:9464"),
        Kind::Addr,
        "Admin listener: metrics, health, readiness, purge",
    ),
    // Read again by a reload, so that a token can be rotated without a restart.
    live(
        "admin-token-file",
        "FILE",
        None,
        Kind::Path,
        "File holding the bearer token that purges (DELETE /cache...) on the admin listener need; \
         without it only loopback clients may purge",
    ),
    restart(
        "upstream",
        "URL",
        Some("https://baremetal.api.cloud.yandex.net"),
        Kind::Upstream,
        "Upstream API, http:// or https://",
    ),
    live(
        "ttl",
        "DURATION",
        Some("60s"),
        duration(MS, MONTH),
        "Freshness of a READY entry",
    ),
    live(
        "stale-if-error",
        "DURATION",
        Some("5m"),
        duration(Duration::ZERO, MONTH),
        "Serve an expired READY entry this long while the upstream fails; 0s = off",
    ),
    live(
        "negative-ttl",
        "DURATION",
        Some("0s"),
        duration(Duration::ZERO, MONTH),
        "Cache 404 answers this long; 0s = off",
    ),
    restart(
        "max-capacity",
        "BYTES",
        Some("256MiB"),
        size(1, 1024 * GIB),
        "Memory bound of the cache",
    ),
    live(
        "max-entry-size",
        "BYTES",
        Some("1MiB"),
        size(1, 64 * MIB),
        "Largest upstream body that is stored; bigger ones are streamed through",
    ),
    restart(
        "auth-mode",
        "MODE",
        Some("per-credential"),
        Kind::Choice(&["per-credential", "shared"]),
        "per-credential or shared",
    ),
    live(
        "upstream-timeout",
        "DURATION",
        Some("10s"),
        duration(MS, HOUR),
        "Deadline for the whole upstream exchange",
    ),
    // Part of the upstream client's connector, built once like the client itself.
    restart(
        "connect-timeout",
        "DURATION",
        Some("3s"),
        duration(MS, Duration::from_secs(600)),
        "Deadline for opening an upstream connection, TLS included",
    ),
    live(
        "max-waiters-per-key",
        "N",
        Some("10000"),
        count(1, 1_000_000),
        "Requests that may wait for one image's fetch; more get 503",
    ),
    live(
        "max-waiters",
        "N",
        Some("100000"),
        count(1, 10_000_000),
        "Requests that may wait for fetches in total; more get 503",
    ),
    live(
        "shutdown-grace",
        "DURATION",
        Some("30s"),
        duration(Duration::ZERO, HOUR),
        "How long SIGTERM waits for in-flight requests",
    ),
    restart(
        "log-format",
        "FORMAT",
        Some("text"),
        Kind::Choice(&["text", "json"]),
        "text or json",
    ),
    live(
        "log-filter",
        "FILTER",
        None,
        Kind::Text {
            min: 1,
            max: Some(4096),
        },
        "Which events are logged, as RUST_LOG writes it (`info`, `warn,baremetal_image_cache=debug`); \
         without it RUST_LOG, else info",
    ),
    live(
        "refresh-ahead",
        "PERCENT",
        Some("20%"),
        Kind::Percent { max: 99 },
        "Refresh a hot entry in the background in the last PERCENT of its TTL; 0% = off",
    ),
    // hyper needs room for at least one read buffer of 8 KiB.
    live(
        "max-header-size",
        "BYTES",
        Some("64KiB"),
        size(8 * KIB, MIB),
        "Largest request head (request line and headers); past it: 431",
    ),
    live(
        "max-headers",
        "N",
        Some("100"),
        count(1, 1000),
        "Most request headers; past it: 431",
    ),
    live(
        "max-request-body",
        "BYTES",
        Some("16MiB"),
        size(0, GIB),
        "Largest request body passed through; past it: 413",
    ),
    live(
        "request-body-timeout",
        "DURATION",
        Some("10s"),
        duration(MS, HOUR),
        "Longest pause in a request body; past it: 408, and the upstream exchange is cut",
    ),
    // Both are sized against the file-descriptor limit when the listeners start.
    restart(
        "max-connections",
        "N",
        Some("10000"),
        count(1, 1_000_000),
        "Concurrent client connections; past it: 503 and close",
    ),
    restart(
        "max-upstream-requests",
        "N",
        Some("512"),
        count(1, 100_000),
        "Concurrent upstream requests; past it: 503 with Retry-After",
    ),
    live(
        "header-read-timeout",
        "DURATION",
        Some("10s"),
        duration(MS, HOUR),
        "A request head must arrive within this; also the HTTP/1 idle keep-alive timeout",
    ),
    live(
        "upstream-retries",
        "N",
        Some("2"),
        count(0, 10),
        "Retries of a GET whose upstream connection failed, with jittered backoff",
    ),
    restart(
        "redis",
        "URL[,URL...]",
        None,
        Kind::RedisUrls,
        "Shared second tier: a redis:// or rediss:// URL, or comma-separated cluster seed URLs",
    )
    .secret(),
    restart(
        "redis-cluster",
        "BOOL",
        Some("false"),
        Kind::Flag,
        "Treat a single --redis URL as a Redis Cluster seed node",
    ),
    restart(
        "redis-grant-key",
        "SECRET",
        None,
        Kind::Text {
            min: MIN_GRANT_KEY_LEN,
            max: None,
        },
        "Key (the same on every instance) that lets instances share who may read an image; \
         pass it by environment or file",
    )
    .secret(),
    restart(
        "redis-timeout",
        "DURATION",
        Some("250ms"),
        duration(MS, MINUTE),
        "Deadline of each Redis command; past it the tier is skipped for that request",
    ),
    restart(
        "redis-lease",
        "DURATION",
        Some("3s"),
        duration(MS, HOUR),
        "Fleet fill lease: how long other instances wait for one instance's fetch",
    ),
    restart(
        "redis-prefix",
        "PREFIX",
        Some("baremetal-image-cache:"),
        Kind::Text {
            min: 0,
            max: Some(256),
        },
        "Prefix of every Redis key and channel",
    ),
    restart(
        "redis-ca-file",
        "FILE",
        None,
        Kind::Path,
        "PEM certificate authorities for rediss:// servers, instead of the system's roots",
    ),
    restart(
        "redis-cert-file",
        "FILE",
        None,
        Kind::Path,
        "PEM client certificate for rediss:// servers that check clients; needs --redis-key-file",
    ),
    restart(
        "redis-key-file",
        "FILE",
        None,
        Kind::Path,
        "PEM private key of --redis-cert-file",
    ),
];
