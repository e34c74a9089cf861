//! `/metrics` (Prometheus text), `/healthz` (the process answers) and `/readyz` (the broker and
//! the database both answer), served next to a long-running command such as the sink.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics::Metrics;

/// A readiness probe: `Ok` when the dependency answers, else a sentence saying which one does not.
pub type Probe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Renders a process's metrics as Prometheus text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    render: Render,
    probes: Vec<Probe>,
}

/// The sink's endpoints.
pub fn router(metrics: Metrics, probes: Vec<Probe>) -> Router {
    router_rendering(Arc::new(move || metrics.render()), probes)
}

/// The same endpoints for a process with a registry of its own (the model scheduler).
pub fn router_rendering(render: Render, probes: Vec<Probe>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(OpsState { render, probes })
}

async fn render_metrics(State(state): State<OpsState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        (state.render)(),
    )
}

async fn ready(State(state): State<OpsState>) -> impl IntoResponse {
    let results = futures::future::join_all(state.probes.iter().map(|probe| probe())).await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", failures.join("; ")),
        )
    }
}

/// Binds `addr` now (so a port in use is an error at start) and serves until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(err) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%err, "metrics endpoint stopped");
        }
    });
    Ok((bound, handle))
}
