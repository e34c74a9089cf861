//! `GET /anomalies`: stream transactions whose amount was far from their user's usual.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::params::Params;
use super::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Anomalies {
    /// How many anomalies match, over all pages.
    pub count: i64,
    /// This page, newest first.
    pub anomalies: Vec<Anomaly>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Anomaly {
    pub tx_id: Uuid,
    pub user_id: Uuid,
    pub amount: f64,
    pub currency: String,
    pub merchant: String,
    pub category: String,
    pub event_time: DateTime<Utc>,
    pub z_score: f64,
    /// The user's transactions so far, this one included.
    pub user_txn_count: i64,
    /// `mild` (|z| ≤ 4), `moderate` (≤ 6) or `severe`.
    pub severity: String,
}

/// Anomalies of the last days, newest first.
#[utoipa::path(get, path = "/anomalies", tag = "anomalies",
    params(
        ("days" = Option<i64>, Query, minimum = 1, maximum = 3650, description = "Lookback in days (default 7)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
        ("offset" = Option<i64>, Query, minimum = 0, maximum = 100000, description = "Rows to skip (default 0)"),
        ("user_id" = Option<Uuid>, Query, description = "Only this user's"),
        ("min_z" = Option<f64>, Query, minimum = 0, maximum = 1000000, description = "Only those with |z| at least this"),
    ),
    responses(
        (status = 200, description = "A page of anomalies", body = Anomalies),
        (status = 400, description = "A parameter is malformed or out of range", body = ErrorBody),
        (status = 503, description = "The database is unavailable or too slow", body = ErrorBody),
    ))]
pub async fn anomalies(
    State(state): State<AppState>,
    Query(params): Query<Params>,
) -> Result<Json<Anomalies>, ApiError> {
    let days = params.int("days", 7, 1..=3650)? as i32;
    let limit = params.int("limit", 50, 1..=500)?;
    let offset = params.int("offset", 0, 0..=100_000)?;
    let user_id = params.uuid("user_id")?;
    let min_z = params.float("min_z", 0.0..=1e6)?;
    let (count, DbJson(anomalies)): (i64, DbJson<Vec<Anomaly>>) =
        sqlx::query_as(include_str!("sql/anomalies.sql"))
            .bind(days)
            .bind(user_id)
            .bind(min_z)
            .bind(limit)
            .bind(offset)
            .fetch_one(&state.pool)
            .await?;
    Ok(Json(Anomalies { count, anomalies }))
}
