//! The HTTP + Socket.IO server: salvo serves the routes, socketioxide the `/socket.io/`
//! path on the same port.

pub mod compact;
pub mod edge;
pub mod lifecycle;
pub mod middleware;
pub mod routes;
pub mod socket;
pub mod transport;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use self::transport::CuttableLayer;
use crate::config::Config;
use crate::metrics::Metrics;
use confab_sdk::health::HealthCheck;
use salvo::catcher::Catcher;
use salvo::prelude::*;

pub struct HttpParts {
    pub routes: Vec<Router>,
    pub hoops: Vec<Arc<dyn Handler>>,
    pub checks: Vec<Arc<dyn HealthCheck>>,
    pub metrics: Arc<Metrics>,
    pub draining: Arc<AtomicBool>,
    /// `/socket.io/`, on the cluster backend's adapter ([`socket_io_route`]).
    pub socket_route: Router,
    /// Response headers the enabled plugins let browsers read.
    pub exposed_headers: Vec<&'static str>,
}

/// An empty goal: salvo runs hoops only on matched routes, so the Socket.IO layer needs a
/// route with a goal to hang on.
#[handler]
async fn socket_io_goal() {}

/// `/socket.io/` served by socketioxide's `layer`, behind the kernel's own WebSocket
/// upgrade (`transport`), which also compacts the heads sessions keep (`compact`).
pub fn socket_io_route<A: socketioxide::adapter::Adapter>(layer: socketioxide::layer::SocketIoLayer<A>) -> Router {
    Router::with_path("socket.io/{**rest}").goal(socket_io_goal).hoop(
        tower::ServiceBuilder::new()
            .layer(CuttableLayer::default())
            .layer(layer)
            .compat(),
    )
}

/// The salvo service with every route, hoop and the JSON error catcher.
pub fn service(config: &Config, parts: HttpParts) -> Service {
    let mut router = Router::new()
        .push(Router::with_path("health").get(routes::health))
        .push(Router::with_path("ready").get(routes::Ready {
            checks: parts.checks,
            draining: parts.draining,
        }));
    // With `metrics_addr`, /metrics is served there only (`metrics_service`).
    if config.server.metrics && config.server.metrics_addr.is_empty() {
        router = router.push(Router::with_path("metrics").get(routes::MetricsRoute(parts.metrics.clone())));
    }
    router = router.push(parts.socket_route);
    let mut plugin_routes = Router::new();
    for h in parts.hoops {
        plugin_routes = plugin_routes.hoop(ArcHandler(h));
    }
    for r in parts.routes {
        plugin_routes = plugin_routes.push(r);
    }
    router = router.push(plugin_routes);
    Service::new(router)
        .hoop(edge::ClientAddress(Arc::new(edge::TrustedProxies::new(
            &config.server.trusted_proxies,
        ))))
        .hoop(middleware::RequestContext {
            metrics: config.server.metrics.then(|| parts.metrics.clone()),
            body_limit: config.server.body_limit,
        })
        .hoop(middleware::SecurityHeaders {
            hsts: config.profile.is_production(),
        })
        .hoop(middleware::Cors::new(&config.server, &parts.exposed_headers))
        .catcher(Catcher::new(routes::json_errors))
}

/// `/metrics` alone, for the listener of `server.metrics_addr`.
pub fn metrics_service(metrics: Arc<Metrics>) -> Service {
    Service::new(Router::new().push(Router::with_path("metrics").get(routes::MetricsRoute(metrics))))
        .catcher(Catcher::new(routes::json_errors))
}

/// Lets a plugin's shared hoop be added where salvo wants an owned handler.
struct ArcHandler(Arc<dyn Handler>);

#[async_trait]
impl Handler for ArcHandler {
    async fn handle(&self, req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
        self.0.handle(req, depot, res, ctrl).await
    }
}
