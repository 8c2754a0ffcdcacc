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

/// The flag that asks for the configuration to be checked and shown rather than run.
const CHECK_CONFIG: &str = "check-config";

/// The `baremetal-image-cache` command: one `--KEY` per setting of the table, and
/// `--check-config`.
pub(super) fn command() -> Command {
    let mut command = Command::new("baremetal-image-cache")
        .version(env!("CARGO_PKG_VERSION"))
        .about(env!("CARGO_PKG_DESCRIPTION"));
    for setting in SETTINGS {
        command = command.arg(arg(setting));
    }
    command.arg(
        Arg::new(CHECK_CONFIG)
            .long(CHECK_CONFIG)
            .action(ArgAction::SetTrue)
            .help(
                "Load and check the configuration (files included), print it with where each \
                 value came from and every secret redacted, and exit: 0 if it is valid, 2 if not",
            ),
    )
}

/// What the command line asks for.
pub(super) struct CommandLine {
    /// The values given, by key.
    pub(super) values: BTreeMap<&'static str, String>,
    /// `--check-config`.
    pub(super) check_only: bool,
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

/// What the command line gives. `--help`, `--version` and what clap refuses (an unknown
/// flag, a flag given twice) come back as [`ConfigError::Cli`].
pub(super) fn parse<I, T>(args: I) -> Result<CommandLine, ConfigError>
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
    Ok(CommandLine {
        values: flags,
        check_only: matches.get_flag(CHECK_CONFIG),
    })
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
        .map(|line| line.values)
        .unwrap_or_default();
        assert_eq!(flags.get("ttl").map(String::as_str), Some("-5s"));
        assert_eq!(flags.get("redis-cluster").map(String::as_str), Some("true"));
        assert_eq!(flags.get("listen").map(String::as_str), Some("localhost:1"));
        assert_eq!(flags.len(), 3);
    }

    #[test]
    fn check_config_is_an_action_not_a_setting() {
        let line = parse(["bic", "--check-config", "--ttl", "5s"]).ok();
        assert!(line.as_ref().is_some_and(|l| l.check_only));
        assert_eq!(line.map(|l| l.values.len()), Some(1));
        assert!(parse(["bic"]).is_ok_and(|l| !l.check_only));
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
