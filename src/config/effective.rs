//! The effective configuration as `--check-config` prints it: every setting in the table's
//! order, as a TOML line the file would take, with where its value came from. A secret's
//! value is never printed: a Redis URL keeps its host but not its password, the grant key
//! is replaced.

use std::fmt;

use super::redacted_url;
use super::settings::{Kind, Setting};
use super::sources::Origin;

/// What replaces a secret's value.
const REDACTED: &str = "<redacted>";

/// One setting's line.
struct Line {
    key: &'static str,
    /// The value, as TOML; `None`: not set and without a default.
    value: Option<String>,
    /// Where it came from; `None`: nowhere.
    origin: Option<String>,
    /// A setting the file cannot hold (`config`): printed as a comment.
    in_file: bool,
}

/// The configuration as loaded, fit to be shown.
pub struct Effective {
    lines: Vec<Line>,
}

impl Effective {
    pub(super) fn new(resolved: Vec<(&'static Setting, Option<(String, Origin)>)>) -> Effective {
        let lines = resolved
            .into_iter()
            .map(|(setting, resolved)| {
                let (value, origin) = match resolved {
                    Some((text, origin)) => (Some(shown(setting, &text)), Some(origin_of(&origin))),
                    None => (None, None),
                };
                Line {
                    key: setting.key,
                    value,
                    origin,
                    in_file: setting.in_file,
                }
            })
            .collect();
        Effective { lines }
    }
}

/// A value as TOML: a count or a flag bare, anything else a string.
fn shown(setting: &Setting, text: &str) -> String {
    let text = text.trim();
    if setting.secret {
        return match setting.kind {
            Kind::RedisUrls => toml_string(
                &text
                    .split(',')
                    .map(|url| redacted_url(url.trim()))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            _ => toml_string(REDACTED),
        };
    }
    match setting.kind {
        Kind::Count { .. } | Kind::Flag => text.to_string(),
        _ => toml_string(text),
    }
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn origin_of(origin: &Origin) -> String {
    match origin {
        Origin::Default(..) => "default".to_string(),
        other => other.to_string(),
    }
}

impl fmt::Display for Effective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "# baremetal-image-cache: the configuration is valid. Effective values, each with \
             where it came from; secrets redacted."
        )?;
        for line in &self.lines {
            let comment = if line.in_file { "" } else { "# " };
            match (&line.value, &line.origin) {
                (Some(value), Some(origin)) => {
                    writeln!(f, "{comment}{} = {value}  # {origin}", line.key)?
                }
                _ => writeln!(f, "# {} is not set", line.key)?,
            }
        }
        Ok(())
    }
}
