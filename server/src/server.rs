//! Start-up and shutdown: bind, set up the process (pid file, daemon, fd limit), build the app
//! on every worker, run until a signal, then drain.

use std::{
    io,
    net::{SocketAddr, TcpListener},
    os::fd::AsRawFd,
    sync::Arc,
    time::Duration,
};

use actix_web::{dev::Extensions, http::KeepAlive, rt::net::TcpStream, web, App, HttpServer};
use switchboard_actors::{metrics::METRICS, registry::broker::node_id, ConnectionFd};

use crate::{
    config::Config,
    http::{self, Endpoints},
    hub::{Hub, HubBuilder, HubError},
    lifecycle::{self, LifecycleError, PidFile},
    tls::{self, CertResolver, TlsError, TlsFiles},
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("server stopped with an error: {0}")]
    Run(io::Error),
}

impl StartError {
    /// Configuration mistakes exit 2 (like bad flags); failures while running exit 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Run(_) | StartError::Lifecycle(LifecycleError::AlreadyRunning { .. }) => 1,
            _ => 2,
        }
    }
}

/// Runs the server until it is stopped.
pub fn run(config: Config) -> Result<(), StartError> {
    let fd_limit = lifecycle::raise_fd_limit();
    let workers = config.worker_count();
    let fd_connections = lifecycle::connections_for_fd_limit(fd_limit);
    let fd_sessions = lifecycle::sessions_for_connections(fd_connections);
    let max_sessions = match config.max_connections {
        Some(wanted) if wanted > fd_sessions => {
            log::warn!(
                "--max-connections {wanted} is more than the file-descriptor limit allows; \
                 using {fd_sessions}"
            );
            fd_sessions
        }
        Some(wanted) => wanted,
        None => fd_sessions,
    };
    let hub = hub_builder(&config, workers, max_sessions);
    // Mistakes in the settings reach the terminal, before going to the background.
    hub.check()?;
    let tls_files = TlsFiles::from_flags(config.tls_cert.as_deref(), config.tls_key.as_deref())?;
    let cert_resolver = tls_files.map(CertResolver::load).transpose()?.map(Arc::new);
    // Bind and lock before going to the background, so these mistakes reach the terminal.
    let listener = bind(config.bind)?;
    let metrics_listener = config.metrics_bind.map(bind).transpose()?;
    let mut pid_file = config.pid_file.as_deref().map(PidFile::lock).transpose()?;
    if let Some(path) = &config.log_file {
        lifecycle::redirect_log(path)?;
    }
    if config.daemon {
        lifecycle::daemonize()?;
    }

    // After the fork of --daemon: the broker's thread would not survive it.
    let hub = hub.build()?;
    let state = hub.inner.state.clone();
    let hub_handle = hub.handle();
    let bound = listener.local_addr().map_err(StartError::Run)?;
    let pid_file_to_write = pid_file.as_mut();

    let result = actix_web::rt::System::new().block_on(async move {
        // Signals first: once the pid file and the "listening" line are out, SIGTERM must work.
        let mut signals = lifecycle::ShutdownSignals::install().map_err(StartError::Run)?;
        let hangups = lifecycle::hangups().map_err(StartError::Run)?;
        actix_web::rt::spawn(tls::reload_on_hangup(hangups, cert_resolver.clone()));
        if let Some(pid_file) = pid_file_to_write {
            pid_file.write_pid()?;
        }
        let scheme = if cert_resolver.is_some() {
            "https/wss"
        } else {
            "http/ws"
        };
        log::info!(
            "switchboard listening on {bound} ({scheme}, {workers} workers, file-descriptor limit \
             {fd_limit}, at most {fd_connections} connections, {max_sessions} WebSocket sessions)"
        );
        match &config.broker {
            Some(url) => log::info!("node id {}, cluster broker {url}", node_id()),
            None => log::info!("node id {}, single node (no --broker)", node_id()),
        }
        let uploads = web::Data::new(http::Uploads {
            dir: config.upload_dir.clone(),
            limits: http::BodyLimits {
                max_bytes: config.max_upload,
                idle: config.body_timeout,
            },
        });
        let publishing = web::Data::new(http::Publishing {
            token: config.api_token.clone().filter(|token| !token.is_empty()),
            tokens: hub.inner.tokens.clone(),
            limits: http::BodyLimits {
                max_bytes: config.max_publish_body,
                idle: config.body_timeout,
            },
        });
        let max_head = config.max_head;
        let app_hub = hub.clone();
        let per_worker =
            usize::try_from(fd_connections.div_ceil(workers as u64)).unwrap_or(usize::MAX);
        let server = HttpServer::new(move || {
            // The same mount an embedding application uses (see hub/), plus the binary's own
            // routes and front door.
            App::new()
                .app_data(uploads.clone())
                .app_data(publishing.clone())
                .wrap_fn(move |req, service| http::front_door::handle(req, service, max_head))
                .configure(app_hub.configure_any_path())
                .configure(http::routes)
        })
        .workers(workers)
        .max_connections(per_worker)
        .client_request_timeout(config.head_timeout)
        .keep_alive(keep_alive(config.keep_alive))
        .shutdown_timeout(config.shutdown_timeout.as_secs().max(1))
        .disable_signals()
        .on_connect(record_connection);
        let server = match cert_resolver {
            Some(resolver) => server.listen_rustls_0_23(listener, tls::server_config(resolver)),
            None => server.listen(listener),
        }
        .map_err(StartError::Run)?
        .run();

        let metrics_server = match metrics_listener {
            Some(listener) => {
                log::info!(
                    "metrics on http://{}{}",
                    listener.local_addr().map_err(StartError::Run)?,
                    config.metrics_path
                );
                let path = config.metrics_path.clone();
                let server =
                    HttpServer::new(move || App::new().configure(hub.metrics_endpoint(&path)))
                        .workers(1)
                        .disable_signals()
                        .listen(listener)
                        .map_err(StartError::Run)?
                        .run();
                Some(server)
            }
            None => None,
        };

        let handle = server.handle();
        let metrics_handle = metrics_server.as_ref().map(|server| server.handle());
        let shutdown_timeout = config.shutdown_timeout;
        let (past_deadline_tx, past_deadline_rx) = tokio::sync::oneshot::channel::<()>();
        actix_web::rt::spawn(async move {
            signals.next().await;
            let deadline = tokio::time::Instant::now() + shutdown_timeout;
            log::info!(
                "shutting down: closing {} WebSocket connections (up to {shutdown_timeout:?})",
                METRICS.sessions_open.get()
            );
            // Not ready, and no new connections; kept-alive ones still see readiness 503.
            state.start_draining();
            handle.pause().await;
            actix_web::rt::spawn(async move {
                signals.next().await;
                log::warn!("second signal: exiting now");
                std::process::exit(1);
            });
            // Until the last session has ended, or the deadline; then the rest of the cluster
            // sees this node's members leave now, not at --presence-ttl.
            if !hub_handle.close_all(deadline.into_std()).await {
                log::warn!(
                    "shutdown timeout: {} WebSocket connections still open; ending them",
                    METRICS.sessions_open.get()
                );
            }
            // Then stop: in-flight HTTP requests may finish, within the same deadline. Past it,
            // the server future below is dropped, which forces the workers to stop: a
            // `stop(false)` sent now would only run after the graceful stop, which waits up to
            // its own timeout (another --shutdown-timeout), as actix-server handles one stop
            // command at a time.
            tokio::select! {
                () = handle.stop(true) => {}
                () = tokio::time::sleep_until(deadline) => {
                    log::warn!("shutdown timeout: ending the HTTP requests still in progress");
                    let _ = past_deadline_tx.send(());
                }
            }
            if let Some(metrics) = metrics_handle {
                metrics.stop(false).await;
            }
        });
        if let Some(metrics_server) = metrics_server {
            actix_web::rt::spawn(metrics_server);
        }
        let stopped = tokio::select! {
            stopped = server => stopped.map_err(StartError::Run),
            Ok(()) = past_deadline_rx => Ok(()),
        };
        log::info!("shutdown complete");
        stopped
    });
    drop(pid_file);
    result
}

/// The hub of the binary: its flags, through the same builder an embedding application uses.
fn hub_builder(config: &Config, workers: usize, max_sessions: u64) -> HubBuilder {
    let mut builder = Hub::builder()
        .max_message_size(config.max_message_size)
        .max_backlog(config.max_backlog)
        .slow_consumer(config.slow_consumer.into())
        .ping_interval(config.ping_interval)
        .idle_timeout(config.idle_timeout)
        .close_timeout(config.close_timeout)
        .write_coalesce(config.write_coalesce)
        .compression(config.compression())
        .max_connections(usize::try_from(max_sessions).unwrap_or(usize::MAX))
        .default_protocol(&config.default_protocol)
        .builtin_settings(config.protocol_settings())
        .allowed_origins(config.allowed_origins.clone().unwrap_or_default())
        .presence_ttl(config.presence_ttl)
        .broker_check_interval(config.broker_check_interval)
        .static_files(&config.static_dir)
        .cache_control(&config.cache_control)
        .endpoints(Endpoints {
            health: Some(config.health_path.clone()),
            ready: Some(config.ready_path.clone()),
            status: Some(config.status_path.clone()),
            // With --metrics-bind, the metrics are served on their own address only.
            metrics: config
                .metrics_bind
                .is_none()
                .then(|| config.metrics_path.clone()),
        })
        .workers(workers);
    if let Some(path) = &config.auth_jwt_secret {
        builder = builder.token_secret_file(path);
    }
    if let Some(path) = &config.auth_jwt_public_key {
        builder = builder.token_public_key_file(path);
    }
    if let Some(url) = &config.broker {
        builder = builder.broker(url);
    }
    if let Some(id) = &config.node_id {
        builder = builder.node_id(id);
    }
    builder
}

fn keep_alive(idle: Duration) -> KeepAlive {
    if idle.is_zero() {
        KeepAlive::Disabled
    } else {
        KeepAlive::Timeout(idle)
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).map_err(|source| StartError::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Per-connection set-up: Nagle off (small broadcast messages must not wait for ACKs) and the
/// socket's fd recorded, so a connection whose peer stopped reading can still be ended. The
/// stream's type says whether it is TLS, and so what the session may do with the fd.
fn record_connection(connection: &dyn std::any::Any, extensions: &mut Extensions) {
    let fd = if let Some(tcp) = connection.downcast_ref::<TcpStream>() {
        let _ = tcp.set_nodelay(true);
        ConnectionFd::Plain(tcp.as_raw_fd())
    } else if let Some(tls) = connection.downcast_ref::<tls::TlsStream>() {
        let tcp = tls.get_ref().0;
        let _ = tcp.set_nodelay(true);
        ConnectionFd::Tls(tcp.as_raw_fd())
    } else {
        return;
    };
    extensions.insert(fd);
}
