//! `GET /users/{user_id}/trends`: what a user spent, on what, day by day.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::params::{Params, parse_uuid};
use super::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserTrends {
    pub user_id: Uuid,
    pub days: i32,
    /// The user's latest registration; null for a user no file has registered yet.
    pub user: Option<UserProfile>,
    pub totals: Totals,
    pub currencies: Vec<CurrencySpend>,
    /// The five categories with the most spend.
    pub top_categories: Vec<CategorySpend>,
    /// Days with transactions, oldest first.
    pub daily: Vec<DailySpend>,
    /// The ten latest transactions.
    pub recent: Vec<RecentTransaction>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserProfile {
    pub name: String,
    pub tier: String,
    pub city: String,
    pub country: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Totals {
    pub transaction_count: i64,
    pub total_usd: f64,
    pub average_usd: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CurrencySpend {
    pub currency: String,
    pub transaction_count: i64,
    /// In the currency itself.
    pub total: f64,
    pub total_usd: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CategorySpend {
    pub category: String,
    pub spend_usd: f64,
    pub transaction_count: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DailySpend {
    pub date: NaiveDate,
    pub transaction_count: i64,
    pub spend_usd: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecentTransaction {
    pub tx_id: Uuid,
    pub event_time: DateTime<Utc>,
    pub amount: f64,
    pub currency: String,
    pub amount_usd: f64,
    pub merchant: String,
    pub category: String,
    /// Null for batch transactions.
    pub status: Option<String>,
}

/// A user's spending trends over the last `days` days.
#[utoipa::path(get, path = "/users/{user_id}/trends", tag = "users",
    params(
        ("user_id" = Uuid, Path, description = "The user's UUID"),
        ("days" = Option<i64>, Query, minimum = 1, maximum = 3650, description = "Lookback in days (default 30)"),
    ),
    responses(
        (status = 200, description = "The user's trends", body = UserTrends),
        (status = 400, description = "user_id is not a UUID, or days is out of range", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 503, description = "The database is unavailable, too slow, or the models are not built", body = ErrorBody),
    ))]
pub async fn user_trends(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    Query(params): Query<Params>,
) -> Result<Json<UserTrends>, ApiError> {
    let user_id = parse_uuid("user_id", &user_id)?;
    let days = params.int("days", 30, 1..=3650)? as i32;
    let trends: Option<DbJson<UserTrends>> =
        sqlx::query_scalar(include_str!("sql/user_trends.sql"))
            .bind(user_id)
            .bind(days)
            .fetch_optional(&state.pool)
            .await?;
    trends
        .map(|t| Json(t.0))
        .ok_or_else(|| ApiError::NotFound(format!("no user {user_id}")))
}
