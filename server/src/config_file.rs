//! `--config FILE`: a JSON object with the same keys as the flags.
//!
//! Its values become the flags' defaults, so clap's own order gives the precedence the operator
//! expects: flags > env vars > file > built-in defaults. Every key and value is checked with the
//! flag's own parser before the server starts, and a mistake names the key.

use std::path::{Path, PathBuf};

use clap::{Arg, Command};
use serde_json::Value;

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: not JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("config file {path}: must be a JSON object of flag names and values")]
    NotAnObject { path: String },
    #[error("config file {path}: unknown key `{key}`")]
    UnknownKey { path: String, key: String },
    #[error("config file {path}: key `{key}`: {reason}")]
    BadValue {
        path: String,
        key: String,
        reason: String,
    },
}

/// Runs the flag's own parser on a value from the file.
fn check_value(arg: &Arg, text: &str) -> Result<(), String> {
    if !arg.get_action().takes_values() {
        // A switch such as `daemon`: the file says true or false.
        return match text {
            "true" | "false" => Ok(()),
            _ => Err(format!("expected true or false, got `{text}`")),
        };
    }
    let long = format!("--{}", arg.get_long().unwrap_or_default());
    Command::new("config")
        .no_binary_name(true)
        .arg(arg.clone().env(None::<&str>).required(false))
        .try_get_matches_from([long.as_str(), text])
        .map(drop)
        .map_err(|err| {
            let rendered = err.render().to_string();
            rendered
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned()
        })
}

/// Keys that are not settings.
const NOT_SETTINGS: [&str; 3] = ["config", "help", "version"];

/// The `--config` path from the command line (`--config F` or `--config=F`) or the env var.
/// The file must be read before the final parse, because its values become defaults.
pub fn requested_path() -> Option<PathBuf> {
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("SWITCHBOARD_CONFIG").map(PathBuf::from)
}

/// Reads the file and makes its values the defaults of `command`'s flags.
pub fn apply(command: Command, path: &Path) -> Result<Command, ConfigFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: shown.clone(),
        source,
    })?;
    apply_text(command, &text, shown)
}

/// `apply` without the file read: `text` is the file's content, `shown` its name for errors.
/// Separate so that the fuzz target can check any text without a file system.
pub fn apply_text(command: Command, text: &str, shown: String) -> Result<Command, ConfigFileError> {
    let json: Value = serde_json::from_str(text).map_err(|source| ConfigFileError::Json {
        path: shown.clone(),
        source,
    })?;
    let Value::Object(entries) = json else {
        return Err(ConfigFileError::NotAnObject { path: shown });
    };
    let mut command = command;
    for (key, value) in entries {
        let flag = key.replace('_', "-");
        let known = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(flag.as_str()))
            .filter(|_| !NOT_SETTINGS.contains(&flag.as_str()))
            .cloned();
        let Some(arg) = known else {
            return Err(ConfigFileError::UnknownKey { path: shown, key });
        };
        let bad_value = |reason: String| ConfigFileError::BadValue {
            path: shown.clone(),
            key: key.clone(),
            reason,
        };
        let text = match value {
            Value::String(text) => text,
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            other => {
                return Err(bad_value(format!(
                    "expected a string, number or boolean, got {other}"
                )))
            }
        };
        check_value(&arg, &text).map_err(bad_value)?;
        let id = arg.get_id().clone();
        command = command.mut_arg(id, |arg| arg.default_value(text));
    }
    Ok(command)
}
