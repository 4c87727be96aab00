//! Start-up: bind, build the app on every worker, run until stopped.

use std::{io, os::fd::AsRawFd, sync::Arc, time::Duration};

use actix_web::{dev::Extensions, middleware::Logger, rt::net::TcpStream, web, App, HttpServer};
use switchboard_actors::{registry, ConnectionFd, SessionConfig};

use crate::{config::Config, http, lifecycle, ws};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("static directory {path}: {source}")]
    StaticDir { path: String, source: io::Error },
    #[error("static directory {0} is not a directory")]
    StaticDirNotDir(String),
    #[error("unknown --default-protocol `{name}`; this server speaks: {known}")]
    UnknownDefaultProtocol { name: String, known: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("server stopped with an error: {0}")]
    Run(io::Error),
}

impl StartError {
    /// Configuration mistakes exit 2 (like bad flags); failures while running exit 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Run(_) => 1,
            _ => 2,
        }
    }
}

/// Runs the server until it is stopped.
pub fn run(config: Config) -> Result<(), StartError> {
    let static_files = http::StaticFiles::open(&config.static_dir, &config.cache_control)?;
    let session_config = Arc::new(session_config(&config));
    let handshake = ws::Handshake::new(&config, session_config.clone())?;
    let fd_limit = lifecycle::raise_fd_limit();
    let workers = config.worker_count();

    actix_web::rt::System::new().block_on(async move {
        let static_files = web::Data::new(static_files);
        let handshake = web::Data::new(handshake);
        let server = HttpServer::new(move || {
            registry::start_local_shard(session_config.clone());
            App::new()
                .app_data(static_files.clone())
                .app_data(handshake.clone())
                .wrap(Logger::new("%a \"%r\" %s %b %Dms"))
                .configure(ws::routes)
                .configure(http::routes)
        })
        .workers(workers)
        .on_connect(record_connection)
        .bind(config.bind)
        .map_err(|source| StartError::Bind {
            addr: config.bind.to_string(),
            source,
        })?;
        for addr in server.addrs() {
            log::info!(
                "switchboard listening on {addr} ({workers} workers, file-descriptor limit {fd_limit})"
            );
        }
        server.run().await.map_err(StartError::Run)
    })
}

/// Per-connection set-up: Nagle off (small broadcast messages must not wait for ACKs) and the
/// socket's fd recorded, so a connection whose peer stopped reading can still be ended.
fn record_connection(connection: &dyn std::any::Any, extensions: &mut Extensions) {
    if let Some(tcp) = connection.downcast_ref::<TcpStream>() {
        let _ = tcp.set_nodelay(true);
        extensions.insert(ConnectionFd(tcp.as_raw_fd()));
    }
}

fn session_config(config: &Config) -> SessionConfig {
    SessionConfig {
        max_message_size: config.max_message_size,
        max_backlog: config.max_backlog,
        slow_consumer: config.slow_consumer.into(),
        ping_interval: config.ping_interval,
        idle_timeout: config.idle_timeout,
        close_timeout: config.close_timeout.max(Duration::from_millis(100)),
    }
}
