//! Boot and shutdown: storage, cluster services, plugins, server; then a graceful stop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use confab_sdk::async_trait;
use confab_sdk::auth::SharedAuthenticator;
use confab_sdk::clock::{SharedClock, SystemClock};
use confab_sdk::docs::{ApiDocument, AsyncApiRenderer};
use confab_sdk::health::HealthCheck;
use confab_sdk::http::CookieOrigins;
use confab_sdk::plugin::{Contributions, DynPlugin};
use confab_sdk::realtime::SharedEmitter;
use confab_sdk::services::Services;
use confab_sdk::storage::{CommitObserver, DeploymentSecret, SharedMessageStore, StorageError, Stores};
use salvo::conn::tcp::TcpAcceptor;
use salvo::fuse::FuseConfig;
use salvo::prelude::*;
use socketioxide::SocketIo;
use tokio::sync::watch;
use utoipa::openapi::OpenApi;

use crate::cluster::{ClusterIo, SocketLayer};
use crate::config::Config;
use crate::host::{self, HostError};
use crate::metrics::Metrics;
use crate::server::socket::SocketHost;
use crate::server::{self, HttpParts};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Plugins(#[from] HostError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("{0}")]
    Other(String),
}

/// The exit status of a configuration mistake.
pub const EXIT_CONFIG: u8 = 2;

impl AppError {
    /// Configuration mistakes exit with [`EXIT_CONFIG`] like a bad config file; the rest with 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Plugins(_) => EXIT_CONFIG,
            _ => 1,
        }
    }
}

struct StorageCheck(SharedMessageStore);

#[async_trait]
impl HealthCheck for StorageCheck {
    fn name(&self) -> &str {
        "storage"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

/// Everything booted short of serving: storage, services, built plugins, the document.
pub struct Booted {
    pub store: Stores,
    pub io: ClusterIo,
    pub socket_layer: SocketLayer,
    /// `/ready`'s check of the cluster backend (Redis), if it has one.
    pub cluster_check: Option<Arc<dyn HealthCheck>>,
    pub contrib: Contributions,
    pub document: OpenApi,
    pub metrics: Arc<Metrics>,
    /// Changes each time the cluster backend is back after an outage.
    pub recoveries: Option<watch::Receiver<u64>>,
    /// The auth plugin's, if it is enabled: re-checks sockets after an outage.
    pub authenticator: Option<SharedAuthenticator>,
    /// The docs plugin's, if it is enabled: the AsyncAPI form of `document`.
    pub asyncapi: Option<AsyncApiRenderer>,
}

/// Opens the configured storage, creates the cluster services and builds the enabled plugins.
/// `run` serves what this returns; `confab openapi` only prints its document.
pub async fn boot(config: &Config, plugins: &[Box<dyn DynPlugin>]) -> Result<Booted, AppError> {
    boot_with(config, plugins, None).await
}

/// `boot`; `throwaway` is an SQLite file used, with the in-process cluster backend,
/// whatever the config says (for `document`).
async fn boot_with(
    config: &Config,
    plugins: &[Box<dyn DynPlugin>],
    throwaway: Option<&std::path::Path>,
) -> Result<Booted, AppError> {
    // Check the plugin plan before touching storage, so a bad plan fails fast.
    host::plan(config, plugins)?;
    let metrics = Arc::new(Metrics::default());
    let clock: SharedClock = Arc::new(SystemClock);
    let observer_metrics = metrics.clone();
    let observer: CommitObserver = Arc::new(move |n, d| observer_metrics.commit(n, d));
    let store = match throwaway {
        Some(path) => crate::storage::open_throwaway(&config.storage, path, clock.clone()).await?,
        None => crate::storage::open(&config.storage, clock.clone(), observer).await?,
    };
    tracing::info!(storage = %config.storage.describe(), "storage ready");
    let users = store.users.clone();
    let messages = store.messages.clone();
    let secret = match users.deployment_secret().await {
        Ok(s) => DeploymentSecret(s),
        Err(e) => {
            store.messages.close().await;
            return Err(AppError::Other(format!("storage: {e}")));
        }
    };

    let sock = &config.server.socket;
    let builder = SocketIo::builder()
        .max_payload(sock.max_payload)
        // Bounded as they arrive, before the Socket.IO CONNECT: tungstenite's own limits
        // (64 MiB messages) let an anonymous client hold that much per socket.
        .ws_max_message_size(sock.max_payload as usize)
        .ws_max_frame_size(sock.max_payload as usize)
        .connect_timeout(Duration::from_secs(sock.connect_timeout_secs))
        .max_buffer_size(sock.max_buffer_size)
        .ws_read_buffer_size(sock.ws_read_buffer_size)
        .ping_interval(Duration::from_secs(sock.ping_interval_secs))
        .ping_timeout(Duration::from_secs(sock.ping_timeout_secs));
    let started = crate::cluster::start(
        &config.cluster,
        throwaway.is_some(),
        builder,
        clock.clone(),
        metrics.live.clone(),
        store.state.clone(),
    )
    .await;
    let cluster = match started {
        Ok(c) => c,
        Err(e) => {
            store.messages.close().await;
            return Err(AppError::Other(e));
        }
    };
    let emitter: SharedEmitter = cluster.emitter;

    let mut services = Services::default();
    let document = ApiDocument::default();
    let provided = [
        services.provide(users, "kernel"),
        services.provide(messages, "kernel"),
        services.provide(clock, "kernel"),
        services.provide(cluster.sessions, "kernel"),
        services.provide(cluster.revocations, "kernel"),
        services.provide(cluster.refresh, "kernel"),
        services.provide(cluster.presence, "kernel"),
        services.provide(cluster.ratelimit, "kernel"),
        services.provide(emitter, "kernel"),
        services.provide(document.clone(), "kernel"),
        services.provide(secret, "kernel"),
        services.provide(cookie_origins(config), "kernel"),
    ];
    if provided.iter().any(Result::is_err) {
        return Err(AppError::Other("a kernel service was provided twice".into()));
    }
    let (contrib, names) = host::build(config, plugins, &mut services)?;
    let authenticator = services.get::<SharedAuthenticator>();
    let asyncapi = services.get::<AsyncApiRenderer>();
    tracing::info!(plugins = ?names, "plugins built");
    let assembled = crate::openapi::assemble(
        crate::openapi::kernel_fragment(config.server.metrics),
        &contrib.openapi,
        &contrib.document_passes,
    );
    document.set(assembled.clone());
    Ok(Booted {
        store,
        io: cluster.io,
        socket_layer: cluster.layer,
        cluster_check: cluster.health,
        contrib,
        document: assembled,
        metrics,
        recoveries: cluster.recoveries,
        authenticator,
        asyncapi,
    })
}

/// `server.cors.allowed_origins` without the wildcard: the origins that may use cookies.
fn cookie_origins(config: &Config) -> CookieOrigins {
    let listed = config.server.cors.allowed_origins.iter().filter(|o| o.as_str() != "*");
    CookieOrigins(Arc::new(listed.cloned().collect()))
}

/// The OpenAPI document of this configuration (and the docs plugin's AsyncAPI renderer,
/// if it is enabled), built without serving: plugins are built
/// against a throwaway database (and in-process cluster services: the document does not
/// depend on the backend) so that what is printed is exactly what would be served.
pub async fn document(
    config: &Config,
    plugins: &[Box<dyn DynPlugin>],
) -> Result<(OpenApi, Option<AsyncApiRenderer>), AppError> {
    let dir = std::env::temp_dir().join(format!("confab-doc-{}", confab_sdk::ids::random_token()));
    let booted = boot_with(config, plugins, Some(&dir.join("confab.db"))).await;
    let booted = match booted {
        Ok(mut b) => {
            for (_, stop) in std::mem::take(&mut b.contrib.shutdown) {
                stop().await;
            }
            b.store.messages.close().await;
            Ok(b)
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    booted.map(|b| (b.document, b.asyncapi))
}

/// Serves until SIGINT or SIGTERM, then stops gracefully within `shutdown_timeout_secs`.
pub async fn run(config: Config, plugins: Vec<Box<dyn DynPlugin>>) -> Result<(), AppError> {
    let Booted {
        store,
        io,
        socket_layer,
        cluster_check,
        contrib,
        metrics,
        recoveries,
        authenticator,
        ..
    } = boot(&config, &plugins).await?;
    let messages = store.messages.clone();
    let plugin_shutdown = contrib.shutdown;
    let sock = &config.server.socket;
    io.install(Arc::new(SocketHost {
        middleware: contrib.connect_middleware,
        events: contrib
            .events
            .into_iter()
            .map(|(name, handler)| {
                let stats = metrics.event_stats(&name);
                (name, (handler, stats))
            })
            .collect::<HashMap<_, _>>(),
        guards: contrib.event_guards,
        on_connect: contrib.on_connect,
        on_disconnect: contrib.on_disconnect,
        metrics: metrics.clone(),
        max_in_flight: sock.max_in_flight,
        deadlines: confab_sdk::deadlines::Deadlines::start(),
    }))
    .await
    .map_err(AppError::Other)?;

    let mut checks: Vec<Arc<dyn HealthCheck>> = vec![Arc::new(StorageCheck(messages.clone()))];
    checks.extend(cluster_check);
    checks.extend(contrib.health);
    let draining = Arc::new(AtomicBool::new(false));
    let service = server::service(
        &config,
        HttpParts {
            routes: contrib.routes,
            hoops: contrib.hoops,
            checks,
            metrics: metrics.clone(),
            draining: draining.clone(),
            socket_route: socket_layer.route(),
            exposed_headers: contrib.exposed_headers,
        },
    );

    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| AppError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| AppError::Bind {
        addr: addr.clone(),
        source,
    })?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux. Without it, an ack
    // written right after a `message_sent` frame waits for the client's delayed ACK.
    if let Err(e) = socket2::SockRef::from(&listener).set_tcp_nodelay(true) {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY");
    }
    let acceptor = TcpAcceptor::try_from(listener).map_err(|source| AppError::Bind { addr, source })?;
    // The caps on open connections and the timeouts of every connection (slow headers and
    // bodies, idle connections). The idle timeout is above the Socket.IO heartbeat, so live
    // WebSockets and polls held for a ping interval never trip it.
    let server_cfg = &config.server;
    let timeouts = FuseConfig::disabled()
        .with_http1_header_timeout(Duration::from_secs(server_cfg.header_timeout_secs))
        .with_connection_idle_timeout(Duration::from_secs(server_cfg.idle_timeout_secs))
        .with_request_body_timeout(Duration::from_secs(server_cfg.body_timeout_secs))
        .with_write_stall_timeout(Duration::from_secs(server_cfg.write_stall_timeout_secs));
    let edge = server::edge::Edge::new(
        server_cfg.max_connections,
        server_cfg.max_connections_per_ip,
        Arc::new(server::edge::TrustedProxies::new(&server_cfg.trusted_proxies)),
        timeouts,
        metrics.clone(),
    );
    let server = Server::new(acceptor).fuse_policy(edge);
    let handle = server.handle();
    let metrics_listener = match (&server_cfg.metrics_addr, server_cfg.metrics) {
        (addr, true) if !addr.is_empty() => Some(serve_metrics(addr, metrics.clone()).await?),
        _ => None,
    };
    tracing::info!(addr = %local, profile = %config.profile.name, "listening");

    // The whole shutdown fits in the deadline: sockets and HTTP get at most two fifths
    // each, queued storage writes whatever is left (at least one fifth).
    let io = Arc::new(io);
    // A node cut off from Redis missed the revocations and the stream events other nodes
    // published: first the revoked sockets end (with `session_ended`), then the others
    // close so that their clients sync.
    let rechecker = recoveries.map(|mut recoveries| {
        tokio::spawn({
            let (io, metrics) = (io.clone(), metrics.clone());
            async move {
                while recoveries.changed().await.is_ok() {
                    if let Some(auth) = &authenticator {
                        io.recheck(auth).await;
                    }
                    io.resync(&metrics.live);
                }
            }
        })
    });

    let deadline = Duration::from_secs(config.server.shutdown_timeout_secs);
    let signalled = Arc::new(std::sync::OnceLock::new());
    let stopper = tokio::spawn({
        let signalled = signalled.clone();
        async move {
            wait_for_signal().await;
            let _ = signalled.set(Instant::now());
            tracing::info!("shutting down");
            draining.store(true, Ordering::Relaxed);
            tokio::spawn(async {
                wait_for_signal().await;
                tracing::warn!("second signal: exiting without finishing the shutdown");
                std::process::exit(1);
            });
            // Close sockets first: their connections would otherwise keep the server draining.
            if tokio::time::timeout(deadline * 2 / 5, io.close()).await.is_err() {
                tracing::warn!("sockets did not close in time");
            }
            handle.stop_graceful(deadline * 2 / 5);
        }
    });
    let served = server.try_serve(service).await;
    stopper.abort();
    if let Some(r) = rechecker {
        r.abort();
    }
    if let Some(m) = metrics_listener {
        m.abort();
    }
    let left = signalled
        .get()
        .map_or(deadline, |t: &Instant| deadline.saturating_sub(t.elapsed()));
    // In-flight requests are done; now the plugins' background work and queued storage
    // writes finish, side by side, within what is left of the deadline.
    let plugins = futures_util::future::join_all(plugin_shutdown.into_iter().map(|(plugin, hook)| async move {
        hook().await;
        tracing::debug!(plugin, "plugin stopped");
    }));
    let stopping = async { tokio::join!(plugins, store.messages.close()) };
    if tokio::time::timeout(left, stopping).await.is_err() {
        tracing::error!("storage writes or the plugins' background work did not finish within the shutdown deadline");
    }
    served.map_err(|e| AppError::Other(format!("server: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

/// `/metrics` on a listener of its own (`server.metrics_addr`), e.g. loopback only.
async fn serve_metrics(addr: &str, metrics: Arc<Metrics>) -> Result<tokio::task::JoinHandle<()>, AppError> {
    let bind = |source| AppError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let acceptor = TcpAcceptor::try_from(listener).map_err(bind)?;
    tracing::info!(addr = %local, "metrics listening");
    let service = server::metrics_service(metrics);
    Ok(tokio::spawn(async move {
        if let Err(e) = Server::new(acceptor)
            .fuse_config(FuseConfig::default())
            .try_serve(service)
            .await
        {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    }))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
