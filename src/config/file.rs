//! The TOML file: one flat table whose keys are the table's keys. Values are kept as TOML
//! values with their line, and turned into text only once the setting's kind is known, so
//! that they go through the same parsers as flags and an error can name the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::parse::closest;
use super::settings::{self, Kind, SETTINGS};
use super::ConfigError;

/// A parsed configuration file.
pub(super) struct File {
    /// `None` for text given directly ([`Config::from_toml`](super::Config::from_toml)).
    pub(super) path: Option<PathBuf>,
    /// Each key's value and the line it is on.
    pub(super) values: BTreeMap<&'static str, (toml::Value, usize)>,
}

impl File {
    /// `config file /etc/x.toml`, the start of every message about the file.
    pub(super) fn name(path: Option<&Path>) -> String {
        match path {
            Some(path) => format!("config file {}", path.display()),
            None => "config file".to_string(),
        }
    }

    /// Parses the file's text. A key that is no setting is refused with the closest one.
    pub(super) fn parse(path: Option<&Path>, text: &str) -> Result<File, ConfigError> {
        let name = File::name(path);
        let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> = toml::from_str(text)
            .map_err(|e| ConfigError::Invalid(format!("{name}{}", toml_error(text, &e))))?;
        // By position, so that the first bad key in the file is the one reported.
        let mut entries: Vec<_> = table.into_iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut values = BTreeMap::new();
        for (key, value) in entries {
            let line = line_of(text, key.span().start);
            let key = key.into_inner();
            let Some(setting) = settings::setting(&key).filter(|s| s.in_file) else {
                return Err(ConfigError::Invalid(format!(
                    "{name} line {line}: {}",
                    unknown_key(&key)
                )));
            };
            values.insert(setting.key, (value.into_inner(), line));
        }
        Ok(File {
            path: path.map(Path::to_path_buf),
            values,
        })
    }
}

fn unknown_key(key: &str) -> String {
    if settings::setting(key).is_some() {
        return format!(
            "key `{key}` cannot be set in the file it names; give it as --{key} or {}",
            super::env::env_name(key)
        );
    }
    let keys = SETTINGS.iter().filter(|s| s.in_file).map(|s| s.key);
    match closest(key, keys) {
        Some(close) => format!("unknown key `{key}`; did you mean `{close}`?"),
        None => {
            format!("unknown key `{key}`; the keys are the flags that --help lists, without `--`")
        }
    }
}

/// The text of a file value, for the setting's parser. Which TOML types a kind takes is
/// fixed here; a wrong type is refused by its type alone, never by quoting the value.
pub(super) fn text_of(kind: &Kind, value: &toml::Value) -> Result<String, String> {
    use toml::Value as V;
    match (value, kind) {
        (V::String(text), _) => Ok(text.clone()),
        (V::Integer(n), Kind::Size { .. } | Kind::Count { .. } | Kind::Percent { .. }) => {
            Ok(n.to_string())
        }
        (V::Boolean(b), Kind::Flag) => Ok(b.to_string()),
        (other, kind) => {
            let wanted = match kind {
                Kind::Duration { .. } => "a string like \"60s\"",
                Kind::Size { .. } => "a number of bytes or a string like \"8MiB\"",
                Kind::Count { .. } => "a whole number",
                Kind::Percent { .. } => "a string like \"20%\"",
                Kind::Flag => "true or false",
                _ => "a string",
            };
            Err(format!(
                "must be {wanted}, not {}",
                article(other.type_str())
            ))
        }
    }
}

fn article(type_str: &str) -> String {
    match type_str.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_str}"),
        _ => format!("a {type_str}"),
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

/// A TOML error as its line and message (` line 2: invalid basic string`), without the
/// excerpt of the file that `toml` would quote: that line may hold a secret
/// (`redis-grant-key`, a password in `redis`).
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => format!(" line {}: {message}", line_of(text, span.start)),
        None => format!(": {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        match File::parse(Some(Path::new("/etc/x.toml")), text) {
            Err(ConfigError::Invalid(message)) => message,
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("{text} was taken"),
        }
    }

    #[test]
    fn values_keep_their_line() {
        let file = match File::parse(None, "\n# c\nttl = \"5s\"\n\nmax-headers = 7\n") {
            Ok(file) => file,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(file.values.get("ttl").map(|v| v.1), Some(3));
        assert_eq!(file.values.get("max-headers").map(|v| v.1), Some(5));
    }

    #[test]
    fn unknown_keys_get_a_did_you_mean_with_their_line() {
        let message = refused("ttl = \"5s\"\nstale-if-eror = \"1m\"\nzzz = 1\n");
        assert_eq!(
            message,
            "config file /etc/x.toml line 2: unknown key `stale-if-eror`; \
             did you mean `stale-if-error`?"
        );
        let message = refused("[server]\nlisten = \"127.0.0.1:1\"\n");
        assert!(
            message.contains("line 1: unknown key `server`"),
            "{message}"
        );
        let message = refused("config = \"/etc/other.toml\"\n");
        assert!(
            message.contains("BAREMETAL_IMAGE_CACHE_CONFIG"),
            "{message}"
        );
    }

    #[test]
    fn a_syntax_error_names_its_line_without_quoting_it() {
        let message = refused("ttl = \"5s\"\nredis-grant-key = \"hunter2hunter2hunter2hunter2");
        assert!(
            message.starts_with("config file /etc/x.toml line 2: "),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn each_kind_takes_its_toml_types() {
        let size = Kind::Size { min: 0, max: 1 };
        assert_eq!(text_of(&size, &toml::Value::Integer(-1)), Ok("-1".into()));
        assert_eq!(
            text_of(&Kind::Flag, &toml::Value::Boolean(true)),
            Ok("true".into())
        );
        let why = text_of(&Kind::RedisUrls, &toml::Value::Integer(987654321));
        assert_eq!(why, Err("must be a string, not an integer".to_string()));
        let why = text_of(&Kind::Path, &toml::Value::Array(vec![]));
        assert_eq!(why, Err("must be a string, not an array".to_string()));
    }
}
