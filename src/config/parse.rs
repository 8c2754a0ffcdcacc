//! Value parsers. A flag, a variable, a file value and a default of the table all go
//! through the same one for their kind, so they cannot disagree on what a value means.
//!
//! Messages say what was wrong without naming the setting (the caller adds where the value
//! came from). Only values of settings that cannot be secret are quoted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use http::uri::Scheme;

use super::settings::Kind;
use super::validate::Measure;
use super::UpstreamUrl;

/// A parsed value, before it is put in its field of [`Config`](super::Config). No `Debug`:
/// it may hold a secret, which only [`Config`](super::Config)'s own `Debug` knows to redact.
pub(super) enum Value {
    Duration(Duration),
    Bytes(u64),
    Count(u64),
    Percent(u8),
    Text(String),
    Addr(SocketAddr),
    Upstream(UpstreamUrl),
    RedisUrls(Vec<String>),
    Choice(&'static str),
    Flag(bool),
    Path(PathBuf),
}

impl Value {
    /// What the setting's range is held against.
    pub(super) fn measure(&self) -> Option<Measure> {
        match self {
            Value::Duration(d) => Some(Measure::Duration(*d)),
            Value::Bytes(n) => Some(Measure::Bytes(*n)),
            Value::Count(n) => Some(Measure::Count(*n)),
            Value::Percent(p) => Some(Measure::Percent(*p)),
            Value::Text(t) => Some(Measure::Chars(t.chars().count())),
            Value::Addr(_)
            | Value::Upstream(_)
            | Value::RedisUrls(_)
            | Value::Choice(_)
            | Value::Flag(_)
            | Value::Path(_) => None,
        }
    }
}

/// Parses a value of this kind (the range is checked by the caller).
pub(super) fn value(kind: &Kind, raw: &str) -> Result<Value, String> {
    Ok(match kind {
        Kind::Duration { .. } => Value::Duration(duration(raw)?),
        Kind::Size { .. } => Value::Bytes(size(raw)?),
        Kind::Count { .. } => Value::Count(count(raw)?),
        Kind::Percent { .. } => Value::Percent(percent(raw)?),
        Kind::Text { .. } => Value::Text(raw.to_string()),
        Kind::Addr => Value::Addr(addr(raw)?),
        Kind::Upstream => Value::Upstream(UpstreamUrl::parse(raw)?),
        Kind::RedisUrls => Value::RedisUrls(redis_urls(raw)?),
        Kind::Choice(choices) => Value::Choice(choice(raw, choices)?),
        Kind::Flag => Value::Flag(flag(raw)?),
        Kind::Path => Value::Path(path(raw)?),
    })
}

pub(super) fn duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|e| format!("{raw:?} is not a duration ({e}); write it like 500ms, 60s or 5m"))
}

pub(super) fn size(raw: &str) -> Result<u64, String> {
    let trimmed = raw.trim();
    if trimmed.starts_with('-') {
        return Err(format!("{raw:?} is negative; a size is written like 8MiB"));
    }
    trimmed
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{raw:?} is not a size ({e}); write it like 8MiB or 1048576"))
}

pub(super) fn count(raw: &str) -> Result<u64, String> {
    let trimmed = raw.trim();
    if trimmed.starts_with('-') {
        return Err(format!("{raw:?} is negative"));
    }
    trimmed
        .parse::<u64>()
        .map_err(|_| format!("{raw:?} is not a whole number"))
}

pub(super) fn percent(raw: &str) -> Result<u8, String> {
    let number = raw.trim().trim_end_matches('%').trim();
    number
        .parse::<u8>()
        .map_err(|_| format!("{raw:?} is not a percentage; write it like 20%"))
}

/// An IP address and port. `localhost` is the one host name taken, as 127.0.0.1: any
/// other would need a resolver at start-up, and could name several addresses.
pub(super) fn addr(raw: &str) -> Result<SocketAddr, String> {
    let text = raw.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let how = "write an IP address and port, like 127.0.0.1:8080 or [::1]:8080";
    match text.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => port
            .parse::<u16>()
            .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .map_err(|_| format!("{raw:?} has no valid port; write it like localhost:8080")),
        Some((host, port)) if host.parse::<IpAddr>().is_err() && port.parse::<u16>().is_ok() => {
            Err(format!(
                "{raw:?}: host names other than localhost are not looked up; {how}"
            ))
        }
        Some(_) => Err(format!("{raw:?} is not an IP address and port; {how}")),
        None => Err(format!("{raw:?} has no port; {how}")),
    }
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

/// One `redis://` or `rediss://` URL, or several separated by commas (cluster seeds). A URL
/// is named by its place in the list, never quoted, not even redacted: a malformed one may
/// hold its password where [`redacted_url`](super::redacted_url) would
/// not find it.
pub(super) fn redis_urls(raw: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err("give a redis:// or rediss:// URL".to_string());
    }
    let n = urls.len();
    for (i, url) in urls.iter().enumerate() {
        let which = match n {
            1 => "the URL".to_string(),
            _ => format!("URL {} of {n}", i + 1),
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!("{which} is not a redis:// or rediss:// URL"));
        }
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
            return Err(format!("{which} is not a Redis URL ({:?})", e.kind()));
        }
    }
    Ok(urls)
}

fn choice(raw: &str, choices: &'static [&'static str]) -> Result<&'static str, String> {
    let given = raw.trim();
    if let Some(found) = choices.iter().find(|c| **c == given) {
        return Ok(found);
    }
    let mut why = format!("{raw:?} is not one of {}", choices.join(", "));
    if let Some(close) = closest(given, choices.iter().copied()) {
        why.push_str(&format!("; did you mean {close}?"));
    }
    Err(why)
}

fn flag(raw: &str) -> Result<bool, String> {
    match raw.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{raw:?} is neither true nor false")),
    }
}

fn path(raw: &str) -> Result<PathBuf, String> {
    if raw.trim().is_empty() {
        return Err("is empty; give the path of a file".to_string());
    }
    Ok(PathBuf::from(raw))
}

/// The candidate most like `given`, if one is close enough to be a likely typo.
pub(super) fn closest<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // clap suggests flags from 0.7 (Jaro); Jaro-Winkler at 0.8 catches the same typos
    // (`ttll`, `stale-if-eror`) while keeping `redis` from suggesting `redis-lease`.
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(given, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A duration as a user would write it (`30days`, `250ms`).
pub(super) fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A size in the largest binary unit that divides it (`64KiB`), else in bytes.
pub(super) fn show_size(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    UNITS
        .iter()
        .find(|(_, unit)| n >= *unit && n.is_multiple_of(*unit))
        .map_or_else(
            || format!("{n}B"),
            |(name, unit)| format!("{}{name}", n / unit),
        )
}

/// A count with thousands separated (`1,000,000`).
pub(super) fn show_count(n: u64) -> String {
    let digits = n.to_string();
    let mut shown = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            shown.push(',');
        }
        shown.push(digit);
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_is_127_0_0_1_and_other_names_say_how_to_write_an_address() {
        assert_eq!(
            addr("localhost:8080"),
            Ok("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(addr(" LOCALHOST:1 "), Ok("127.0.0.1:1".parse().unwrap()));
        assert_eq!(addr("[::1]:9"), Ok("[::1]:9".parse().unwrap()));
        for (raw, says) in [
            ("example.com:8080", "127.0.0.1:8080"),
            ("example.com:8080", "not looked up"),
            ("localhost", "no port"),
            ("localhost:http", "localhost:8080"),
            ("::1:8080", "[::1]:8080"),
            ("127.0.0.1:99999", "not an IP address and port"),
        ] {
            match addr(raw) {
                Err(why) => assert!(why.contains(says), "{raw}: {why}"),
                Ok(a) => panic!("{raw} gave {a}"),
            }
        }
    }

    #[test]
    fn redis_url_errors_never_quote_a_url() {
        for raw in [
            "redis:/user:hunter2@cache",
            "ftp://user:hunter2@cache",
            "redis://ok:6379, hunter2",
            "rediss://user:hunter2@cache:99999999",
        ] {
            match redis_urls(raw) {
                Err(why) => assert!(!why.contains("hunter2"), "{why}"),
                Ok(urls) => panic!("{raw} gave {urls:?}"),
            }
        }
        assert_eq!(
            redis_urls("redis://a:1, rediss://b:2").map(|u| u.len()),
            Ok(2)
        );
        assert!(redis_urls(" , ").is_err());
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
    fn numbers_and_choices() {
        assert_eq!(percent("20%"), Ok(20));
        assert_eq!(percent(" 0 "), Ok(0));
        assert!(percent("-1%").is_err());
        assert_eq!(count("10000"), Ok(10_000));
        assert!(count("-1").unwrap_err().contains("negative"));
        assert!(size("-5MiB").unwrap_err().contains("negative"));
        assert_eq!(size("8MiB"), Ok(8 << 20));
        assert_eq!(flag("true"), Ok(true));
        assert!(flag("yes").is_err());
        let why = choice("shard", &["per-credential", "shared"]).unwrap_err();
        assert!(why.contains("did you mean shared?"), "{why}");
        assert!(path("").is_err());
    }

    #[test]
    fn values_are_shown_as_they_are_written() {
        assert_eq!(show_size(64 << 10), "64KiB");
        assert_eq!(show_size(1 << 40), "1TiB");
        assert_eq!(show_size(0), "0B");
        assert_eq!(show_size(1500), "1500B");
        assert_eq!(show_count(1_000_000), "1,000,000");
        assert_eq!(show_count(100), "100");
        assert_eq!(show_count(0), "0");
        assert_eq!(show_duration(Duration::from_secs(30 * 24 * 3600)), "30days");
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn did_you_mean() {
        let keys = ["ttl", "stale-if-error", "redis", "redis-lease"];
        assert_eq!(closest("ttll", keys), Some("ttl"));
        assert_eq!(closest("stale-if-eror", keys), Some("stale-if-error"));
        assert_eq!(closest("listen-address", keys), None);
    }
}
