//! The `--config` file: a JSON object whose values become the flags' defaults.
//!
//! Properties: any text is accepted or refused with an error, never a panic; a file that is
//! accepted then always gives a configuration (every value was checked by its flag's own
//! parser, so the server cannot fail later on it); and that configuration is exactly the one
//! the same settings give as command-line flags.
#![no_main]

use clap::{CommandFactory, FromArgMatches};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard::{config::Config, fuzzing::apply_config_text};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(command) = apply_config_text(Config::command(), text, "fuzz.json".to_owned()) else {
        return;
    };
    let from_file = command
        .try_get_matches_from(["switchboard"])
        .and_then(|mut matches| Config::from_arg_matches_mut(&mut matches))
        .unwrap_or_else(|err| panic!("an accepted config file fails: {err}\n{text}"));

    // The same settings as flags.
    let Ok(Value::Object(entries)) = serde_json::from_str::<Value>(text) else {
        panic!("an accepted config file is not a JSON object");
    };
    let mut args = vec!["switchboard".to_owned()];
    for (key, value) in entries {
        let flag = key.replace('_', "-");
        let value = match value {
            Value::String(text) => text,
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            other => panic!("an accepted value {other}"),
        };
        let is_switch = Config::command()
            .get_arguments()
            .any(|arg| arg.get_long() == Some(flag.as_str()) && !arg.get_action().takes_values());
        if is_switch {
            if value == "true" {
                args.push(format!("--{flag}"));
            }
        } else {
            args.push(format!("--{flag}={value}"));
        }
    }
    let from_flags = Config::command()
        .try_get_matches_from(&args)
        .and_then(|mut matches| Config::from_arg_matches_mut(&mut matches))
        .unwrap_or_else(|err| panic!("the file's settings as flags fail: {err}\n{args:?}"));
    assert_eq!(
        format!("{from_file:?}"),
        format!("{from_flags:?}"),
        "the file and the flags disagree"
    );
});
