//! The configuration's tests: [`agreement`] of the table with `--help`, the example file,
//! the README and [`Config`]; [`errors`] that name where a value came from and keep secrets
//! out; [`check`], `--check-config`'s report and the files a configuration reads. Shared helpers here.

use std::collections::BTreeSet;
use std::io::Write;

use super::validate::Measure;
use super::*;

mod agreement;
mod check;
mod errors;

fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut all = vec!["baremetal-image-cache"];
    all.extend_from_slice(args);
    load_from(all, vars(env)).map(|loaded| loaded.config)
}

fn loaded(args: &[&str], env: &[(&str, &str)]) -> Config {
    match load(args, env) {
        Ok(config) => config,
        Err(e) => panic!("{args:?} {env:?}: {e}"),
    }
}

/// The message of a configuration that must be refused.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    match load(args, env) {
        Err(ConfigError::Invalid(message)) => message,
        Err(ConfigError::Cli(e)) => panic!("{args:?} {env:?}: clap refused it: {e}"),
        Ok(_) => panic!("{args:?} {env:?} was taken"),
    }
}

/// A configuration file holding this text; its path is `.path()`.
fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = match tempfile::Builder::new().suffix(".toml").tempfile() {
        Ok(file) => file,
        Err(e) => panic!("{e}"),
    };
    if let Err(e) = file.write_all(text.as_bytes()) {
        panic!("{e}");
    }
    file
}

fn path_of(file: &tempfile::NamedTempFile) -> &str {
    file.path().to_str().unwrap_or_default()
}

fn read_doc(relative: &str) -> String {
    let path = format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
