//! Ranges and checks. The table's ranges are written and held against values here (one
//! rendering for `--help`, the README and the messages); a whole [`Config`] is checked
//! here: every field against its setting's range, and the rules that tie settings
//! together or look outside (files on disk).
//!
//! Loading already held each value against its range, naming where it came from; the
//! range checks of [`Config::validate`] are for a `Config` built in code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::parse::{show_count, show_duration, show_size};
use super::settings::{setting, Kind};
use super::{Config, ConfigError, RedisConfig, Secret};

/// A value to hold against a setting's range.
#[derive(Clone, Copy, Debug)]
pub(super) enum Measure {
    Duration(Duration),
    Bytes(u64),
    Count(u64),
    Percent(u8),
    Chars(usize),
}

impl Measure {
    /// The value as an error may show it: numbers only, never a text's content.
    pub(super) fn shown(self) -> Option<String> {
        match self {
            Measure::Duration(d) => Some(show_duration(d)),
            Measure::Bytes(n) => Some(show_size(n)),
            Measure::Count(n) => Some(show_count(n)),
            Measure::Percent(p) => Some(format!("{p}%")),
            Measure::Chars(_) => None,
        }
    }
}

impl Kind {
    /// The range as the README's table and `--help` write it; `None` if any value goes.
    pub fn range_text(&self) -> Option<String> {
        match *self {
            Kind::Duration { min, max } => {
                Some(format!("{}–{}", show_duration(min), show_duration(max)))
            }
            Kind::Size { min, max } => Some(format!("{}–{}", show_size(min), show_size(max))),
            Kind::Count { min, max } => Some(format!("{}–{}", show_count(min), show_count(max))),
            Kind::Percent { max } => Some(format!("0%–{max}%")),
            Kind::Text { min: 0, max: None } => None,
            Kind::Text { min, max: None } => Some(format!("{min}+ characters")),
            Kind::Text {
                min: 0,
                max: Some(max),
            } => Some(format!("≤ {max} characters")),
            Kind::Text {
                min,
                max: Some(max),
            } => Some(format!("{min} to {max} characters")),
            Kind::Addr
            | Kind::Upstream
            | Kind::RedisUrls
            | Kind::Choice(_)
            | Kind::Flag
            | Kind::Path => None,
        }
    }

    /// Holds a value against the range. The message says what the range is, not what the
    /// value was: the caller shows that as it was written, if it may be shown at all.
    pub(super) fn check(&self, value: Measure) -> Result<(), String> {
        let bounds = |min: String, max: String, min_is_zero: bool| {
            if min_is_zero {
                Err(format!("must be at most {max}"))
            } else {
                Err(format!("must be from {min} to {max}"))
            }
        };
        match (self, value) {
            (&Kind::Duration { min, max }, Measure::Duration(d)) if d < min || d > max => {
                bounds(show_duration(min), show_duration(max), min.is_zero())
            }
            (&Kind::Size { min, max }, Measure::Bytes(n)) if n < min || n > max => {
                bounds(show_size(min), show_size(max), min == 0)
            }
            (&Kind::Count { min, max }, Measure::Count(n)) if n < min || n > max => {
                bounds(show_count(min), show_count(max), min == 0)
            }
            (&Kind::Percent { max }, Measure::Percent(p)) if p > max => {
                Err(format!("must be from 0% to {max}%"))
            }
            (&Kind::Text { min, max }, Measure::Chars(n)) => match max {
                _ if n < min => Err(format!("must be at least {min} characters")),
                Some(max) if n > max => Err(format!("must be at most {max} characters")),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// What is wrong, and with which setting. [`Config::validate`] names the key; loading
/// names where the key's value came from.
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) key: &'static str,
    pub(super) why: String,
}

fn problem(key: &'static str, why: impl Into<String>) -> Result<(), Problem> {
    Err(Problem {
        key,
        why: why.into(),
    })
}

impl Config {
    /// Rejects values that parse but cannot work. Every duration, size and count has an
    /// upper bound, so that no setting can overflow a deadline or an allocation later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check()
            .map_err(|p| ConfigError::Invalid(format!("{}: {}", p.key, p.why)))
    }

    pub(super) fn check(&self) -> Result<(), Problem> {
        for (key, measure) in self.measures() {
            if let Some(setting) = setting(key) {
                setting.kind.check(measure).map_err(|why| Problem {
                    key,
                    why: match measure.shown() {
                        Some(shown) => format!("{why}, not {shown}"),
                        None => why,
                    },
                })?;
            }
        }
        if self.max_entry_size > self.max_capacity {
            return problem(
                "max-entry-size",
                format!(
                    "must not be larger than max-capacity ({})",
                    show_size(self.max_capacity)
                ),
            );
        }
        if let Some(redis) = &self.redis {
            redis.check()?;
        }
        if let Some(filter) = &self.log_filter {
            log_filter(filter)?;
        }
        Ok(())
    }

    /// Each field that has a range, by its key. (The Redis ones only with a Redis tier.)
    pub(super) fn measures(&self) -> Vec<(&'static str, Measure)> {
        let count = |n: usize| Measure::Count(n as u64);
        let mut measures = vec![
            ("ttl", Measure::Duration(self.ttl)),
            ("stale-if-error", Measure::Duration(self.stale_if_error)),
            ("negative-ttl", Measure::Duration(self.negative_ttl)),
            ("max-capacity", Measure::Bytes(self.max_capacity)),
            ("max-entry-size", Measure::Bytes(self.max_entry_size)),
            ("upstream-timeout", Measure::Duration(self.upstream_timeout)),
            ("connect-timeout", Measure::Duration(self.connect_timeout)),
            ("max-waiters-per-key", count(self.max_waiters_per_key)),
            ("max-waiters", count(self.max_waiters)),
            ("shutdown-grace", Measure::Duration(self.shutdown_grace)),
            ("refresh-ahead", Measure::Percent(self.refresh_ahead)),
            ("max-header-size", Measure::Bytes(self.max_header_size)),
            ("max-headers", count(self.max_headers)),
            ("max-request-body", Measure::Bytes(self.max_request_body)),
            (
                "request-body-timeout",
                Measure::Duration(self.request_body_timeout),
            ),
            ("max-connections", count(self.max_connections)),
            ("max-upstream-requests", count(self.max_upstream_requests)),
            (
                "header-read-timeout",
                Measure::Duration(self.header_read_timeout),
            ),
            (
                "upstream-retries",
                Measure::Count(u64::from(self.upstream_retries)),
            ),
        ];
        if let Some(filter) = &self.log_filter {
            measures.push(("log-filter", Measure::Chars(filter.chars().count())));
        }
        if let Some(redis) = &self.redis {
            measures.push(("redis-timeout", Measure::Duration(redis.timeout)));
            measures.push(("redis-lease", Measure::Duration(redis.lease)));
            measures.push(("redis-prefix", Measure::Chars(redis.prefix.chars().count())));
            if let Some(key) = &redis.grant_key {
                measures.push(("redis-grant-key", Measure::Chars(key.0.chars().count())));
            }
        }
        measures
    }
}

impl RedisConfig {
    fn check(&self) -> Result<(), Problem> {
        if self.prefix.contains(['{', '}']) {
            return problem(
                "redis-prefix",
                "must not contain { or } (they would change the cluster hash tag)",
            );
        }
        if self.client_cert.is_some() && !self.urls.iter().all(|u| u.starts_with("rediss://")) {
            return problem("redis-cert-file", "is only for rediss:// URLs");
        }
        // Parsed as the fleet tier will parse them, so that --check-config refuses what
        // start-up would; what the files hold is never quoted: one of them is a secret.
        if let Some(path) = &self.ca_file {
            let pem =
                read_small(path, MAX_PEM_FILE).map_err(|why| refusal("redis-ca-file", why))?;
            certificates(&pem, true).map_err(|why| refusal("redis-ca-file", why))?;
        }
        if let Some((cert, key)) = &self.client_cert {
            let pem =
                read_small(cert, MAX_PEM_FILE).map_err(|why| refusal("redis-cert-file", why))?;
            let chain = certificates(&pem, false).map_err(|why| refusal("redis-cert-file", why))?;
            let pem =
                read_small(key, MAX_PEM_FILE).map_err(|why| refusal("redis-key-file", why))?;
            let key = private_key(&pem).map_err(|why| refusal("redis-key-file", why))?;
            let provider = rustls::crypto::ring::default_provider();
            rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
                refusal(
                    "redis-key-file",
                    format!("does not go with the certificate of redis-cert-file: {e}"),
                )
            })?;
        }
        Ok(())
    }
}

/// Largest PEM file read: a bundle of every public root is about 200 KiB.
const MAX_PEM_FILE: u64 = 4 * 1024 * 1024;

fn refusal(key: &'static str, why: String) -> Problem {
    Problem { key, why }
}

/// The contents of a regular file of at most `max` bytes. A device or a FIFO is refused
/// rather than read: `/dev/zero` would never end, a FIFO would block a reload for good.
fn read_small(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(cannot)?;
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut text = Vec::new();
    file.take(max + 1).read_to_end(&mut text).map_err(cannot)?;
    if text.len() as u64 > max {
        return Err(format!("{} is larger than {max} bytes", path.display()));
    }
    Ok(text)
}

/// The certificates of `pem`, at least one, each parsed as a trust anchor for `anchors`.
fn certificates(
    pem: &[u8],
    anchors: bool,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| "is not a valid PEM file".to_string())?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    if anchors {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in &certificates {
            roots
                .add(certificate.clone())
                .map_err(|e| format!("holds a certificate that does not parse: {e}"))?;
        }
    }
    Ok(certificates)
}

/// The private key of `pem`.
fn private_key(pem: &[u8]) -> Result<rustls::pki_types::PrivateKeyDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| "holds no PEM private key".to_string())
}

/// Shortest admin token: a shorter one could be guessed by anyone who can reach the admin
/// listener.
const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// Longest admin token file: a token is a line, not a document.
const MAX_ADMIN_TOKEN_FILE: u64 = 4096;

/// The token in `path`: its first line, without surrounding white space (what `echo` or an
/// editor leaves), at least [`MIN_ADMIN_TOKEN_LEN`] visible ASCII characters. What the file
/// holds is never quoted.
pub(super) fn admin_token(path: &Path) -> Result<Secret, Problem> {
    let refuse = |why: String| Problem {
        key: "admin-token-file",
        why,
    };
    let text = read_small(path, MAX_ADMIN_TOKEN_FILE).map_err(refuse)?;
    let token = text.trim_ascii();
    if token.iter().any(|b| !b.is_ascii_graphic()) {
        return Err(refuse(format!(
            "{} must hold one token of visible ASCII characters (as an Authorization header \
             carries it), nothing else",
            path.display()
        )));
    }
    if token.len() < MIN_ADMIN_TOKEN_LEN {
        return Err(refuse(format!(
            "the token in {} must be at least {MIN_ADMIN_TOKEN_LEN} characters",
            path.display()
        )));
    }
    Ok(Secret(String::from_utf8_lossy(token).into_owned()))
}

/// Whether `filter` is a log filter `RUST_LOG` would take.
pub(super) fn log_filter(filter: &str) -> Result<(), Problem> {
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(drop)
        .map_err(|e| Problem {
            key: "log-filter",
            why: format!("is not a log filter: {e}"),
        })
}

/// The client certificate and its key: both or neither (`RedisConfig` holds them as a
/// pair, so this is checked before it is built).
pub(super) fn client_cert(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<(PathBuf, PathBuf)>, Problem> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (Some(_), None) => Err(Problem {
            key: "redis-cert-file",
            why: "needs redis-key-file as well: give both or neither".into(),
        }),
        (None, Some(_)) => Err(Problem {
            key: "redis-key-file",
            why: "needs redis-cert-file as well: give both or neither".into(),
        }),
    }
}
