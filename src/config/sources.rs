//! Where each value comes from: the flag, else the variable, else the file, else the
//! table's default. The [`Resolver`] hands out parsed values by key, remembers where each
//! came from (so that a later check can name it) and which keys were read (so that a test
//! can prove every setting of the table reaches the [`Config`](super::Config)).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::env::env_name;
use super::file::{self, File};
use super::parse::{self, Value};
use super::settings::{self, Setting};
use super::validate::Problem;
use super::{ConfigError, UpstreamUrl};

/// Where a value came from, as an error names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// `--ttl`
    Flag(&'static str),
    /// `BAREMETAL_IMAGE_CACHE_TTL`
    Env(&'static str),
    /// ``config file /etc/x.toml line 3: key `ttl` ``
    File {
        path: Option<PathBuf>,
        line: usize,
        key: &'static str,
    },
    /// `ttl (default 60s)`: only a check that ties settings together can fail on one.
    Default(&'static str, &'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(key) => write!(f, "--{key}"),
            Origin::Env(key) => f.write_str(&env_name(key)),
            Origin::File { path, line, key } => {
                write!(
                    f,
                    "{} line {line}: key `{key}`",
                    File::name(path.as_deref())
                )
            }
            Origin::Default(key, default) => write!(f, "{key} (default {default})"),
        }
    }
}

/// The raw values, by key, from each source.
#[derive(Default)]
pub(super) struct Sources {
    pub(super) flags: BTreeMap<&'static str, String>,
    pub(super) env: BTreeMap<&'static str, String>,
    pub(super) file: Option<File>,
}

impl Sources {
    /// The text that wins for this setting, and where it came from.
    fn raw(&self, setting: &'static Setting) -> Result<Option<(String, Origin)>, ConfigError> {
        let key = setting.key;
        if let Some(text) = self.flags.get(key) {
            return Ok(Some((text.clone(), Origin::Flag(key))));
        }
        if let Some(text) = self.env.get(key) {
            return Ok(Some((text.clone(), Origin::Env(key))));
        }
        if let Some(file) = &self.file {
            if let Some((value, line)) = file.values.get(key) {
                let origin = Origin::File {
                    path: file.path.clone(),
                    line: *line,
                    key,
                };
                return match file::text_of(&setting.kind, value) {
                    Ok(text) => Ok(Some((text, origin))),
                    Err(why) => Err(ConfigError::Invalid(format!("{origin}: {why}"))),
                };
            }
        }
        Ok(setting
            .default
            .map(|text| (text.to_string(), Origin::Default(key, text))))
    }
}

/// Hands out each setting's parsed value. Every getter names the setting by its key in the
/// table; a key that is not there, or of another kind, is a bug that the unit tests catch.
pub(super) struct Resolver {
    sources: Sources,
    /// Every key read, with its text and where it came from (`None`: no value anywhere).
    read: BTreeMap<&'static str, Option<(String, Origin)>>,
}

impl Resolver {
    pub(super) fn new(sources: Sources) -> Resolver {
        Resolver {
            sources,
            read: BTreeMap::new(),
        }
    }

    /// Reads the file that `config` names, if any, as the third source.
    pub(super) fn read_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = self.path("config")? else {
            return Ok(());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.problem(Problem {
                key: "config",
                why: format!("cannot read config file {}: {e}", path.display()),
            })
        })?;
        self.sources.file = Some(File::parse(Some(&path), &text)?);
        Ok(())
    }

    /// The keys read so far.
    #[cfg(test)]
    pub(super) fn read_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.read.keys().copied()
    }

    /// Each setting read, in the table's order, with the text that won and where it came
    /// from (`None`: no value anywhere).
    pub(super) fn resolved(&self) -> Vec<(&'static Setting, Option<(String, Origin)>)> {
        settings::SETTINGS
            .iter()
            .filter_map(|setting| Some((setting, self.read.get(setting.key)?.clone())))
            .collect()
    }

    /// A problem found after parsing, named by where the value came from.
    pub(super) fn problem(&self, problem: Problem) -> ConfigError {
        match self.read.get(problem.key) {
            Some(Some((_, origin))) => ConfigError::Invalid(format!("{origin}: {}", problem.why)),
            _ => ConfigError::Invalid(format!("{}: {}", problem.key, problem.why)),
        }
    }

    /// The setting's value, parsed and within its range.
    fn get(&mut self, key: &'static str) -> Result<Option<Value>, ConfigError> {
        let setting = settings::setting(key).ok_or_else(|| internal(key, "is not in the table"))?;
        let raw = self.sources.raw(setting)?;
        self.read.insert(key, raw.clone());
        let Some((text, origin)) = raw else {
            return Ok(None);
        };
        let checked = parse::value(&setting.kind, &text).and_then(|value| {
            if let Some(measure) = value.measure() {
                setting
                    .kind
                    .check(measure)
                    // A number is shown as it was written: `31days`, where humantime
                    // would say `1month 13h 26m 24s`.
                    .map_err(|why| match measure.shown() {
                        Some(_) => format!("{why}, not {}", text.trim()),
                        None => why,
                    })?;
            }
            Ok(value)
        });
        checked.map(Some).map_err(|why| {
            // The parsers never quote a secret; this makes sure of it (a value of a few
            // characters may appear in any message by chance, and is no secret anyway).
            let shown = text.trim();
            let why = if setting.secret && shown.len() >= 4 && why.contains(shown) {
                "is not valid (the value is not shown: it is a secret)".to_string()
            } else {
                why
            };
            ConfigError::Invalid(format!("{origin}: {why}"))
        })
    }

    fn optional<T>(
        &mut self,
        key: &'static str,
        want: &str,
        take: impl FnOnce(Value) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(key)? {
            None => Ok(None),
            Some(value) => take(value)
                .map(Some)
                .ok_or_else(|| internal(key, &format!("is not a {want}"))),
        }
    }

    fn required<T>(
        &mut self,
        key: &'static str,
        want: &str,
        take: impl FnOnce(Value) -> Option<T>,
    ) -> Result<T, ConfigError> {
        self.optional(key, want, take)?
            .ok_or_else(|| internal(key, "has no default"))
    }

    pub(super) fn duration(&mut self, key: &'static str) -> Result<Duration, ConfigError> {
        self.required(key, "duration", |v| match v {
            Value::Duration(d) => Some(d),
            _ => None,
        })
    }

    pub(super) fn bytes(&mut self, key: &'static str) -> Result<u64, ConfigError> {
        self.required(key, "size", |v| match v {
            Value::Bytes(n) => Some(n),
            _ => None,
        })
    }

    /// A count, as the type of its field (its range keeps it small enough for any).
    pub(super) fn count<T: TryFrom<u64>>(&mut self, key: &'static str) -> Result<T, ConfigError> {
        let n = self.required(key, "count", |v| match v {
            Value::Count(n) => Some(n),
            _ => None,
        })?;
        T::try_from(n).map_err(|_| internal(key, "does not fit its field"))
    }

    pub(super) fn percent(&mut self, key: &'static str) -> Result<u8, ConfigError> {
        self.required(key, "percentage", |v| match v {
            Value::Percent(p) => Some(p),
            _ => None,
        })
    }

    pub(super) fn addr(&mut self, key: &'static str) -> Result<SocketAddr, ConfigError> {
        self.required(key, "address", |v| match v {
            Value::Addr(a) => Some(a),
            _ => None,
        })
    }

    pub(super) fn upstream(&mut self, key: &'static str) -> Result<UpstreamUrl, ConfigError> {
        self.required(key, "URL", |v| match v {
            Value::Upstream(u) => Some(u),
            _ => None,
        })
    }

    /// One of the words of a [`Kind::Choice`](settings::Kind::Choice), as its enum.
    pub(super) fn choice<T: clap::ValueEnum>(
        &mut self,
        key: &'static str,
    ) -> Result<T, ConfigError> {
        let word = self.required(key, "choice", |v| match v {
            Value::Choice(word) => Some(word),
            _ => None,
        })?;
        T::from_str(word, false).map_err(|_| internal(key, "has a word its enum lacks"))
    }

    pub(super) fn flag(&mut self, key: &'static str) -> Result<bool, ConfigError> {
        self.required(key, "flag", |v| match v {
            Value::Flag(b) => Some(b),
            _ => None,
        })
    }

    pub(super) fn text(&mut self, key: &'static str) -> Result<Option<String>, ConfigError> {
        self.optional(key, "text", |v| match v {
            Value::Text(t) => Some(t),
            _ => None,
        })
    }

    pub(super) fn path(&mut self, key: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        self.optional(key, "path", |v| match v {
            Value::Path(p) => Some(p),
            _ => None,
        })
    }

    pub(super) fn redis_urls(
        &mut self,
        key: &'static str,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        self.optional(key, "list of Redis URLs", |v| match v {
            Value::RedisUrls(urls) => Some(urls),
            _ => None,
        })
    }
}

/// A mistake in the table or in the code that reads it, never in the user's input.
fn internal(key: &str, what: &str) -> ConfigError {
    ConfigError::Invalid(format!("internal error: setting `{key}` {what}"))
}
