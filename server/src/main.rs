//! The `switchboard` binary: parse the configuration, set up the process, run the server.

use switchboard::{config::Config, lifecycle, probe, server, token_command};

fn main() {
    // `switchboard probe URL`: a health check for images without curl (see probe.rs).
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "probe") {
        let args: Vec<String> = std::env::args_os()
            .skip(2)
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        std::process::exit(probe::run(&args));
    }
    // `switchboard token --sub ann ...`: mints a connection token (see token_command.rs).
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "token") {
        std::process::exit(token_command::run(std::env::args_os().skip(1)));
    }
    let config = Config::from_args();
    lifecycle::init_logging(&config);
    if let Err(err) = server::run(config) {
        eprintln!("switchboard: {err}");
        std::process::exit(err.exit_code());
    }
}
