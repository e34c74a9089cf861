//! `/health` (what is up, for people), `/healthz` (liveness) and `/readyz` (readiness).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rdkafka::consumer::Consumer;
use serde::Serialize;
use utoipa::ToSchema;

use super::state::AppState;

/// `ok`, or a sentence naming what fails.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    pub postgres: String,
    pub kafka: String,
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Alive {
    pub status: String,
}

/// PostgreSQL and Kafka both answer.
#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "Everything answers", body = Health),
        (status = 503, description = "A dependency does not answer; its field says why", body = Health),
    ))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let health = check(&state).await;
    let status = if health.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}

/// The process answers (it does not look at its dependencies).
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process answers", body = Alive)))]
pub async fn healthz() -> Json<Alive> {
    Json(Alive {
        status: "ok".into(),
    })
}

/// Ready for traffic: the same checks as `/health`.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", body = Health),
    ))]
pub async fn readyz(state: State<AppState>) -> impl IntoResponse {
    health(state).await
}

pub async fn check(state: &AppState) -> Health {
    let (postgres, kafka) = tokio::join!(postgres(state), kafka(state));
    let ok = postgres.is_ok() && kafka.is_ok();
    let word = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".into());
    Health {
        status: if ok { "ok" } else { "degraded" }.into(),
        postgres: word(postgres),
        kafka: word(kafka),
    }
}

async fn postgres(state: &AppState) -> Result<(), String> {
    let probe = sqlx::query_scalar::<_, i32>("select 1").fetch_one(&state.pool);
    match tokio::time::timeout(state.options.statement_timeout, probe).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => {
            tracing::warn!(%err, "health: PostgreSQL");
            Err("PostgreSQL does not answer".into())
        }
        Err(_) => Err("PostgreSQL does not answer in time".into()),
    }
}

async fn kafka(state: &AppState) -> Result<(), String> {
    let client = state.metadata.clone();
    let topic = state.options.topic.clone();
    let timeout = state.options.kafka_timeout;
    let answer = tokio::task::spawn_blocking(move || {
        client
            .fetch_metadata(Some(&topic), timeout)
            .map(|m| m.topics().iter().any(|t| t.error().is_none()))
    })
    .await;
    match answer {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(format!(
            "Kafka answers, but topic `{}` does not exist",
            state.options.topic
        )),
        Ok(Err(err)) => {
            tracing::warn!(%err, "health: Kafka");
            Err("Kafka does not answer".into())
        }
        Err(_) => Err("Kafka check failed".into()),
    }
}
