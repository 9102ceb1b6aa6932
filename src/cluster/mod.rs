//! Cluster backends: state shared by every node (sessions, revoked tokens, presence) and
//! Socket.IO fan-out. `local` serves a single node from process memory; `redis` serves a
//! cluster. Both pass the suites in [`contract`]. See `docs/cluster.md`.

pub mod local;
pub mod persist;
pub mod ratelimit;
pub mod redis;
pub mod refresh_local;

use std::sync::Arc;
use std::time::Duration;

use confab_sdk::auth::SharedAuthenticator;
use confab_sdk::clock::SharedClock;
use confab_sdk::cluster::{SharedPresenceStore, SharedRefreshStore, SharedRevocationStore, SharedSessionStore};
use confab_sdk::health::HealthCheck;
use confab_sdk::ratelimit::SharedRateLimitStore;
use confab_sdk::realtime::SharedEmitter;
use confab_sdk::storage::{SharedStateStore, StorageError};
use socketioxide::layer::SocketIoLayer;
use socketioxide::{SocketIo, SocketIoBuilder};
use socketioxide_redis::{RedisAdapterConfig, RedisAdapterCtr};
use tokio::sync::watch;

use self::local::{LocalPresenceStore, LocalRevocationStore, LocalSessionStore};
use self::ratelimit::{LocalRateLimitStore, RedisRateLimitStore};
use self::redis::{
    RedisCheck, RedisCluster, RedisEmitter, RedisPresenceStore, RedisRefreshStore, RedisRevocationStore,
    RedisSessionStore, SioAdapter, StreamRelay,
};
use self::refresh_local::LocalRefreshStore;
use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use crate::server::socket::{AdapterEmitter, SocketHost};
use crate::server::stream::{StreamGate, resync_local};

/// The Socket.IO server, on the adapter the backend chose.
pub enum ClusterIo {
    Local(SocketIo),
    Redis(SocketIo<SioAdapter>),
}

/// The Socket.IO tower layer that goes with [`ClusterIo`].
pub enum SocketLayer {
    Local(SocketIoLayer),
    Redis(SocketIoLayer<SioAdapter>),
}

impl ClusterIo {
    /// Installs the `/` namespace; with Redis, waits until the adapter has subscribed.
    pub async fn install(&self, host: Arc<SocketHost>) -> Result<(), String> {
        match self {
            ClusterIo::Local(io) => {
                crate::server::socket::install(io, host);
                Ok(())
            }
            ClusterIo::Redis(io) => crate::server::socket::install(io, host)
                .await
                .map_err(|e| format!("cluster.redis: the socket.io adapter could not subscribe: {e}")),
        }
    }

    /// Ends every socket of this node whose credential no longer stands (see
    /// [`crate::server::lifecycle::recheck`]).
    pub async fn recheck(&self, auth: &SharedAuthenticator) {
        match self {
            ClusterIo::Local(io) => crate::server::lifecycle::recheck(io, auth).await,
            ClusterIo::Redis(io) => crate::server::lifecycle::recheck(io, auth).await,
        }
    }

    /// After an outage of the backend: closes every socket of this node, whose clients
    /// reconnect and sync the cross-node events this node could not hear meanwhile.
    pub fn resync(&self, metrics: &Metrics) {
        if let ClusterIo::Redis(io) = self {
            let closed = resync_local(io, metrics, None);
            tracing::info!(
                closed,
                "fan-out is back: closed this node's sockets so that their clients sync"
            );
        }
    }

    /// Closes every socket of this node.
    pub async fn close(&self) {
        match self {
            ClusterIo::Local(io) => io.close().await,
            ClusterIo::Redis(io) => io.close().await,
        }
    }
}

/// The cluster services of one node.
pub struct Cluster {
    pub sessions: SharedSessionStore,
    pub revocations: SharedRevocationStore,
    pub refresh: SharedRefreshStore,
    pub presence: SharedPresenceStore,
    pub ratelimit: SharedRateLimitStore,
    pub emitter: SharedEmitter,
    pub io: ClusterIo,
    pub socket_layer: SocketLayer,
    /// `/ready`'s check of the backend, if it can fail.
    pub health: Option<Arc<dyn HealthCheck>>,
    /// Changes each time the backend is reachable again after an outage (Redis).
    pub recoveries: Option<watch::Receiver<u64>>,
}

/// Starts the configured backend (`local_only` forces the in-process one, for building
/// the API document without a Redis) and the Socket.IO server on its adapter. The
/// in-process backend keeps sessions, revocations and refresh families in `state`.
pub async fn start(
    config: &ClusterConfig,
    local_only: bool,
    builder: SocketIoBuilder,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    state: SharedStateStore,
) -> Result<Cluster, String> {
    if config.backend != "redis" || local_only {
        let restore_failed = |e: StorageError| format!("storage: cannot restore the sessions and revocations: {e}");
        let sessions = LocalSessionStore::restore(clock.clone(), state.clone()).await;
        let revocations = LocalRevocationStore::restore(clock.clone(), state.clone()).await;
        let refresh = LocalRefreshStore::restore(clock.clone(), state).await;
        let (layer, io) = builder.build_layer();
        return Ok(Cluster {
            sessions: Arc::new(sessions.map_err(restore_failed)?),
            revocations: Arc::new(revocations.map_err(restore_failed)?),
            refresh: Arc::new(refresh.map_err(restore_failed)?),
            presence: Arc::new(LocalPresenceStore::new(clock.clone())),
            ratelimit: Arc::new(LocalRateLimitStore::new(clock)),
            emitter: Arc::new(AdapterEmitter::new(io.clone(), metrics)),
            io: ClusterIo::Local(io),
            socket_layer: SocketLayer::Local(layer),
            health: None,
            recoveries: None,
        });
    }
    let cfg = &config.redis;
    let cluster = RedisCluster::connect(cfg).await?;
    let adapter = RedisAdapterConfig::new()
        .with_prefix(cluster.channel_prefix())
        .with_request_timeout(Duration::from_millis(cfg.command_timeout_ms))
        // Cross-node emits queue here while the adapter hands them to local sockets.
        .with_stream_buffer(16 * 1024);
    let (layer, io) = builder
        .with_adapter::<SioAdapter>(RedisAdapterCtr::new_with_driver(cluster.bus(), adapter))
        .build_layer();
    let ttl = Duration::from_secs(cfg.heartbeat_ttl_secs);
    let presence = RedisPresenceStore::start(cluster.clone(), clock.clone(), ttl)
        .await
        .map_err(|e| format!("cluster.redis: cannot register this node: {e}"))?;
    let gate = StreamGate::local(io.clone(), metrics.clone());
    let relay = StreamRelay::start(
        cluster.bus(),
        &cluster.key(""),
        cluster.health(),
        io.clone(),
        gate.clone(),
        metrics.clone(),
    )
    .await?;
    tracing::info!(key_prefix = %cfg.key_prefix, heartbeat_ttl_secs = cfg.heartbeat_ttl_secs, "cluster ready (redis)");
    Ok(Cluster {
        sessions: Arc::new(RedisSessionStore::new(cluster.clone())),
        refresh: Arc::new(RedisRefreshStore::new(cluster.clone())),
        revocations: Arc::new(RedisRevocationStore::new(
            cluster.clone(),
            clock,
            cfg.revocations_fail_open,
        )),
        presence: Arc::new(presence),
        ratelimit: Arc::new(RedisRateLimitStore::new(cluster.clone())),
        emitter: Arc::new(RedisEmitter {
            io: io.clone(),
            metrics,
            health: cluster.health(),
            gate,
            relay,
        }),
        io: ClusterIo::Redis(io),
        socket_layer: SocketLayer::Redis(layer),
        health: Some(Arc::new(RedisCheck(cluster.health()))),
        recoveries: Some(cluster.health().recoveries()),
    })
}

/// The shared contract suites for the cluster traits. A backend's tests call them with the
/// store, the clock the store expires by, and a way to move that clock forward: the local
/// backend advances an `OffsetClock`; a Redis backend, whose keys expire in real time,
/// sleeps. Durations are whole seconds with half-second margins so that both work.
#[cfg(test)]
pub mod contract {
    use std::sync::Arc;

    use confab_sdk::clock::SharedClock;
    use confab_sdk::cluster::{
        PresenceState, PresenceStore, RefreshStore, RevocationStore, Rotation, SessionData, SessionStore,
        new_refresh_token,
    };
    use confab_sdk::futures_util::future::BoxFuture;
    use confab_sdk::ratelimit::{Rate, RateLimitStore};

    /// Moves the store's time forward by the given milliseconds.
    pub type Advance = Arc<dyn Fn(u64) -> BoxFuture<'static, ()> + Send + Sync>;

    fn alice() -> SessionData {
        SessionData {
            user_id: "0123456789abcdef01234567".into(),
            username: "alice".into(),
            // The contract keeps the login's token with the session.
            token: Some(("0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(), 1_900_000_000)),
            family: Some("a1b2c3d4e5f60718293a4b5c6d7e8f90".into()),
        }
    }

    pub async fn session_store(store: &dyn SessionStore, advance: Advance) {
        // Create, read, delete; ids are fresh and unguessable.
        let a = store.create(alice(), 60, 60).await.unwrap();
        let b = store.create(alice(), 60, 60).await.unwrap();
        assert_ne!(a, b, "every session gets a fresh id");
        assert!(a.len() >= 32, "session ids carry at least 128 bits: {a}");
        assert_eq!(store.get(&a).await.unwrap(), Some(alice()));
        assert_eq!(store.get("no-such-session").await.unwrap(), None);
        store.delete(&a).await.unwrap();
        assert_eq!(store.get(&a).await.unwrap(), None);
        assert_eq!(
            store.get(&b).await.unwrap(),
            Some(alice()),
            "deleting one session keeps the others"
        );
        store.delete(&a).await.unwrap();
        store.delete("no-such-session").await.unwrap();

        // Idle timeout: each hit extends it.
        let idle = store.create(alice(), 60, 2).await.unwrap();
        advance(1_500).await;
        assert!(
            store.get(&idle).await.unwrap().is_some(),
            "alive within the idle timeout"
        );
        advance(1_500).await;
        assert!(
            store.get(&idle).await.unwrap().is_some(),
            "a hit extends the idle timeout"
        );
        advance(2_500).await;
        assert_eq!(store.get(&idle).await.unwrap(), None, "expired after the idle timeout");

        // Absolute lifetime: hits never extend past it.
        let abs = store.create(alice(), 3, 2).await.unwrap();
        advance(1_500).await;
        assert!(store.get(&abs).await.unwrap().is_some());
        advance(1_000).await;
        assert!(store.get(&abs).await.unwrap().is_some());
        advance(1_000).await;
        assert_eq!(
            store.get(&abs).await.unwrap(),
            None,
            "expired after the absolute lifetime"
        );
    }

    fn next_of(r: Rotation) -> String {
        match r {
            Rotation::Rotated { next, .. } => next,
            other => panic!("expected a rotation, got {other:?}"),
        }
    }

    /// Rotation, the grace (on `other`, a second node, if given), reuse detection that
    /// revokes the family, explicit revocation, and the absolute lifetime.
    pub async fn refresh_store(store: &dyn RefreshStore, other: Option<&dyn RefreshStore>, advance: Advance) {
        let other = other.unwrap_or(store);
        let (first, grant) = store.issue("u1", "alice", 60).await.unwrap();
        assert_eq!((grant.user_id.as_str(), grant.username.as_str()), ("u1", "alice"));
        assert!(first.starts_with(&format!("{}.", grant.family)), "{first}");
        let second = match store.rotate(&first, 1).await.unwrap() {
            Rotation::Rotated { next, grant: g } => {
                assert_eq!(g, grant);
                next
            }
            other => panic!("{other:?}"),
        };
        assert_ne!(second, first, "every use rotates");
        // Two tabs at once: within the grace the same successor, from any node.
        assert_eq!(next_of(other.rotate(&first, 1).await.unwrap()), second);
        let third = next_of(other.rotate(&second, 1).await.unwrap());
        assert_eq!(store.rotate("garbage", 1).await.unwrap(), Rotation::Invalid);
        let forged = new_refresh_token(&grant.family);
        assert_eq!(
            store.rotate(&forged, 1).await.unwrap(),
            Rotation::Invalid,
            "an unknown secret"
        );

        // After the grace, the spent token again: theft. The family ends.
        advance(1_500).await;
        assert_eq!(
            store.rotate(&first, 1).await.unwrap(),
            Rotation::Reused {
                family: grant.family.clone()
            }
        );
        assert_eq!(
            other.rotate(&third, 1).await.unwrap(),
            Rotation::Invalid,
            "the family is revoked"
        );

        let (live, g) = store.issue("u2", "bob", 60).await.unwrap();
        store.revoke_family(&g.family).await.unwrap();
        assert_eq!(
            other.rotate(&live, 1).await.unwrap(),
            Rotation::Invalid,
            "revoked explicitly"
        );
        store.revoke_family("no-such-family").await.unwrap();

        let (short, _) = store.issue("u3", "carol", 1).await.unwrap();
        advance(1_500).await;
        assert_eq!(
            store.rotate(&short, 1).await.unwrap(),
            Rotation::Invalid,
            "past the absolute lifetime"
        );
    }

    pub async fn revocation_store(store: &dyn RevocationStore, clock: SharedClock, advance: Advance) {
        let now_secs = || clock.now_millis() / 1000;
        assert!(!store.is_revoked("never").await.unwrap());

        // Remembered until the given time, then forgotten.
        store.revoke("j1", now_secs() + 2).await.unwrap();
        assert!(store.is_revoked("j1").await.unwrap());
        assert!(!store.is_revoked("j2").await.unwrap(), "only the revoked id");
        assert!(store.any_revoked(&["j2", "j1"]).await.unwrap(), "one of several");
        assert!(!store.any_revoked(&["j2", "j3"]).await.unwrap());
        assert!(!store.any_revoked(&[]).await.unwrap());
        advance(3_000).await;
        assert!(
            !store.is_revoked("j1").await.unwrap(),
            "forgotten once the token expired"
        );

        // A deadline in the past stores nothing.
        store.revoke("past", now_secs() - 1).await.unwrap();
        assert!(!store.is_revoked("past").await.unwrap());

        // Revoking again keeps the later deadline.
        store.revoke("twice", now_secs() + 3).await.unwrap();
        store.revoke("twice", now_secs() + 1).await.unwrap();
        advance(1_500).await;
        assert!(store.is_revoked("twice").await.unwrap(), "the later deadline wins");
        advance(2_500).await;
        assert!(!store.is_revoked("twice").await.unwrap());
    }

    /// `a` and, when the backend has more than one node, `b` sharing its counters.
    pub async fn ratelimit_store(a: &dyn RateLimitStore, b: Option<&dyn RateLimitStore>, advance: Advance) {
        let b = b.unwrap_or(a);
        // 10/s with a burst of 3: exactly three at once (alternating nodes), then refused.
        let rate = Rate::parse("10/s", 3).unwrap();
        for (i, node) in [a, b, a].into_iter().enumerate() {
            let d = node.check("k", rate).await.unwrap();
            assert!(d.allowed, "request {i} is within the burst");
            assert_eq!((d.limit, d.remaining), (3, 2 - i as u64));
            assert!(d.reset_after_ms > 0 && d.reset_after_ms <= 300, "{d:?}");
        }
        let no = b.check("k", rate).await.unwrap();
        assert!(!no.allowed && no.remaining == 0, "{no:?}");
        assert!((1..=100).contains(&no.retry_after_ms), "{no:?}");
        assert!(
            !a.check("k", rate).await.unwrap().allowed,
            "a refusal is not counted but still refused"
        );
        assert!(a.check("other", rate).await.unwrap().allowed, "keys are independent");
        // One interval brings one request back; a whole window the whole burst.
        advance(no.retry_after_ms + 20).await;
        assert!(a.check("k", rate).await.unwrap().allowed);
        assert!(!b.check("k", rate).await.unwrap().allowed);
        advance(400).await;
        assert_eq!(b.check("k", rate).await.unwrap().remaining, 2);

        // Quotas: `limit` per window, refusals not counted, a new window starts at zero.
        for (i, node) in [a, b].into_iter().enumerate() {
            let d = node.quota("q", 7, 2, 5_000).await.unwrap();
            assert!(d.allowed && d.remaining == 1 - i as u64, "{d:?}");
        }
        let no = a.quota("q", 7, 2, 5_000).await.unwrap();
        assert!(!no.allowed, "{no:?}");
        assert_eq!((no.remaining, no.retry_after_ms, no.reset_after_ms), (0, 5_000, 5_000));
        assert!(
            b.quota("q2", 7, 2, 5_000).await.unwrap().allowed,
            "keys are independent"
        );
        let next = b.quota("q", 8, 2, 86_400_000).await.unwrap();
        assert!(
            next.allowed && next.remaining == 1,
            "the next window starts afresh: {next:?}"
        );
    }

    fn near(at: Option<confab_sdk::time::Timestamp>, ms: i64) -> bool {
        at.is_some_and(|t| (t.timestamp_millis() - ms).abs() < 2_000)
    }

    /// `a` and, when the backend has more than one node, `b`: two nodes sharing one state.
    pub async fn presence_store(a: &dyn PresenceStore, b: Option<&dyn PresenceStore>, clock: SharedClock) {
        let alice = "a1a1a1a1a1a1a1a1a1a1a1a1".to_owned();
        let bob = "b2b2b2b2b2b2b2b2b2b2b2b2".to_owned();
        let never = "c3c3c3c3c3c3c3c3c3c3c3c3".to_owned();

        // Nobody is online at first; nobody was ever seen.
        let states = a.states(&[alice.clone(), never.clone()]).await.unwrap();
        assert_eq!(
            states,
            vec![
                PresenceState::offline(&alice, None),
                PresenceState::offline(&never, None)
            ]
        );
        assert!(a.states(&[]).await.unwrap().is_empty());

        // The first socket makes the user online; more sockets change nothing.
        assert_eq!(
            a.connected(&alice).await.unwrap(),
            Some(PresenceState::online(&alice, None))
        );
        assert_eq!(a.connected(&alice).await.unwrap(), None, "a second device");
        assert!(a.states(std::slice::from_ref(&alice)).await.unwrap()[0].online);

        // Closing one of two keeps the user online; the last one sets lastSeen.
        assert_eq!(a.disconnected(&alice).await.unwrap(), None);
        assert!(a.states(std::slice::from_ref(&alice)).await.unwrap()[0].online);
        let off = a.disconnected(&alice).await.unwrap().expect("the last socket closed");
        assert!(!off.online && near(off.last_seen, clock.now_millis()), "{off:?}");
        let now = a.states(std::slice::from_ref(&alice)).await.unwrap().remove(0);
        assert_eq!(now, off, "the state read back is the one reported");

        // Back online: lastSeen is kept (when they were last seen offline).
        let on = a.connected(&alice).await.unwrap().expect("online again");
        assert_eq!(on.last_seen, off.last_seen);
        assert_eq!(a.disconnected(&alice).await.unwrap().map(|s| s.online), Some(false));

        // A close that was never counted is ignored.
        assert_eq!(a.disconnected(&never).await.unwrap(), None);
        assert!(!a.states(std::slice::from_ref(&never)).await.unwrap()[0].online);

        // States answer in the order asked.
        a.connected(&bob).await.unwrap();
        let states = a.states(&[bob.clone(), alice.clone(), bob.clone()]).await.unwrap();
        assert_eq!(
            states
                .iter()
                .map(|s| (s.user_id.as_str(), s.online))
                .collect::<Vec<_>>(),
            [(bob.as_str(), true), (alice.as_str(), false), (bob.as_str(), true)]
        );

        let Some(b) = b else {
            a.disconnected(&bob).await.unwrap();
            assert!(
                a.sweep().await.unwrap().is_empty(),
                "a single node has nothing to sweep"
            );
            return;
        };
        // Across nodes: online while any node counts a socket; each node sees the same.
        assert_eq!(
            b.connected(&bob).await.unwrap(),
            None,
            "bob is online through a already"
        );
        assert!(b.states(std::slice::from_ref(&bob)).await.unwrap()[0].online);
        assert_eq!(a.disconnected(&bob).await.unwrap(), None, "still connected to b");
        assert!(a.states(std::slice::from_ref(&bob)).await.unwrap()[0].online);
        let off = b.disconnected(&bob).await.unwrap().expect("bob's last socket, on b");
        assert!(!off.online);
        assert_eq!(a.states(std::slice::from_ref(&bob)).await.unwrap()[0], off);
        assert!(
            b.connected(&alice).await.unwrap().is_some(),
            "alice comes online through b"
        );
        assert!(
            a.states(std::slice::from_ref(&alice)).await.unwrap()[0].online,
            "a sees it"
        );
        // Live nodes that sweep report nothing.
        assert!(a.sweep().await.unwrap().is_empty());
        assert!(b.sweep().await.unwrap().is_empty());
        assert!(b.disconnected(&alice).await.unwrap().is_some());
    }
}

#[cfg(test)]
mod tests {
    use confab_sdk::config::{RunProfile, parse_section};
    use serde_json::json;

    use crate::config::ClusterConfig;

    fn parse(v: serde_json::Value) -> Result<ClusterConfig, Vec<String>> {
        let profile = RunProfile {
            name: "development".into(),
        };
        parse_section::<ClusterConfig>("cluster", &v, &profile).map_err(|p| p.iter().map(|p| p.key.clone()).collect())
    }

    #[test]
    fn the_redis_backend_is_configurable_and_checked_by_key() {
        let c = parse(json!({"backend": "redis", "redis": {"url": "redis://10.0.0.5:6380/2", "key_prefix": "chat:"}}))
            .unwrap();
        assert_eq!((c.backend.as_str(), c.redis.heartbeat_ttl_secs), ("redis", 30));
        assert!(c.redis.revocations_fail_open);
        let bad = parse(json!({"backend": "etcd", "redis": {
            "url": "http://x", "key_prefix": "has space", "heartbeat_ttl_secs": 0,
            "command_timeout_ms": 1, "connect_timeout_ms": 0, "ttl": 3,
        }}))
        .unwrap_err();
        assert_eq!(
            bad,
            [
                "cluster.redis.ttl",
                "cluster.backend",
                "cluster.redis.url",
                "cluster.redis.key_prefix",
                "cluster.redis.heartbeat_ttl_secs",
                "cluster.redis.command_timeout_ms",
                "cluster.redis.connect_timeout_ms",
            ]
        );
    }
}
