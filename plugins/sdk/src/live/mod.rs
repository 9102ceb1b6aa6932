//! The Socket.IO side shared by the kernel and the cluster backends (Cargo feature
//! `socketio`; plugins never enable it, DESIGN §1): per-user live order of stream events
//! ([`StreamGate`]), emits to this node's sockets that close a socket rather than skip an
//! event ([`emit`]), closing a socket's transport ([`cut`]), and the counters the kernel's
//! `/metrics` shows for them ([`LiveCounters`]).

pub mod bound;
pub mod cut;
pub mod emit;
pub mod gate;

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use socketioxide::SocketIo;
use socketioxide::layer::SocketIoLayer;
use tokio::sync::watch;

use crate::cluster::{SharedPresenceStore, SharedRefreshStore, SharedRevocationStore, SharedSessionStore};
use crate::health::HealthCheck;
use crate::ratelimit::SharedRateLimitStore;
use crate::realtime::SharedEmitter;

pub use bound::{BoundSocket, SocketState, principal_of};
pub use cut::{Cuttable, Registered, TransportCut, TransportLink, Transports, cut};
pub use emit::{AdapterEmitter, Ending, end, end_credential_local, is_ending, resync_local, stream_local};
pub use gate::{HOLD, StreamGate, StreamSink};

/// What became of a stream event that came out of position order.
#[derive(Clone, Copy)]
pub enum Reorder {
    /// Waited for a smaller position.
    Held,
    /// Came after a larger position went out: left to the client's sync.
    Late,
    /// Smaller than the one that opened its user's line: emitted at once.
    Unordered,
}

/// Counters of this node's sockets and stream deliveries, rendered by the kernel's
/// `/metrics`.
#[derive(Default)]
pub struct LiveCounters {
    open_sockets: AtomicI64,
    /// Sockets whose buffer could not take a stream event: closed at the transport, or
    /// (on polling) left to the heartbeat.
    overflow_closed: AtomicU64,
    overflow_polling: AtomicU64,
    stream_held: AtomicU64,
    stream_late: AtomicU64,
    stream_unordered: AtomicU64,
    stream_resyncs: AtomicU64,
}

impl LiveCounters {
    pub fn socket_opened(&self) {
        self.open_sockets.fetch_add(1, Ordering::Relaxed);
    }

    pub fn socket_closed(&self) {
        self.open_sockets.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn open_sockets(&self) -> i64 {
        self.open_sockets.load(Ordering::Relaxed)
    }

    /// A socket's buffer could not take a stream event; `closed`: its connection was cut.
    pub fn stream_overflow(&self, closed: bool) {
        let counter = if closed {
            &self.overflow_closed
        } else {
            &self.overflow_polling
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream event came before a smaller position of its user (`held`: it waited for
    /// it) or after a larger one had gone out (dropped: its client syncs the gap).
    pub fn stream_reordered(&self, outcome: Reorder) {
        let counter = match outcome {
            Reorder::Held => &self.stream_held,
            Reorder::Late => &self.stream_late,
            Reorder::Unordered => &self.stream_unordered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Sockets closed so that their clients sync what cross-node fan-out could not carry.
    pub fn stream_resynced(&self, sockets: usize) {
        self.stream_resyncs.fetch_add(sockets as u64, Ordering::Relaxed);
    }

    /// The counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP confab_open_sockets Socket.IO connections open on this node.\n# TYPE confab_open_sockets gauge\nconfab_open_sockets {}",
            self.open_sockets()
        );
        let _ = writeln!(
            out,
            "# HELP confab_stream_overflows_total Sockets whose buffer could not take a message: closed at the transport, or on polling left to the heartbeat.\n# TYPE confab_stream_overflows_total counter\n\
             confab_stream_overflows_total{{action=\"closed\"}} {}\nconfab_stream_overflows_total{{action=\"polling\"}} {}",
            load(&self.overflow_closed),
            load(&self.overflow_polling)
        );
        let _ = writeln!(
            out,
            "# HELP confab_stream_reordered_total Stream events that came out of position order: held for a smaller one, late (left to the client's sync), or unordered (emitted after a larger one that opened its user's line).\n# TYPE confab_stream_reordered_total counter\n\
             confab_stream_reordered_total{{outcome=\"held\"}} {}\nconfab_stream_reordered_total{{outcome=\"late\"}} {}\nconfab_stream_reordered_total{{outcome=\"unordered\"}} {}",
            load(&self.stream_held),
            load(&self.stream_late),
            load(&self.stream_unordered)
        );
        let _ = writeln!(
            out,
            "# HELP confab_stream_resyncs_total Sockets closed so that their clients sync what cross-node fan-out could not carry.\n# TYPE confab_stream_resyncs_total counter\nconfab_stream_resyncs_total {}",
            load(&self.stream_resyncs)
        );
    }
}

/// What a cluster backend starts for one node: the shared services, the emitter, and the
/// Socket.IO server with its tower layer (on the backend's adapter: [`AdapterParts`]; the
/// kernel turns them into its own adapter-free types with [`ClusterParts::map`]).
pub struct ClusterParts<Io, Layer> {
    pub sessions: SharedSessionStore,
    pub revocations: SharedRevocationStore,
    pub refresh: SharedRefreshStore,
    pub presence: SharedPresenceStore,
    pub ratelimit: SharedRateLimitStore,
    pub emitter: SharedEmitter,
    pub io: Io,
    pub layer: Layer,
    /// `/ready`'s check of the backend, if it can fail.
    pub health: Option<Arc<dyn HealthCheck>>,
    /// Changes each time the backend is reachable again after an outage.
    pub recoveries: Option<watch::Receiver<u64>>,
}

/// A backend's [`ClusterParts`]: the Socket.IO server on adapter `A`.
pub type AdapterParts<A> = ClusterParts<SocketIo<A>, SocketIoLayer<A>>;

impl<Io, Layer> ClusterParts<Io, Layer> {
    /// The same services, the server and the layer passed through `io` and `layer`.
    pub fn map<I, L>(self, io: impl FnOnce(Io) -> I, layer: impl FnOnce(Layer) -> L) -> ClusterParts<I, L> {
        ClusterParts {
            sessions: self.sessions,
            revocations: self.revocations,
            refresh: self.refresh,
            presence: self.presence,
            ratelimit: self.ratelimit,
            emitter: self.emitter,
            io: io(self.io),
            layer: layer(self.layer),
            health: self.health,
            recoveries: self.recoveries,
        }
    }
}
