//! `BAREMETAL_IMAGE_CACHE_*` environment variables. Read here rather than by clap, so that
//! an error names the variable a value came from, and so that a variable with our prefix
//! that is no setting (a typo) stops start-up instead of being ignored.

use std::collections::BTreeMap;
use std::ffi::OsString;

use super::parse::closest;
use super::settings::SETTINGS;
use super::{ConfigError, ENV_PREFIX};

/// The variable of a setting: `stale-if-error` is `BAREMETAL_IMAGE_CACHE_STALE_IF_ERROR`.
pub(super) fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('-', "_").to_ascii_uppercase())
}

/// The settings these variables give, by key. Variables without our prefix are not ours
/// and are skipped.
pub(super) fn read(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let mut values = BTreeMap::new();
    for (name, value) in vars {
        let name = name.to_string_lossy();
        let Some(suffix) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some(setting) = SETTINGS.iter().find(|s| env_name(s.key) == name) else {
            return Err(unknown(&name, suffix));
        };
        // Not quoted: the value may be a secret.
        let value = value.into_string().map_err(|_| {
            ConfigError::Invalid(format!("environment variable {name}: is not UTF-8"))
        })?;
        values.insert(setting.key, value);
    }
    Ok(values)
}

fn unknown(name: &str, suffix: &str) -> ConfigError {
    let as_key = suffix.replace('_', "-").to_ascii_lowercase();
    let hint = match closest(&as_key, SETTINGS.iter().map(|s| s.key)) {
        Some(key) => format!("did you mean {}?", env_name(key)),
        None => format!(
            "the variables are {ENV_PREFIX}<KEY> for the keys that --help lists, \
             upper case, `-` as `_`"
        ),
    };
    ConfigError::Invalid(format!(
        "environment variable {name} is not a setting of baremetal-image-cache; {hint}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        match read(vars(pairs)) {
            Err(ConfigError::Invalid(message)) => message,
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    #[test]
    fn names_are_derived_from_keys() {
        assert_eq!(
            env_name("stale-if-error"),
            "BAREMETAL_IMAGE_CACHE_STALE_IF_ERROR"
        );
        let values = read(vars(&[
            ("PATH", "/bin"),
            ("BAREMETAL_IMAGE_CACHE_STALE_IF_ERROR", "1m"),
            ("BAREMETAL_IMAGE_CACHE_CONFIG", "/etc/x.toml"),
        ]))
        .unwrap_or_default();
        assert_eq!(values.get("stale-if-error").map(String::as_str), Some("1m"));
        assert_eq!(
            values.get("config").map(String::as_str),
            Some("/etc/x.toml")
        );
        assert_eq!(values.len(), 2);
    }

    #[test]
    fn an_unknown_variable_gets_a_did_you_mean() {
        let message = refused(&[("BAREMETAL_IMAGE_CACHE_STALE_IF_EROR", "1m")]);
        assert!(
            message.contains("BAREMETAL_IMAGE_CACHE_STALE_IF_EROR")
                && message.contains("did you mean BAREMETAL_IMAGE_CACHE_STALE_IF_ERROR?"),
            "{message}"
        );
        let message = refused(&[("BAREMETAL_IMAGE_CACHE_TTLL", "5s")]);
        assert!(message.contains("BAREMETAL_IMAGE_CACHE_TTL?"), "{message}");
        let message = refused(&[("BAREMETAL_IMAGE_CACHE_", "x")]);
        assert!(message.contains("--help"), "{message}");
    }

    #[cfg(unix)]
    #[test]
    fn a_value_that_is_not_utf8_is_refused_unquoted() {
        use std::os::unix::ffi::OsStringExt;
        let value = OsString::from_vec(b"hunter2\xff".to_vec());
        let name = OsString::from("BAREMETAL_IMAGE_CACHE_REDIS");
        match read([(name, value)]) {
            Err(ConfigError::Invalid(m)) => {
                assert!(m.contains("BAREMETAL_IMAGE_CACHE_REDIS") && !m.contains("hunter2"))
            }
            other => panic!("{other:?}"),
        }
    }
}
