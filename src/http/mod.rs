//! HTTP: the operational endpoints served next to long-running commands (`ops`), and `etl serve`:
//! the REST API, its OpenAPI document, the dashboard and the stream page ([`app`]).

pub mod anomalies;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod health;
pub mod merchants;
pub mod openapi;
pub mod ops;
pub mod params;
pub mod schema;
pub mod seed;
pub mod state;
pub mod transactions;
pub mod users;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use state::{AppState, ServeOptions};

use error::ApiError;

/// Every route of `etl serve`, with request metrics and the body limit.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health::health))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/transactions/{tx_id}", get(transactions::get_transaction))
        .route("/merchants/top", get(merchants::top_merchants))
        .route("/users/{user_id}/trends", get(users::user_trends))
        .route("/anomalies", get(anomalies::anomalies))
        .route("/events", post(events::post_event))
        .route("/api/dashboard", get(dashboard::dashboard_data))
        .route("/api/stream", get(dashboard::stream_data));
    let pages = Router::new()
        .route("/", get(dashboard::dashboard_page))
        .route("/stream", get(dashboard::stream_page))
        .route("/assets/charts.js", get(dashboard::script))
        .route("/assets/style.css", get(dashboard::stylesheet))
        .route("/openapi.json", get(openapi::document))
        .route(
            crate::domain::schema::SCHEMA_PATH,
            get(schema::transaction_schema),
        )
        .route("/metrics", get(render_metrics));
    let body_limit = state.options.body_limit;
    api.merge(pages)
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; the API is described at /openapi.json".into())
}

/// Times every matched request by route template and status.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
