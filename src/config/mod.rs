//! Configuration: command-line flags, `BAREMETAL_IMAGE_CACHE_*` environment variables and a
//! TOML file, merged into one validated [`Config`] that the rest of the proxy only reads.
//!
//! # One table
//!
//! Every setting is one row of [`settings::SETTINGS`]: its key, value name, default (as
//! text), help line, kind with its range, whether it is a secret and whether it could
//! change while running. The flag (`--stale-if-error`), the variable
//! (`BAREMETAL_IMAGE_CACHE_STALE_IF_ERROR`), the TOML key (`stale-if-error`), `--help` and
//! the range checks all come from that row; `tests.rs` proves that `--help`, the example
//! file, the README's table and [`Config`] agree with it.
//!
//! # How a value is resolved
//!
//! 1. `cli.rs` splits the arguments (clap, built from the table) into text by key;
//!    `env.rs` does the same for the variables, refusing one with our prefix that is no
//!    setting; `file.rs` reads the file that `config` names, keeping each value's line.
//! 2. `sources.rs`: for each key the flag wins, then the variable, then the file, then the
//!    table's default, and the [`Origin`](sources::Origin) of the winner is kept.
//! 3. `parse.rs` turns the text into a value with the kind's parser (the same for every
//!    source, defaults included) and the value is held against the kind's range; an error
//!    names the origin: `--ttl`, `BAREMETAL_IMAGE_CACHE_TTL`, or
//!    ``config file /etc/x.toml line 3: key `ttl` ``.
//! 4. `build` below puts each value in its field; `validate.rs` then checks what ties
//!    settings together (max-entry-size ≤ max-capacity, the Redis PEM files, ...), and a
//!    problem again names where the value came from.
//!
//! No error quotes the value of a secret setting (`redis`, `redis-grant-key`), and every
//! configuration error ends the binary with exit code 2.

mod cli;
mod effective;
mod env;
mod file;
mod parse;
mod reconcile;
mod settings;
mod sources;
mod validate;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use serde::Deserialize;

pub use effective::Effective;
pub use reconcile::Reconciled;
pub use settings::{Change, Kind, Setting, SETTINGS};

use sources::{Resolver, Sources};

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
    /// The file `admin_token` was read from (read again on reload).
    pub admin_token_file: Option<PathBuf>,
    /// The bearer token purges need; without one only loopback clients may purge.
    pub admin_token: Option<Secret>,
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
    /// The log filter (`RUST_LOG` syntax); `None`: `RUST_LOG`, else `info`.
    pub log_filter: Option<String>,
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

/// Why the configuration could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// A command line clap refused (an unknown or repeated flag), and also `--help` and
    /// `--version`, which clap prints and exits 0 for.
    Cli(clap::Error),
    /// Anything else: the message names where the value came from (the flag, the
    /// variable, or the file, line and key) or the path, never a secret's value.
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

/// A configuration as loaded, with what the command line asked for and how to show it.
pub struct Loaded {
    pub config: Config,
    /// Every setting's value and where it came from, secrets redacted.
    pub effective: Effective,
    /// `--check-config`: show the configuration and exit rather than run.
    pub check_only: bool,
}

impl Config {
    /// Loads the configuration from these arguments (the first is the program name), the
    /// process environment and the file that `--config` names.
    pub fn load<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Config::load_all(args).map(|loaded| loaded.config)
    }

    /// [`Config::load`], with the effective values and `--check-config`.
    pub fn load_all<I, T>(args: I) -> Result<Loaded, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        load_from(args, std::env::vars_os())
    }

    /// The configuration a TOML file alone gives (no flags, no environment): what the file
    /// parser accepts, for tools and fuzzing.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let sources = Sources {
            file: Some(file::File::parse(None, text)?),
            ..Sources::default()
        };
        resolve(&mut Resolver::new(sources))
    }
}

/// [`Config::load`] with the environment given, so that tests need not change the
/// process's own.
fn load_from<I, T>(
    args: I,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command_line = cli::parse(args)?;
    let sources = Sources {
        flags: command_line.values,
        env: env::read(vars)?,
        file: None,
    };
    let mut resolver = Resolver::new(sources);
    resolver.read_file()?;
    let config = resolve(&mut resolver)?;
    Ok(Loaded {
        config,
        effective: Effective::new(resolver.resolved()),
        check_only: command_line.check_only,
    })
}

fn resolve(resolver: &mut Resolver) -> Result<Config, ConfigError> {
    let config = build(resolver)?;
    config.check().map_err(|p| resolver.problem(p))?;
    Ok(config)
}

impl Default for Config {
    /// The table's defaults. `tests::the_defaults_are_valid_and_documented` builds this
    /// same configuration, so the `expect` cannot fire.
    fn default() -> Self {
        build(&mut Resolver::new(Sources::default()))
            .expect("the table's defaults are valid (tested)")
    }
}

/// Puts each setting's value in its field.
fn build(r: &mut Resolver) -> Result<Config, ConfigError> {
    // The Redis settings are read even without `redis`, so that a bad one is refused
    // rather than ignored until the day `redis` is set.
    let urls = r.redis_urls("redis")?;
    let cluster = r.flag("redis-cluster")?;
    let grant_key = r.text("redis-grant-key")?.map(Secret);
    let timeout = r.duration("redis-timeout")?;
    let lease = r.duration("redis-lease")?;
    let prefix = r.text("redis-prefix")?.unwrap_or_default();
    let ca_file = r.path("redis-ca-file")?;
    let cert = r.path("redis-cert-file")?;
    let key = r.path("redis-key-file")?;
    let redis = match urls {
        None => None,
        Some(urls) => Some(RedisConfig {
            urls,
            cluster,
            grant_key,
            timeout,
            lease,
            prefix,
            ca_file,
            client_cert: validate::client_cert(cert, key).map_err(|p| r.problem(p))?,
        }),
    };
    let admin_token_file = r.path("admin-token-file")?;
    let admin_token = match &admin_token_file {
        Some(path) => Some(validate::admin_token(path).map_err(|p| r.problem(p))?),
        None => None,
    };
    Ok(Config {
        listen: r.addr("listen")?,
        admin_listen: r.addr("admin-listen")?,
        admin_token_file,
        admin_token,
        upstream: r.upstream("upstream")?,
        ttl: r.duration("ttl")?,
        stale_if_error: r.duration("stale-if-error")?,
        negative_ttl: r.duration("negative-ttl")?,
        max_capacity: r.bytes("max-capacity")?,
        max_entry_size: r.bytes("max-entry-size")?,
        auth_mode: r.choice("auth-mode")?,
        upstream_timeout: r.duration("upstream-timeout")?,
        connect_timeout: r.duration("connect-timeout")?,
        max_waiters_per_key: r.count("max-waiters-per-key")?,
        max_waiters: r.count("max-waiters")?,
        shutdown_grace: r.duration("shutdown-grace")?,
        log_format: r.choice("log-format")?,
        log_filter: r.text("log-filter")?,
        refresh_ahead: r.percent("refresh-ahead")?,
        max_header_size: r.bytes("max-header-size")?,
        max_headers: r.count("max-headers")?,
        max_request_body: r.bytes("max-request-body")?,
        max_connections: r.count("max-connections")?,
        max_upstream_requests: r.count("max-upstream-requests")?,
        header_read_timeout: r.duration("header-read-timeout")?,
        request_body_timeout: r.duration("request-body-timeout")?,
        upstream_retries: r.count("upstream-retries")?,
        redis,
    })
}
