//! The config file (`--config bigcache.toml`): every flag as a TOML key,
//! under the flag's own name (`max-variants`, or `max_variants`).
//!
//! Precedence: flags, then `BIGCACHE_*` variables, then the file, then the
//! defaults. The file is read into the command line: a key whose flag was
//! neither given nor set in the environment becomes that flag, and the
//! whole is parsed once more, so a value from the file goes through the
//! same parsing and checks as the flag. A key no flag has is an error that
//! names it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches};

use super::Args;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    Flags(#[from] clap::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The parser's message and where, without the line itself (it may
    /// hold the API token).
    #[error("{path}: line {line}: {message}")]
    Toml {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: unknown key `{key}` (keys are the flags' names, as in `bigcache --help`)")]
    UnknownKey { path: PathBuf, key: String },
    #[error("{path}: `{key}` must be a string, number, boolean or an array of them")]
    BadValue { path: PathBuf, key: String },
}

/// Parses `argv` with the config file it names, if any.
pub fn parse(argv: Vec<OsString>) -> Result<Args, FileError> {
    let cmd = Args::command();
    let matches = cmd.clone().try_get_matches_from(&argv)?;
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok(Args::from_arg_matches(&matches)?);
    };
    let mut argv = argv;
    argv.extend(file_flags(&path, &cmd, &matches)?);
    Ok(Args::try_parse_from_argv(argv)?)
}

impl Args {
    fn try_parse_from_argv(argv: Vec<OsString>) -> Result<Args, clap::Error> {
        let matches = Args::command().try_get_matches_from(argv)?;
        Args::from_arg_matches(&matches)
    }
}

/// The flags the file adds: one per key whose flag was neither given nor
/// set in the environment.
fn file_flags(
    path: &Path,
    cmd: &clap::Command,
    matches: &clap::ArgMatches,
) -> Result<Vec<OsString>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| FileError::Toml {
        path: path.to_path_buf(),
        line: e.span().map_or(0, |s| {
            text[..s.start.min(text.len())].matches('\n').count() + 1
        }),
        message: e.message().to_string(),
    })?;
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .filter(|a| {
                !matches!(
                    a.get_id().as_str(),
                    "config" | "print_config" | "help" | "version"
                )
            });
        let Some(arg) = arg else {
            return Err(FileError::UnknownKey {
                path: path.to_path_buf(),
                key,
            });
        };
        if matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let bad = || FileError::BadValue {
            path: path.to_path_buf(),
            key: key.clone(),
        };
        let flag = format!("--{long}");
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let values = match value {
            toml::Value::Array(items) => items,
            one => vec![one],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) if switch => {
                    if b {
                        out.push(OsString::from(&flag));
                    }
                    continue;
                }
                toml::Value::Boolean(b) => b.to_string(),
                _ => return Err(bad()),
            };
            if switch {
                return Err(bad());
            }
            // One argument: a value starting with `-` stays a value.
            out.push(OsString::from(format!("{flag}={text}")));
        }
    }
    Ok(out)
}

/// The effective configuration of `argv`, as a config file would say it
/// (`--api-token` shown only as set or not).
pub fn print(argv: Vec<OsString>) -> Result<String, FileError> {
    let cmd = Args::command();
    let matches = cmd.clone().try_get_matches_from(&argv)?;
    let matches = match matches.get_one::<PathBuf>("config").cloned() {
        Some(path) => {
            let mut argv = argv;
            argv.extend(file_flags(&path, &cmd, &matches)?);
            cmd.clone().try_get_matches_from(argv)?
        }
        None => matches,
    };
    let mut out = String::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if matches!(id, "config" | "print_config" | "help" | "version") {
            continue;
        }
        let line = if matches!(arg.get_action(), ArgAction::SetTrue) {
            format!("{long} = {}", matches.get_flag(id))
        } else {
            let values: Vec<String> = matches
                .get_raw(id)
                .into_iter()
                .flatten()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let quoted = |v: &String| {
                let v = if long == "api-token" {
                    "<set>"
                } else {
                    v.as_str()
                };
                toml::Value::String(v.to_string()).to_string()
            };
            match values.as_slice() {
                [] => format!("# {long} is not set"),
                [one] if !matches!(arg.get_action(), ArgAction::Append) => {
                    format!("{long} = {}", quoted(one))
                }
                many => format!(
                    "{long} = [{}]",
                    many.iter().map(quoted).collect::<Vec<_>>().join(", ")
                ),
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}
