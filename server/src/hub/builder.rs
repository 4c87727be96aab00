//! The hub's settings, with the defaults of the `switchboard` binary.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_web::web;
use switchboard_actors::{
    access::TokenVerifier,
    deflate::Compression,
    metrics::MAX_PROTOCOLS,
    protocol::{ConnectionInfo, Opener, Protocol, ProtocolSpec, Scope},
    protocols,
    registry::broker::{self, RedisBroker, RedisSettings},
    slots::SessionSlots,
    ProtocolSettings, SessionConfig, SlowConsumerPolicy,
};

use super::{Hub, HubError, Inner};
use crate::{
    access::{origin::OriginPolicy, Access},
    http::{self, Endpoints},
    lifecycle,
    state::ServerState,
    ws,
};

/// Set by the first [`HubBuilder::build`] that succeeds.
static BUILT: AtomicBool = AtomicBool::new(false);

/// One protocol of the application's, as registered.
struct Custom {
    name: String,
    scope: Scope,
    open: switchboard_actors::protocol::CustomOpener,
}

/// Which protocol a client that offers none gets.
enum DefaultProtocol {
    /// `echo` when it is on, otherwise none.
    Unset,
    Named(String),
    None,
}

/// The settings of a [`Hub`]; every default is the `switchboard` binary's (its flag is named
/// on each method).
///
/// ```
/// use std::time::Duration;
/// let builder = switchboard::Hub::builder()
///     .max_backlog(256 * 1024)
///     .idle_timeout(Duration::from_secs(60))
///     .without_builtin("dumb-increment-protocol");
/// # drop(builder);
/// ```
pub struct HubBuilder {
    session: SessionConfig,
    max_connections: Option<usize>,
    builtins: Vec<&'static ProtocolSpec>,
    custom: Vec<Custom>,
    default_protocol: DefaultProtocol,
    settings: ProtocolSettings,
    origins: OriginPolicy,
    token_secret: Option<PathBuf>,
    token_public_key: Option<PathBuf>,
    broker: Option<String>,
    node_id: Option<String>,
    presence_ttl: Duration,
    broker_check_interval: Duration,
    static_dir: Option<PathBuf>,
    cache_control: String,
    endpoints: Option<Endpoints>,
    workers: Option<usize>,
    /// `None`: every permessage-deflate offer is declined.
    compression: Option<Compression>,
    /// The first mistake a method found; [`HubBuilder::build`] reports it.
    mistake: Option<HubError>,
}

impl Default for HubBuilder {
    fn default() -> Self {
        HubBuilder {
            session: SessionConfig {
                max_message_size: 16 * 1024 * 1024,
                max_backlog: 1024 * 1024,
                slow_consumer: SlowConsumerPolicy::Close,
                ping_interval: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(120),
                close_timeout: Duration::from_secs(5),
                write_coalesce: Duration::from_millis(10),
            },
            max_connections: None,
            compression: Some(Compression { min_size: 128 }),
            builtins: protocols::BUILTIN.iter().collect(),
            custom: Vec::new(),
            default_protocol: DefaultProtocol::Unset,
            settings: ProtocolSettings::default(),
            origins: OriginPolicy::default(),
            token_secret: None,
            token_public_key: None,
            broker: None,
            node_id: None,
            presence_ttl: Duration::from_secs(30),
            broker_check_interval: Duration::from_secs(5),
            static_dir: None,
            cache_control: "public, max-age=60".to_owned(),
            endpoints: None,
            workers: None,
            mistake: None,
        }
    }
}

impl HubBuilder {
    /// Largest message (after reassembly of its fragments) a client may send; a larger one
    /// closes the connection with 1009. Default 16 MiB (`--max-message-size`).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.session.max_message_size = bytes;
        self
    }

    /// Bytes that may wait for one connection's socket before the
    /// [slow-consumer policy](HubBuilder::slow_consumer) applies. Default 1 MiB
    /// (`--max-backlog`).
    pub fn max_backlog(mut self, bytes: usize) -> Self {
        self.session.max_backlog = bytes;
        self
    }

    /// What happens to a connection over its backlog: closed with 1008 (`Close`, the default),
    /// or skipped until it drains (`Drop`) (`--slow-consumer`).
    pub fn slow_consumer(mut self, policy: SlowConsumerPolicy) -> Self {
        self.session.slow_consumer = policy;
        self
    }

    /// How often an idle connection is pinged. Default 30 s (`--ping-interval`).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.session.ping_interval = interval;
        self
    }

    /// A connection that sends nothing (not even a pong) for this long is closed with 1001.
    /// Default 120 s (`--idle-timeout`).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.session.idle_timeout = timeout;
        self
    }

    /// How long a closing connection waits for the peer's close frame before its TCP
    /// connection is ended (at least 100 ms). Default 5 s (`--close-timeout`).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.session.close_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// Under heavy load (a worker delivering over 100,000 broadcast frames a second), a worker
    /// writes broadcasts to each socket at most once per this window, so that many small
    /// messages leave in few writes; below that load, at the end of the event-loop turn that
    /// queued them. Default 10 ms (`--write-coalesce`). At most one second (a longer window
    /// is taken as one second): a message may wait up to one and a half windows.
    pub fn write_coalesce(mut self, window: Duration) -> Self {
        self.session.write_coalesce = window.min(crate::config::MAX_WRITE_WINDOW);
        self
    }

    /// permessage-deflate (RFC 7692): with `Some`, offers are accepted and messages of at
    /// least `min_size` bytes are compressed (once per broadcast, for every member that
    /// negotiated it); `None` declines every offer. Default on, 128 bytes (`--compression`,
    /// `--compress-min`).
    pub fn compression(mut self, compression: Option<Compression>) -> Self {
        self.compression = compression;
        self
    }

    /// Most WebSocket connections open at once; an upgrade beyond it is answered 503 with
    /// `Retry-After`. Default: what the process's file-descriptor limit allows, less a reserve
    /// for plain HTTP (`--max-connections`).
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = Some(connections);
        self
    }

    /// Registers a protocol of the application's: a client offering `name` in
    /// `Sec-WebSocket-Protocol` gets a connection driven by what `factory` returns for it.
    /// Its rooms are this node's. Names are unique among all the hub's protocols, built-ins
    /// included (switch one off to reuse its name).
    pub fn protocol<P, F>(self, name: &str, factory: F) -> Self
    where
        P: Protocol,
        F: Fn(&ConnectionInfo) -> P + Send + Sync + 'static,
    {
        self.add_protocol(name, Scope::Node, factory)
    }

    /// Like [`HubBuilder::protocol`], for a protocol whose rooms span the cluster: with a
    /// [broker](HubBuilder::broker), a broadcast to one of its rooms reaches the members on
    /// every node.
    pub fn cluster_protocol<P, F>(self, name: &str, factory: F) -> Self
    where
        P: Protocol,
        F: Fn(&ConnectionInfo) -> P + Send + Sync + 'static,
    {
        self.add_protocol(name, Scope::Cluster, factory)
    }

    fn add_protocol<P, F>(mut self, name: &str, scope: Scope, factory: F) -> Self
    where
        P: Protocol,
        F: Fn(&ConnectionInfo) -> P + Send + Sync + 'static,
    {
        if !is_token(name) {
            return self.mistake(HubError::InvalidProtocolName(name.to_owned()));
        }
        if self.speaks(name) {
            return self.mistake(HubError::DuplicateProtocol(name.to_owned()));
        }
        self.custom.push(Custom {
            name: name.to_owned(),
            scope,
            open: Arc::new(move |info| Box::new(factory(info)) as Box<dyn Protocol>),
        });
        self
    }

    /// Switches a built-in protocol off (all are on by default): `echo`,
    /// `lws-mirror-protocol`, `dumb-increment-protocol`, `lws-status`, `chat`.
    pub fn without_builtin(mut self, name: &str) -> Self {
        if !protocols::BUILTIN.iter().any(|spec| spec.name == name) {
            return self.mistake(unknown_builtin(name));
        }
        self.builtins.retain(|spec| spec.name != name);
        self
    }

    /// Keeps exactly these built-in protocols on (an empty list: none).
    pub fn builtin_protocols(mut self, names: &[&str]) -> Self {
        if let Some(name) = names
            .iter()
            .find(|name| !protocols::BUILTIN.iter().any(|spec| spec.name == **name))
        {
            return self.mistake(unknown_builtin(name));
        }
        self.builtins = protocols::BUILTIN
            .iter()
            .filter(|spec| names.contains(&spec.name))
            .collect();
        self
    }

    /// The protocol of a client that offers none. Default: `echo` while it is on; otherwise
    /// such a client is refused (`--default-protocol`).
    pub fn default_protocol(mut self, name: &str) -> Self {
        self.default_protocol = DefaultProtocol::Named(name.to_owned());
        self
    }

    /// Refuses (400) a client that offers no protocol.
    pub fn no_default_protocol(mut self) -> Self {
        self.default_protocol = DefaultProtocol::None;
        self
    }

    /// Settings of the built-in protocols (the chat's limits, the increment's interval).
    /// Default: [`BuiltinSettings::default`](crate::BuiltinSettings), the binary's defaults.
    /// Its `tokens` field is ignored: the hub sets it from its own keys.
    pub fn builtin_settings(mut self, settings: ProtocolSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Which pages may open a WebSocket (the `Origin` check). Default: pages of the
    /// request's own host; a client without `Origin` (not a browser) is always allowed
    /// (`--allowed-origins`; parse the same list with `str::parse`).
    pub fn allowed_origins(mut self, origins: OriginPolicy) -> Self {
        self.origins = origins;
        self
    }

    /// Requires a connection token (JWT) signed with the HMAC secret in this file. Default:
    /// no tokens (`--auth-jwt-secret`).
    pub fn token_secret_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_secret = Some(path.into());
        self
    }

    /// Requires a connection token (JWT) signed by the key in this PEM file (RSA or EC).
    /// Default: no tokens (`--auth-jwt-public-key`).
    pub fn token_public_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_public_key = Some(path.into());
        self
    }

    /// Joins a cluster through this Redis (`redis://HOST:PORT[/DB]`): cluster-wide rooms and
    /// [`HubHandle::publish`](crate::HubHandle::publish) reach every node. Default: a single
    /// node (`--broker`).
    pub fn broker(mut self, url: impl Into<String>) -> Self {
        self.broker = Some(url.into());
        self
    }

    /// This node's name in the cluster. Default: 8 random hex digits (`--node-id`).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(id.into());
        self
    }

    /// A node silent this long is taken for gone by the others (at least 1 s). Default 30 s
    /// (`--presence-ttl`).
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How often the node checks its broker subscription end to end (at least 100 ms).
    /// Default 5 s (`--broker-check-interval`).
    pub fn broker_check_interval(mut self, interval: Duration) -> Self {
        self.broker_check_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// Serves the files of this directory (ranges, conditional requests, directory indexes)
    /// for every path no other route of the application claims. Default: off in an
    /// embedding; the binary serves `./static` (`--static-dir`).
    pub fn static_files(mut self, dir: impl Into<PathBuf>) -> Self {
        self.static_dir = Some(dir.into());
        self
    }

    /// The `Cache-Control` of static files. Default `public, max-age=60` (`--cache-control`).
    pub fn cache_control(mut self, value: impl Into<String>) -> Self {
        self.cache_control = value.into();
        self
    }

    /// Serves the operational endpoints (liveness, readiness, status JSON, Prometheus
    /// metrics) at these paths. Default: off in an embedding; the binary serves
    /// [`Endpoints::default`](crate::Endpoints).
    pub fn endpoints(mut self, endpoints: Endpoints) -> Self {
        self.endpoints = Some(endpoints);
        self
    }

    /// The worker count the status endpoint and the metrics report (the application's
    /// `HttpServer` decides the real one). Default: one per core, as actix-web's own default.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    fn mistake(mut self, mistake: HubError) -> Self {
        self.mistake.get_or_insert(mistake);
        self
    }

    fn speaks(&self, name: &str) -> bool {
        self.builtins.iter().any(|spec| spec.name == name)
            || self.custom.iter().any(|custom| custom.name == name)
    }

    /// Checks the settings without building anything: the protocols, the default protocol,
    /// the static directory and the token keys. [`HubBuilder::build`] checks them too; this is
    /// for a program that must report mistakes before it goes to the background.
    pub fn check(&self) -> Result<(), HubError> {
        self.checked().map(|_| ())
    }

    /// Everything [`HubBuilder::build`] needs that can fail without side effects.
    fn checked(&self) -> Result<Checked, HubError> {
        if let Some(mistake) = &self.mistake {
            return Err(copy_of(mistake));
        }
        let count = self.builtins.len() + self.custom.len();
        if count > MAX_PROTOCOLS {
            return Err(HubError::TooManyProtocols {
                count,
                max: MAX_PROTOCOLS,
            });
        }
        let default = match &self.default_protocol {
            DefaultProtocol::Unset => self.speaks("echo").then(|| "echo".to_owned()),
            DefaultProtocol::Named(name) if self.speaks(name) => Some(name.clone()),
            DefaultProtocol::Named(name) => {
                return Err(HubError::UnknownDefaultProtocol {
                    name: name.clone(),
                    known: self.names(),
                })
            }
            DefaultProtocol::None => None,
        };
        let static_files = self
            .static_dir
            .as_deref()
            .map(|dir| http::StaticFiles::open(dir, &self.cache_control))
            .transpose()?;
        let tokens = TokenVerifier::from_files(
            self.token_secret.as_deref(),
            self.token_public_key.as_deref(),
        )?;
        Ok(Checked {
            default,
            static_files,
            tokens,
        })
    }

    fn names(&self) -> String {
        self.builtins
            .iter()
            .map(|spec| spec.name)
            .chain(self.custom.iter().map(|custom| custom.name.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Builds the hub: installs its protocols and joins the broker, if any.
    ///
    /// One hub per process: the connection registry, the metrics and the broker are
    /// process-wide (every worker thread's shard must find the others, and a protocol's rooms
    /// are found by name), so a second `build` in the same process fails with
    /// [`HubError::AlreadyBuilt`]. Build one and clone it (or its [`HubHandle`](crate::HubHandle)).
    pub fn build(self) -> Result<Hub, HubError> {
        let checked = self.checked()?;
        if BUILT.swap(true, Ordering::AcqRel) {
            return Err(HubError::AlreadyBuilt);
        }
        let table: Vec<ProtocolSpec> = self
            .builtins
            .iter()
            .map(|spec| ProtocolSpec {
                name: spec.name,
                open: spec.open.clone(),
                publish: spec.publish,
                scope: spec.scope,
                room_param: spec.room_param,
                compression: spec.compression,
            })
            .chain(self.custom.into_iter().map(|custom| ProtocolSpec {
                // Names live as long as the process (connections and rooms hold them), like
                // the built-ins'; this runs once per process.
                name: Box::leak(custom.name.into_boxed_str()),
                open: Opener::Custom(custom.open),
                publish: None,
                scope: custom.scope,
                room_param: None,
                compression: true,
            }))
            .collect();
        protocols::install(table).map_err(|_| HubError::AlreadyBuilt)?;
        let default_protocol = checked.default.as_deref().and_then(protocols::find);

        let node_id = self
            .node_id
            .unwrap_or_else(|| broker::new_epoch()[..8].to_owned());
        match &self.broker {
            Some(url) => {
                let redis = RedisBroker::start(RedisSettings {
                    url: url.clone(),
                    node_id: node_id.clone(),
                    presence_ttl: self.presence_ttl,
                    check_interval: self.broker_check_interval,
                    history: self.settings.chat_history,
                })?;
                broker::install(redis, node_id);
            }
            None => broker::install(Arc::new(broker::Local), node_id),
        }

        let fd_limit = lifecycle::fd_limit();
        let max_sessions = self.max_connections.unwrap_or_else(|| {
            let connections = lifecycle::connections_for_fd_limit(fd_limit);
            usize::try_from(lifecycle::sessions_for_connections(connections)).unwrap_or(usize::MAX)
        });
        let slots = SessionSlots::new(max_sessions);
        let workers = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let state = Arc::new(ServerState::new(workers, fd_limit, slots.clone()));
        let settings = ProtocolSettings {
            tokens: checked.tokens.clone(),
            ..self.settings
        };
        let access = Access {
            origins: self.origins,
            tokens: checked.tokens.clone(),
        };
        let handshake = ws::Handshake::new(
            default_protocol,
            Arc::new(self.session),
            settings,
            access,
            slots,
            self.compression,
        );
        Ok(Hub {
            inner: Arc::new(Inner {
                handshake: web::Data::new(handshake),
                metrics: web::Data::new(http::metrics::registry(state.clone())),
                state,
                static_files: checked.static_files.map(web::Data::new),
                endpoints: self.endpoints,
                tokens: checked.tokens,
            }),
        })
    }
}

/// What [`HubBuilder::checked`] found.
struct Checked {
    default: Option<String>,
    static_files: Option<http::StaticFiles>,
    tokens: Option<Arc<TokenVerifier>>,
}

/// The mistakes a builder method records are all plain values.
fn copy_of(mistake: &HubError) -> HubError {
    match mistake {
        HubError::InvalidProtocolName(name) => HubError::InvalidProtocolName(name.clone()),
        HubError::DuplicateProtocol(name) => HubError::DuplicateProtocol(name.clone()),
        HubError::UnknownBuiltin { name, known } => HubError::UnknownBuiltin {
            name: name.clone(),
            known: known.clone(),
        },
        other => unreachable!("builder methods record no {other:?}"),
    }
}

fn unknown_builtin(name: &str) -> HubError {
    HubError::UnknownBuiltin {
        name: name.to_owned(),
        known: protocols::BUILTIN
            .iter()
            .map(|spec| spec.name)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A `Sec-WebSocket-Protocol` value: an HTTP token (RFC 6455 §4.1, RFC 2616 §2.2).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Silent;
    impl Protocol for Silent {
        fn on_message(
            &mut self,
            _: &mut switchboard_actors::protocol::ProtocolCx<'_>,
            _: switchboard_actors::Message,
        ) {
        }
    }

    #[test]
    fn protocol_names_are_unique_and_tokens() {
        let twice = HubBuilder::default()
            .protocol("mine", |_| Silent)
            .protocol("mine", |_| Silent);
        assert!(matches!(twice.check(), Err(HubError::DuplicateProtocol(name)) if name == "mine"));
        let builtin = HubBuilder::default().protocol("echo", |_| Silent);
        assert!(
            matches!(builtin.check(), Err(HubError::DuplicateProtocol(name)) if name == "echo")
        );
        let freed = HubBuilder::default()
            .without_builtin("echo")
            .protocol("echo", |_| Silent);
        assert!(freed.check().is_ok());
        for bad in ["", "a b", "a,b", "caf\u{e9}", "x/y"] {
            let builder = HubBuilder::default().protocol(bad, |_| Silent);
            assert!(
                matches!(builder.check(), Err(HubError::InvalidProtocolName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn builtins_are_switched_off_by_name() {
        let unknown = HubBuilder::default().without_builtin("nope");
        assert!(
            matches!(unknown.check(), Err(HubError::UnknownBuiltin { name, .. }) if name == "nope")
        );
        let some = HubBuilder::default().builtin_protocols(&["chat", "echo"]);
        assert_eq!(some.names(), "echo, chat");
        let none = HubBuilder::default()
            .builtin_protocols(&[])
            .protocol("mine", |_| Silent);
        assert_eq!(none.names(), "mine");
    }

    #[test]
    fn the_default_protocol_must_be_spoken() {
        let without_echo = HubBuilder::default().without_builtin("echo");
        assert!(matches!(
            without_echo.checked(),
            Ok(Checked { default: None, .. })
        ));
        let named = HubBuilder::default()
            .without_builtin("echo")
            .default_protocol("echo");
        assert!(matches!(
            named.check(),
            Err(HubError::UnknownDefaultProtocol { name, .. }) if name == "echo"
        ));
        let with_echo = HubBuilder::default()
            .checked()
            .map(|checked| checked.default);
        assert_eq!(with_echo.ok().flatten().as_deref(), Some("echo"));
    }
}
