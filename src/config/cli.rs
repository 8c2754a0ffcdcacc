//! The command line, built from the table with clap's builder API.
//!
//! clap only splits the arguments and writes `--help`: every value comes back as text and
//! goes through the table's parsers like an environment or file value, and clap is given
//! no defaults and no environment variables, so a value it returns was typed on the
//! command line. That is how an error can name `--ttl` rather than wherever clap found it.

use std::collections::BTreeMap;
use std::ffi::OsString;

use clap::{Arg, ArgAction, Command};

use super::env::env_name;
use super::settings::{Kind, Setting, SETTINGS};
use super::ConfigError;

/// The `baremetal-image-cache` command: one `--KEY` per setting of the table.
pub(super) fn command() -> Command {
    let mut command = Command::new("baremetal-image-cache")
        .version(env!("CARGO_PKG_VERSION"))
        .about(env!("CARGO_PKG_DESCRIPTION"));
    for setting in SETTINGS {
        command = command.arg(arg(setting));
    }
    command
}

fn arg(setting: &'static Setting) -> Arg {
    let arg = Arg::new(setting.key)
        .long(setting.key)
        .value_name(setting.value_name)
        .help(help(setting))
        .value_parser(clap::value_parser!(String))
        .action(ArgAction::Set);
    match setting.kind {
        // `--redis-cluster` alone means true.
        Kind::Flag => arg.num_args(0..=1).default_missing_value("true"),
        // A negative number is a value to refuse with a reason, not an unknown flag.
        Kind::Duration { .. } | Kind::Size { .. } | Kind::Count { .. } | Kind::Percent { .. } => {
            arg.allow_hyphen_values(true)
        }
        _ => arg,
    }
}

/// The help line: the table's text, then the default, the range and the variable. A value
/// read from the environment is never shown, so no secret can reach the help.
fn help(setting: &Setting) -> String {
    let mut help = setting.help.to_string();
    if let Some(default) = setting.default {
        help.push_str(&format!(" [default: {default}]"));
    }
    if let Some(range) = setting.kind.range_text() {
        help.push_str(&format!(" [range: {range}]"));
    }
    help.push_str(&format!(" [env: {}]", env_name(setting.key)));
    help
}

/// The values given on the command line, by key. `--help`, `--version` and what clap
/// refuses (an unknown flag, a flag given twice) come back as [`ConfigError::Cli`].
pub(super) fn parse<I, T>(args: I) -> Result<BTreeMap<&'static str, String>, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command()
        .try_get_matches_from(args)
        .map_err(ConfigError::Cli)?;
    let mut flags = BTreeMap::new();
    for setting in SETTINGS {
        let value = matches
            .try_get_one::<String>(setting.key)
            .map_err(|e| ConfigError::Invalid(format!("internal error: --{}: {e}", setting.key)))?;
        if let Some(value) = value {
            flags.insert(setting.key, value.clone());
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn only_given_flags_come_back() {
        let flags = parse([
            "bic",
            "--ttl",
            "-5s",
            "--redis-cluster",
            "--listen=localhost:1",
        ])
        .unwrap_or_default();
        assert_eq!(flags.get("ttl").map(String::as_str), Some("-5s"));
        assert_eq!(flags.get("redis-cluster").map(String::as_str), Some("true"));
        assert_eq!(flags.get("listen").map(String::as_str), Some("localhost:1"));
        assert_eq!(flags.len(), 3);
    }

    #[test]
    fn clap_refuses_unknown_and_repeated_flags() {
        for args in [
            &["bic", "--ttll", "5s"][..],
            &["bic", "--ttl", "5s", "--ttl", "6s"],
        ] {
            assert!(matches!(parse(args), Err(ConfigError::Cli(_))), "{args:?}");
        }
    }
}
