//! Configuration: command-line flags, `BAREMETAL_IMAGE_CACHE_*` environment variables and a
//! TOML file, merged into one validated [`Config`] that the rest of the proxy only reads.
//!
//! Precedence is flag, then environment, then file, then default. clap handles the first two
//! (every flag has an `env`), so a value that clap reports as absent falls back to the file.
//! Every failure names the flag, variable, key or path it is about and what was wrong.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use http::uri::{Authority, Scheme};
use serde::Deserialize;

/// Prefix of every environment variable the proxy reads.
pub const ENV_PREFIX: &str = "BAREMETAL_IMAGE_CACHE_";

/// Who may be served a cached image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// A cached image is served only to a credential that the upstream accepted for it.
    PerCredential,
    /// One entry per image, served to any caller (single-tenant sidecars).
    Shared,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::PerCredential => "per-credential",
            AuthMode::Shared => "shared",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the upstream API lives: scheme, authority and an optional path prefix that is put
/// in front of every forwarded request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    pub authority: Authority,
    pub path_prefix: String,
}

impl UpstreamUrl {
    /// Parses an upstream URL. Errors never quote the value: a URL can carry a password or
    /// a token, and an error message ends up in logs.
    pub fn parse(raw: &str) -> Result<UpstreamUrl, String> {
        let uri: http::Uri = raw
            .trim()
            .parse()
            .map_err(|e| format!("not a URL ({e}); write it like https://host[:port][/prefix]"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            Some(_) => return Err("the scheme must be http:// or https://".to_string()),
            None => return Err("has no scheme (http:// or https://)".to_string()),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| "has no host".to_string())?;
        if authority.as_str().contains('@') {
            return Err("credentials in the upstream URL are not allowed".to_string());
        }
        if uri.query().is_some() {
            return Err("must not have a query string".to_string());
        }
        let path_prefix = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamUrl {
            scheme,
            authority,
            path_prefix,
        })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme, self.authority, self.path_prefix
        )
    }
}

/// The validated configuration. Built once at start-up, shared read-only.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub upstream: UpstreamUrl,
    pub ttl: Duration,
    pub stale_if_error: Duration,
    pub negative_ttl: Duration,
    pub max_capacity: u64,
    pub max_entry_size: u64,
    pub auth_mode: AuthMode,
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_waiters_per_key: usize,
    pub max_waiters: usize,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// Refresh a READY entry in the background when a hit finds it in the last this-many
    /// percent of its TTL; 0 = off.
    pub refresh_ahead: u8,
    pub max_header_size: u64,
    pub max_headers: usize,
    pub max_request_body: u64,
    pub max_connections: usize,
    pub max_upstream_requests: usize,
    pub header_read_timeout: Duration,
    /// Longest pause in a client's request body before the request is cut off (408).
    pub request_body_timeout: Duration,
    pub upstream_retries: u32,
    /// The shared second tier; `None` runs a single-tier cache.
    pub redis: Option<RedisConfig>,
}

/// The Redis second tier (`--redis` and the `redis-*` settings).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URLs: one server, or the seed nodes of a cluster.
    pub urls: Vec<String>,
    /// Talk Redis Cluster even to a single seed URL (several URLs always mean a cluster).
    pub cluster: bool,
    /// Key of the keyed hash that names shared authorization records; without it, in
    /// per-credential mode, who may read an image stays known only to each instance.
    pub grant_key: Option<Secret>,
    /// Deadline of each Redis command, connecting included.
    pub timeout: Duration,
    /// How long a fill lease lasts: a fill that takes longer may be repeated by another
    /// instance, and a dead instance's lease is taken over after it.
    pub lease: Duration,
    /// Prefix of every key and channel, so that fleets can share a Redis.
    pub prefix: String,
    /// PEM file of the certificate authorities that `rediss://` servers are checked
    /// against, instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM files of the client certificate and its private key, for a `rediss://` server
    /// that checks its clients (`tls-auth-clients yes`, Redis's default with TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl RedisConfig {
    pub fn is_cluster(&self) -> bool {
        self.cluster || self.urls.len() > 1
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field(
                "urls",
                &self
                    .urls
                    .iter()
                    .map(|u| redacted_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("grant_key", &self.grant_key)
            .field("timeout", &self.timeout)
            .field("lease", &self.lease)
            .field("prefix", &self.prefix)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

/// A URL with its password (if any) replaced, fit for logs and errors.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// A secret setting: its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Shortest `redis-grant-key`: a shorter key could be guessed, and with it a forged
/// authorization record would serve an image to a credential that may not read it.
const MIN_GRANT_KEY_LEN: usize = 32;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            upstream: UpstreamUrl {
                scheme: Scheme::HTTPS,
                authority: Authority::from_static("baremetal.api.cloud.yandex.net"),
                path_prefix: String::new(),
            },
            ttl: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(300),
            negative_ttl: Duration::ZERO,
            max_capacity: 256 * 1024 * 1024,
            max_entry_size: 1024 * 1024,
            auth_mode: AuthMode::PerCredential,
            upstream_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_waiters_per_key: 10_000,
            max_waiters: 100_000,
            shutdown_grace: Duration::from_secs(30),
            log_format: LogFormat::Text,
            refresh_ahead: 20,
            max_header_size: 64 * 1024,
            max_headers: 100,
            max_request_body: 16 * 1024 * 1024,
            max_connections: 10_000,
            max_upstream_requests: 512,
            header_read_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(10),
            upstream_retries: 2,
            redis: None,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// A flag or environment variable clap rejected (also `--help` and `--version`, which
    /// clap prints and exits 0 for).
    Cli(clap::Error),
    /// Anything else: the message names the key, variable or path.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Cli(e) => write!(f, "{e}"),
            ConfigError::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for ConfigError {}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|e| format!("{raw:?} is not a duration ({e}); write it like 500ms, 60s or 5m"))
}

fn parse_size(raw: &str) -> Result<u64, String> {
    let trimmed = raw.trim();
    if trimmed.starts_with('-') {
        return Err(format!("{raw:?} is negative; a size is written like 8MiB"));
    }
    trimmed
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{raw:?} is not a size ({e}); write it like 8MiB or 1048576"))
}

fn parse_percent(raw: &str) -> Result<u8, String> {
    let number = raw.trim().trim_end_matches('%').trim();
    match number.parse::<u8>() {
        Ok(p) if p < 100 => Ok(p),
        _ => Err(format!(
            "{raw:?} is not a percentage from 0 to 99; write it like 20%"
        )),
    }
}

fn parse_upstream(raw: &str) -> Result<UpstreamUrl, String> {
    UpstreamUrl::parse(raw)
}

/// The command line. Every flag also reads `BAREMETAL_IMAGE_CACHE_<FLAG>`; an absent flag
/// falls back to the configuration file, then to the default.
#[derive(Debug, Parser)]
#[command(
    name = "baremetal-image-cache",
    version,
    about = "A read-through caching proxy for the Yandex Cloud BareMetal API (Image.Get)"
)]
struct Cli {
    /// TOML configuration file (keys are the flag names without `--`)
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Proxy listener [default: 127.0.0.1:8080]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Admin listener: health, readiness, purge [default: 127.0.0.1:9464]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_ADMIN_LISTEN", value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Upstream API, http:// or https:// [default: https://baremetal.api.cloud.yandex.net]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_UPSTREAM", value_name = "URL")]
    upstream: Option<String>,
    /// Freshness of a READY entry [default: 60s]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_TTL", value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    ttl: Option<Duration>,
    /// Serve an expired READY entry this long while the upstream fails; 0s = off [default: 5m]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_STALE_IF_ERROR", value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    stale_if_error: Option<Duration>,
    /// Cache 404 answers this long; 0s = off [default: 0s]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_NEGATIVE_TTL", value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    negative_ttl: Option<Duration>,
    /// Memory bound of the cache [default: 256MiB]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_MAX_CAPACITY", value_name = "BYTES", value_parser = parse_size, allow_hyphen_values = true)]
    max_capacity: Option<u64>,
    /// Largest upstream body that is stored; bigger ones are streamed through [default: 1MiB]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_MAX_ENTRY_SIZE", value_name = "BYTES", value_parser = parse_size, allow_hyphen_values = true)]
    max_entry_size: Option<u64>,
    /// per-credential or shared [default: per-credential]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_AUTH_MODE", value_name = "MODE")]
    auth_mode: Option<AuthMode>,
    /// Deadline for the whole upstream exchange [default: 10s]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_UPSTREAM_TIMEOUT", value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    upstream_timeout: Option<Duration>,
    /// Deadline for opening an upstream connection, TLS included [default: 3s]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_CONNECT_TIMEOUT", value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    connect_timeout: Option<Duration>,
    /// Requests that may wait for one image's fetch; more get 503 [default: 10000]
    #[arg(
        long,
        env = "BAREMETAL_IMAGE_CACHE_MAX_WAITERS_PER_KEY",
        value_name = "N"
    )]
    max_waiters_per_key: Option<usize>,
    /// Requests that may wait for fetches in total; more get 503 [default: 100000]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_MAX_WAITERS", value_name = "N")]
    max_waiters: Option<usize>,
    /// How long SIGTERM waits for in-flight requests [default: 30s]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_SHUTDOWN_GRACE", value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    shutdown_grace: Option<Duration>,
    /// text or json; the filter comes from RUST_LOG [default: text]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Refresh a hot entry in the background in the last PERCENT of its TTL; 0% = off [default: 20%]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_REFRESH_AHEAD", value_name = "PERCENT", value_parser = parse_percent, allow_hyphen_values = true)]
    refresh_ahead: Option<u8>,
    /// Largest request head (request line and headers); past it: 431 [default: 64KiB]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_MAX_HEADER_SIZE", value_name = "BYTES", value_parser = parse_size, allow_hyphen_values = true)]
    max_header_size: Option<u64>,
    /// Most request headers; past it: 431 [default: 100]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_MAX_HEADERS", value_name = "N")]
    max_headers: Option<usize>,
    /// Largest request body passed through; past it: 413 [default: 16MiB]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_MAX_REQUEST_BODY", value_name = "BYTES", value_parser = parse_size, allow_hyphen_values = true)]
    max_request_body: Option<u64>,
    /// Concurrent client connections; past it: 503 and close [default: 10000]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Concurrent upstream requests; past it: 503 with Retry-After [default: 512]
    #[arg(
        long,
        env = "BAREMETAL_IMAGE_CACHE_MAX_UPSTREAM_REQUESTS",
        value_name = "N"
    )]
    max_upstream_requests: Option<usize>,
    /// A request head must arrive within this; also the HTTP/1 idle keep-alive timeout [default: 10s]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_HEADER_READ_TIMEOUT", value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    header_read_timeout: Option<Duration>,
    /// Longest pause in a request body; past it: 408, and the upstream exchange is cut [default: 10s]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_REQUEST_BODY_TIMEOUT", value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    request_body_timeout: Option<Duration>,
    /// Retries of a GET whose upstream connection failed, with jittered backoff [default: 2]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_UPSTREAM_RETRIES", value_name = "N")]
    upstream_retries: Option<u32>,
    /// Shared second tier: a redis:// or rediss:// URL, or comma-separated cluster seed URLs [default: off]
    #[arg(
        long,
        env = "BAREMETAL_IMAGE_CACHE_REDIS",
        value_name = "URL[,URL...]",
        hide_env_values = true
    )]
    redis: Option<String>,
    /// Treat a single --redis URL as a Redis Cluster seed node
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_REDIS_CLUSTER", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    redis_cluster: Option<bool>,
    /// Key (32+ characters, the same on every instance) that lets instances share who may read an image; pass it by environment or file [default: none]
    #[arg(
        long,
        env = "BAREMETAL_IMAGE_CACHE_REDIS_GRANT_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    redis_grant_key: Option<String>,
    /// Deadline of each Redis command; past it the tier is skipped for that request [default: 250ms]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_REDIS_TIMEOUT", value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    redis_timeout: Option<Duration>,
    /// Fleet fill lease: how long other instances wait for one instance's fetch [default: 3s]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_REDIS_LEASE", value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    redis_lease: Option<Duration>,
    /// Prefix of every Redis key and channel [default: baremetal-image-cache:]
    #[arg(
        long,
        env = "BAREMETAL_IMAGE_CACHE_REDIS_PREFIX",
        value_name = "PREFIX"
    )]
    redis_prefix: Option<String>,
    /// PEM certificate authorities for rediss:// servers, instead of the system's roots [default: system roots]
    #[arg(long, env = "BAREMETAL_IMAGE_CACHE_REDIS_CA_FILE", value_name = "FILE")]
    redis_ca_file: Option<PathBuf>,
    /// PEM client certificate for rediss:// servers that check clients; needs --redis-key-file
    #[arg(
        long,
        env = "BAREMETAL_IMAGE_CACHE_REDIS_CERT_FILE",
        value_name = "FILE"
    )]
    redis_cert_file: Option<PathBuf>,
    /// PEM private key of --redis-cert-file
    #[arg(
        long,
        env = "BAREMETAL_IMAGE_CACHE_REDIS_KEY_FILE",
        value_name = "FILE"
    )]
    redis_key_file: Option<PathBuf>,
}

impl Cli {
    /// Parses the command line (and environment). `--help` never shows an environment
    /// variable's value: any of them may hold a secret.
    fn parse_args<I, T>(args: I) -> Result<Cli, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command()
            .mut_args(|arg| arg.hide_env_values(true))
            .try_get_matches_from(args)
            .map_err(ConfigError::Cli)?;
        Cli::from_arg_matches(&matches).map_err(ConfigError::Cli)
    }
}

/// The configuration file: the same keys as the flags, without `--`. Values are kept raw so
/// that they go through the same parsers as flags and errors can name the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<String>,
    admin_listen: Option<String>,
    upstream: Option<String>,
    ttl: Option<String>,
    stale_if_error: Option<String>,
    negative_ttl: Option<String>,
    max_capacity: Option<SizeValue>,
    max_entry_size: Option<SizeValue>,
    auth_mode: Option<AuthMode>,
    upstream_timeout: Option<String>,
    connect_timeout: Option<String>,
    max_waiters_per_key: Option<usize>,
    max_waiters: Option<usize>,
    shutdown_grace: Option<String>,
    log_format: Option<LogFormat>,
    refresh_ahead: Option<String>,
    max_header_size: Option<SizeValue>,
    max_headers: Option<usize>,
    max_request_body: Option<SizeValue>,
    max_connections: Option<usize>,
    max_upstream_requests: Option<usize>,
    header_read_timeout: Option<String>,
    request_body_timeout: Option<String>,
    upstream_retries: Option<u32>,
    /// May carry a password: read as any value, so that a wrong type is refused without
    /// the value being quoted back (see [`secret_text`]).
    redis: Option<toml::Value>,
    redis_cluster: Option<bool>,
    redis_grant_key: Option<toml::Value>,
    redis_timeout: Option<String>,
    redis_lease: Option<String>,
    redis_prefix: Option<String>,
    redis_ca_file: Option<PathBuf>,
    redis_cert_file: Option<PathBuf>,
    redis_key_file: Option<PathBuf>,
}

/// Sizes may be written as a string ("8MiB") or a plain integer of bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(i64),
    Text(String),
}

/// The flag names the file and the environment accept; an environment variable with our
/// prefix that is not one of them is a typo and stops start-up.
const KEYS: &[&str] = &[
    "config",
    "listen",
    "admin-listen",
    "upstream",
    "ttl",
    "stale-if-error",
    "negative-ttl",
    "max-capacity",
    "max-entry-size",
    "auth-mode",
    "upstream-timeout",
    "connect-timeout",
    "max-waiters-per-key",
    "max-waiters",
    "shutdown-grace",
    "log-format",
    "refresh-ahead",
    "max-header-size",
    "max-headers",
    "max-request-body",
    "max-connections",
    "max-upstream-requests",
    "header-read-timeout",
    "request-body-timeout",
    "upstream-retries",
    "redis",
    "redis-cluster",
    "redis-grant-key",
    "redis-timeout",
    "redis-lease",
    "redis-prefix",
    "redis-ca-file",
    "redis-cert-file",
    "redis-key-file",
];

fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('-', "_").to_ascii_uppercase())
}

impl Config {
    /// Loads the configuration from these arguments (the first is the program name), the
    /// process environment and the file that `--config` names.
    pub fn load<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        check_environment(std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()))?;
        let cli = Cli::parse_args(args)?;
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        merge(cli, file)
    }
}

impl Config {
    /// The configuration a TOML file alone gives (no flags, no environment): what the file
    /// parser accepts, for tools and fuzzing.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Invalid(format!("config file: {}", toml_error(text, &e))))?;
        let cli = Cli::parse_args(["baremetal-image-cache"])?;
        merge(cli, file)
    }
}

fn check_environment(names: impl Iterator<Item = String>) -> Result<(), ConfigError> {
    let known: BTreeSet<String> = KEYS.iter().map(|k| env_name(k)).collect();
    for name in names {
        if name.starts_with(ENV_PREFIX) && !known.contains(&name) {
            return Err(ConfigError::Invalid(format!(
                "environment variable {name} is not a setting of baremetal-image-cache (known: {})",
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::Invalid(format!(
            "config file {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        ConfigError::Invalid(format!(
            "config file {}: {}",
            path.display(),
            toml_error(&text, &e)
        ))
    })
}

/// A TOML error as its message and line, without the excerpt of the file that `toml` would
/// quote: that line may hold a secret (`redis-grant-key`, a password in `redis`).
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(0, |before| before.matches('\n').count())
                + 1;
            format!("line {line}: {message}")
        }
        None => message.to_string(),
    }
}

/// Takes the flag/env value if there is one, else parses the file's value for `key`.
fn pick<T>(
    flag: Option<T>,
    file_value: Option<String>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    if flag.is_some() {
        return Ok(flag);
    }
    match file_value {
        None => Ok(None),
        Some(raw) => parse(&raw)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("config file: key `{key}`: {e}"))),
    }
}

fn file_size(value: Option<SizeValue>, key: &str) -> Result<Option<u64>, ConfigError> {
    match value {
        None => Ok(None),
        Some(SizeValue::Bytes(n)) => u64::try_from(n).map(Some).map_err(|_| {
            ConfigError::Invalid(format!("config file: key `{key}`: {n} is negative"))
        }),
        Some(SizeValue::Text(raw)) => parse_size(&raw)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("config file: key `{key}`: {e}"))),
    }
}

/// The text of a file setting that may hold a secret; a value of another type is refused
/// without being quoted, as `toml`'s own message would.
fn secret_text(value: Option<toml::Value>, key: &str) -> Result<Option<String>, ConfigError> {
    match value {
        None => Ok(None),
        Some(toml::Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(ConfigError::Invalid(format!(
            "config file: key `{key}`: must be a string, not {} (the value is not shown: it may be a secret)",
            other.type_str()
        ))),
    }
}

fn invalid_setting(key: &str, why: String) -> ConfigError {
    ConfigError::Invalid(format!("{key}: {why}"))
}

/// One `redis://` or `rediss://` URL, or several separated by commas (cluster seeds).
fn parse_redis_urls(raw: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err("give a redis:// or rediss:// URL".to_string());
    }
    for url in &urls {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!(
                "{:?} is not a redis:// or rediss:// URL",
                redacted_url(url)
            ));
        }
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
            return Err(format!(
                "{:?} is not a Redis URL ({:?})",
                redacted_url(url),
                e.kind()
            ));
        }
    }
    Ok(urls)
}

fn parse_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.trim()
        .parse()
        .map_err(|e| format!("{raw:?} is not an address like 127.0.0.1:8080 ({e})"))
}

fn merge(cli: Cli, file: FileConfig) -> Result<Config, ConfigError> {
    let d = Config::default();
    // Each setting: the flag or environment value, else the file's (parsed here, so that an
    // error names its key), else the default.
    let duration = |flag, value, key, default| -> Result<Duration, ConfigError> {
        Ok(pick(flag, value, key, parse_duration)?.unwrap_or(default))
    };
    let size = |flag: Option<u64>, value, key, default| -> Result<u64, ConfigError> {
        match flag {
            Some(v) => Ok(v),
            None => Ok(file_size(value, key)?.unwrap_or(default)),
        }
    };
    let config = Config {
        listen: pick(cli.listen, file.listen, "listen", parse_addr)?.unwrap_or(d.listen),
        admin_listen: pick(
            cli.admin_listen,
            file.admin_listen,
            "admin-listen",
            parse_addr,
        )?
        .unwrap_or(d.admin_listen),
        upstream: match (cli.upstream, file.upstream) {
            (Some(raw), _) => parse_upstream(&raw).map_err(|e| invalid_setting("--upstream", e))?,
            (None, Some(raw)) => parse_upstream(&raw)
                .map_err(|e| ConfigError::Invalid(format!("config file: key `upstream`: {e}")))?,
            (None, None) => d.upstream,
        },
        ttl: duration(cli.ttl, file.ttl, "ttl", d.ttl)?,
        stale_if_error: duration(
            cli.stale_if_error,
            file.stale_if_error,
            "stale-if-error",
            d.stale_if_error,
        )?,
        negative_ttl: duration(
            cli.negative_ttl,
            file.negative_ttl,
            "negative-ttl",
            d.negative_ttl,
        )?,
        max_capacity: size(
            cli.max_capacity,
            file.max_capacity,
            "max-capacity",
            d.max_capacity,
        )?,
        max_entry_size: size(
            cli.max_entry_size,
            file.max_entry_size,
            "max-entry-size",
            d.max_entry_size,
        )?,
        auth_mode: cli.auth_mode.or(file.auth_mode).unwrap_or(d.auth_mode),
        upstream_timeout: duration(
            cli.upstream_timeout,
            file.upstream_timeout,
            "upstream-timeout",
            d.upstream_timeout,
        )?,
        connect_timeout: duration(
            cli.connect_timeout,
            file.connect_timeout,
            "connect-timeout",
            d.connect_timeout,
        )?,
        max_waiters_per_key: cli
            .max_waiters_per_key
            .or(file.max_waiters_per_key)
            .unwrap_or(d.max_waiters_per_key),
        max_waiters: cli
            .max_waiters
            .or(file.max_waiters)
            .unwrap_or(d.max_waiters),
        shutdown_grace: duration(
            cli.shutdown_grace,
            file.shutdown_grace,
            "shutdown-grace",
            d.shutdown_grace,
        )?,
        log_format: cli.log_format.or(file.log_format).unwrap_or(d.log_format),
        refresh_ahead: pick(
            cli.refresh_ahead,
            file.refresh_ahead,
            "refresh-ahead",
            parse_percent,
        )?
        .unwrap_or(d.refresh_ahead),
        max_header_size: size(
            cli.max_header_size,
            file.max_header_size,
            "max-header-size",
            d.max_header_size,
        )?,
        max_headers: cli
            .max_headers
            .or(file.max_headers)
            .unwrap_or(d.max_headers),
        max_request_body: size(
            cli.max_request_body,
            file.max_request_body,
            "max-request-body",
            d.max_request_body,
        )?,
        max_connections: cli
            .max_connections
            .or(file.max_connections)
            .unwrap_or(d.max_connections),
        max_upstream_requests: cli
            .max_upstream_requests
            .or(file.max_upstream_requests)
            .unwrap_or(d.max_upstream_requests),
        header_read_timeout: duration(
            cli.header_read_timeout,
            file.header_read_timeout,
            "header-read-timeout",
            d.header_read_timeout,
        )?,
        request_body_timeout: duration(
            cli.request_body_timeout,
            file.request_body_timeout,
            "request-body-timeout",
            d.request_body_timeout,
        )?,
        upstream_retries: cli
            .upstream_retries
            .or(file.upstream_retries)
            .unwrap_or(d.upstream_retries),
        redis: match cli.redis.or(secret_text(file.redis, "redis")?) {
            None => None,
            Some(raw) => Some(RedisConfig {
                urls: parse_redis_urls(&raw).map_err(|e| invalid_setting("redis", e))?,
                cluster: cli.redis_cluster.or(file.redis_cluster).unwrap_or(false),
                grant_key: cli
                    .redis_grant_key
                    .or(secret_text(file.redis_grant_key, "redis-grant-key")?)
                    .map(Secret),
                timeout: duration(
                    cli.redis_timeout,
                    file.redis_timeout,
                    "redis-timeout",
                    Duration::from_millis(250),
                )?,
                lease: duration(
                    cli.redis_lease,
                    file.redis_lease,
                    "redis-lease",
                    Duration::from_secs(3),
                )?,
                prefix: cli
                    .redis_prefix
                    .or(file.redis_prefix)
                    .unwrap_or_else(|| "baremetal-image-cache:".to_string()),
                ca_file: cli.redis_ca_file.or(file.redis_ca_file),
                client_cert: match (
                    cli.redis_cert_file.or(file.redis_cert_file),
                    cli.redis_key_file.or(file.redis_key_file),
                ) {
                    (None, None) => None,
                    (Some(cert), Some(key)) => Some((cert, key)),
                    (Some(_), None) | (None, Some(_)) => {
                        return Err(ConfigError::Invalid(
                            "redis-cert-file and redis-key-file: give both or neither".into(),
                        ))
                    }
                },
            }),
        },
    };
    config.validate()?;
    Ok(config)
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
/// Longest `--ttl`, `--negative-ttl` and `--stale-if-error`. Entries hold their freshness in
/// 32-bit milliseconds (49 days), and an image answer trusted for longer than a month is a
/// mistake anyway.
const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// An inclusive range a value must fall in, for the message that names it.
struct Bound<T> {
    key: &'static str,
    value: T,
    min: T,
    max: T,
}

impl Config {
    /// Rejects values that parse but cannot work. Every duration, size and count has an
    /// upper bound, so that no setting can overflow a deadline or an allocation later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        let positive = Duration::from_millis(1);
        let mut durations = vec![
            Bound {
                key: "ttl",
                value: self.ttl,
                min: positive,
                max: MONTH,
            },
            Bound {
                key: "stale-if-error",
                value: self.stale_if_error,
                min: Duration::ZERO,
                max: MONTH,
            },
            Bound {
                key: "negative-ttl",
                value: self.negative_ttl,
                min: Duration::ZERO,
                max: MONTH,
            },
            Bound {
                key: "upstream-timeout",
                value: self.upstream_timeout,
                min: positive,
                max: HOUR,
            },
            Bound {
                key: "connect-timeout",
                value: self.connect_timeout,
                min: positive,
                max: 10 * MINUTE,
            },
            Bound {
                key: "shutdown-grace",
                value: self.shutdown_grace,
                min: Duration::ZERO,
                max: HOUR,
            },
            Bound {
                key: "header-read-timeout",
                value: self.header_read_timeout,
                min: positive,
                max: HOUR,
            },
        ];
        if let Some(redis) = &self.redis {
            durations.push(Bound {
                key: "redis-timeout",
                value: redis.timeout,
                min: positive,
                max: MINUTE,
            });
            durations.push(Bound {
                key: "redis-lease",
                value: redis.lease,
                min: positive,
                max: HOUR,
            });
        }
        for bound in durations {
            if bound.value < bound.min || bound.value > bound.max {
                let shown = |d: Duration| humantime::format_duration(d).to_string();
                let why = if bound.min.is_zero() {
                    format!("must be at most {}", shown(bound.max))
                } else {
                    format!("must be more than 0s and at most {}", shown(bound.max))
                };
                return invalid(bound.key, &why);
            }
        }
        let sizes = [
            Bound {
                key: "max-capacity",
                value: self.max_capacity,
                min: 1,
                max: 1024 * GIB,
            },
            Bound {
                key: "max-entry-size",
                value: self.max_entry_size,
                min: 1,
                max: 64 * MIB,
            },
            // hyper needs room for at least one read buffer of 8 KiB.
            Bound {
                key: "max-header-size",
                value: self.max_header_size,
                min: 8 * KIB,
                max: MIB,
            },
            Bound {
                key: "max-request-body",
                value: self.max_request_body,
                min: 0,
                max: GIB,
            },
        ];
        for bound in sizes {
            if bound.value < bound.min || bound.value > bound.max {
                let shown = |n: u64| bytesize::ByteSize(n).to_string();
                return invalid(
                    bound.key,
                    &format!("must be from {} to {}", shown(bound.min), shown(bound.max)),
                );
            }
        }
        let counts = [
            Bound {
                key: "max-waiters-per-key",
                value: self.max_waiters_per_key,
                min: 1,
                max: 1_000_000,
            },
            Bound {
                key: "max-waiters",
                value: self.max_waiters,
                min: 1,
                max: 10_000_000,
            },
            Bound {
                key: "max-headers",
                value: self.max_headers,
                min: 1,
                max: 1000,
            },
            Bound {
                key: "max-connections",
                value: self.max_connections,
                min: 1,
                max: 1_000_000,
            },
            Bound {
                key: "max-upstream-requests",
                value: self.max_upstream_requests,
                min: 1,
                max: 100_000,
            },
            Bound {
                key: "upstream-retries",
                value: self.upstream_retries as usize,
                min: 0,
                max: 10,
            },
        ];
        for bound in counts {
            if bound.value < bound.min || bound.value > bound.max {
                return invalid(
                    bound.key,
                    &format!("must be from {} to {}", bound.min, bound.max),
                );
            }
        }
        if self.max_entry_size > self.max_capacity {
            return invalid("max-entry-size", "must not be larger than max-capacity");
        }
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        Ok(())
    }
}

impl RedisConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.prefix.contains(['{', '}']) {
            return invalid(
                "redis-prefix",
                "must not contain { or } (they would change the cluster hash tag)",
            );
        }
        if self.prefix.len() > 256 {
            return invalid("redis-prefix", "must be at most 256 characters");
        }
        if self
            .grant_key
            .as_ref()
            .is_some_and(|k| k.expose().len() < MIN_GRANT_KEY_LEN)
        {
            return invalid("redis-grant-key", "must be at least 32 characters");
        }
        if self.client_cert.is_some() && !self.urls.iter().all(|u| u.starts_with("rediss://")) {
            return invalid("redis-cert-file", "is only for rediss:// URLs");
        }
        const CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";
        let (cert, key) = self.client_cert.as_ref().map(|(c, k)| (c, k)).unzip();
        // What the files hold is never quoted: one of them is a secret.
        for (name, path, marker, what) in [
            (
                "redis-ca-file",
                self.ca_file.as_ref(),
                CERTIFICATE,
                "certificate",
            ),
            ("redis-cert-file", cert, CERTIFICATE, "certificate"),
            (
                "redis-key-file",
                key,
                &b"PRIVATE KEY-----"[..],
                "private key",
            ),
        ] {
            let Some(path) = path else { continue };
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError::Invalid(format!("{name}: cannot read {}: {e}", path.display()))
            })?;
            if !pem.windows(marker.len()).any(|w| w == marker) {
                return invalid(name, &format!("holds no PEM {what}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["baremetal-image-cache"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all) {
            Ok(cli) => cli,
            Err(e) => panic!("{e}"),
        }
    }

    fn file(text: &str) -> FileConfig {
        match toml::from_str(text) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = match merge(cli(&[]), FileConfig::default()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
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
        assert_eq!(c.auth_mode, AuthMode::PerCredential);
        assert_eq!(c.upstream_timeout, Duration::from_secs(10));
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn flags_win_over_the_file() {
        let c = merge(
            cli(&["--ttl", "5s", "--max-capacity", "8MiB"]),
            file(
                "ttl = \"30s\"\nnegative-ttl = \"2s\"\nmax-capacity = 1024\nauth-mode = \"shared\"",
            ),
        );
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.ttl, Duration::from_secs(5));
        assert_eq!(c.negative_ttl, Duration::from_secs(2));
        assert_eq!(c.max_capacity, 8 * 1024 * 1024);
        assert_eq!(c.auth_mode, AuthMode::Shared);
    }

    #[test]
    fn bad_file_values_name_their_key() {
        for (text, key) in [
            ("ttl = \"soon\"", "`ttl`"),
            ("max-capacity = \"-5MiB\"", "`max-capacity`"),
            ("max-capacity = -5", "`max-capacity`"),
            ("upstream = \"ftp://x\"", "`upstream`"),
        ] {
            match merge(cli(&[]), file(text)) {
                Err(ConfigError::Invalid(msg)) => assert!(msg.contains(key), "{msg}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_file_key_is_refused() {
        let err = toml::from_str::<FileConfig>("ttll = \"5s\"")
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("ttll"), "{err}");
    }

    #[test]
    fn unknown_environment_variable_is_refused() {
        let names = ["PATH".to_string(), "BAREMETAL_IMAGE_CACHE_TTLL".to_string()];
        match check_environment(names.into_iter()) {
            Err(ConfigError::Invalid(msg)) => assert!(msg.contains("BAREMETAL_IMAGE_CACHE_TTLL")),
            other => panic!("{other:?}"),
        }
        let ok = [env_name("stale-if-error"), env_name("config")];
        assert!(check_environment(ok.into_iter()).is_ok());
    }

    #[test]
    fn upstream_urls() {
        let u = match UpstreamUrl::parse("http://127.0.0.1:9000/api/") {
            Ok(u) => u,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(u.path_prefix, "/api");
        assert!(UpstreamUrl::parse("127.0.0.1:9000").is_err());
        assert!(UpstreamUrl::parse("http://user:pw@host").is_err());
    }

    #[test]
    fn a_toml_syntax_error_does_not_quote_the_line() {
        let text = "ttl = \"5s\"\nredis-grant-key = \"hunter2hunter2hunter2hunter2hunter2";
        let Err(ConfigError::Invalid(message)) = Config::from_toml(text) else {
            panic!("an unterminated string is an error");
        };
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn redis_settings_parse_and_never_show_secrets() {
        let c = merge(
            cli(&[
                "--redis",
                "redis://:pw-one@10.0.0.1:6379, rediss://u:pw-two@10.0.0.2:6380",
                "--redis-grant-key",
                "0123456789abcdef0123456789abcdef-key",
            ]),
            file("redis-timeout = \"100ms\"\nredis-prefix = \"fleet-a:\""),
        )
        .unwrap();
        let redis = c.redis.clone().unwrap();
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
        assert_eq!(merge(cli(&[]), file("")).unwrap().redis, None);
    }
}
