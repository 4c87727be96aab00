//! The `switchboard` binary: parse the configuration, set up the process, run the server.

mod config;
mod config_file;
mod http;
mod lifecycle;
mod server;
mod state;
mod units;
mod ws;

use config::Config;

fn main() {
    let config = Config::from_args();
    lifecycle::init_logging(&config);
    if let Err(err) = server::run(config) {
        eprintln!("switchboard: {err}");
        std::process::exit(err.exit_code());
    }
}
