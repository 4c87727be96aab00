//! `switchboard token`: mints a connection token (HS256) with the server's secret, for testing
//! and for scripts. Production tokens come from the application's own backend, which holds the
//! same secret (or the private key of `--auth-jwt-public-key`).

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::Parser;
use switchboard_actors::access::token::{self, Claims};

use crate::units::parse_duration;

/// Prints a signed connection token for `--auth-jwt-secret`.
#[derive(Debug, Parser)]
#[command(name = "switchboard token")]
struct TokenCommand {
    /// The user id (`sub`).
    #[arg(long)]
    sub: String,
    /// The display name (`name`; the chat nick) [default: the user id].
    #[arg(long)]
    name: Option<String>,
    /// Comma-separated rooms (or `prefix*` patterns) beyond the public ones, e.g. private:team.
    #[arg(long, value_delimiter = ',')]
    rooms: Vec<String>,
    /// How long the token is valid (seconds or units: 90, 30s, 1h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// The user may read but not send (`publish: false`).
    #[arg(long)]
    no_publish: bool,
    /// The token may also be used on POST /api/publish (`publish_api: true`).
    #[arg(long)]
    publish_api: bool,
    /// The secret file, as given to the server.
    #[arg(long, env = "SWITCHBOARD_AUTH_JWT_SECRET")]
    auth_jwt_secret: Option<PathBuf>,
}

/// Runs the command with its arguments (the first is `token`); returns the exit status.
pub fn run(args: impl Iterator<Item = OsString>) -> i32 {
    let command = match TokenCommand::try_parse_from(args) {
        Ok(command) => command,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { 2 } else { 0 };
        }
    };
    let Some(path) = &command.auth_jwt_secret else {
        eprintln!(
            "switchboard token: needs --auth-jwt-secret FILE (or SWITCHBOARD_AUTH_JWT_SECRET)"
        );
        return 2;
    };
    let secret = match token::read_secret(path) {
        Ok(secret) => secret,
        Err(err) => {
            eprintln!("switchboard token: {err}");
            return 2;
        }
    };
    let claims = Claims {
        name: command.name,
        exp: Some(token::unix_now() + command.ttl.as_secs().max(1)),
        nbf: None,
        rooms: command.rooms,
        publish: command.no_publish.then_some(false),
        publish_api: command.publish_api.then_some(true),
        sub: command.sub,
    };
    println!("{}", token::mint(&secret, &claims));
    0
}
