//! `GET /merchants/top`: merchants ranked by approved revenue in USD over a date range.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{Days, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::params::Params;
use super::state::AppState;

/// Days a range covers when no start date is given.
const DEFAULT_DAYS: u64 = 30;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TopMerchant {
    pub merchant: String,
    pub category: String,
    pub revenue_usd: f64,
    pub transaction_count: i64,
    pub avg_transaction_usd: Option<f64>,
}

/// Top merchants by approved revenue (the `daily_merchant_revenue` mart).
#[utoipa::path(get, path = "/merchants/top", tag = "merchants",
    params(
        ("start_date" = Option<chrono::NaiveDate>, Query, description = "First day, YYYY-MM-DD (default: 29 days before end_date)"),
        ("end_date" = Option<chrono::NaiveDate>, Query, description = "Last day, YYYY-MM-DD (default: today, UTC)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "How many merchants (default 5)"),
    ),
    responses(
        (status = 200, description = "Merchants, best first; [] when the range has none", body = Vec<TopMerchant>),
        (status = 400, description = "A bad date, start after end, or limit outside 1–100", body = ErrorBody),
        (status = 503, description = "The database is unavailable, too slow, or the models are not built", body = ErrorBody),
    ))]
pub async fn top_merchants(
    State(state): State<AppState>,
    Query(params): Query<Params>,
) -> Result<Json<Vec<TopMerchant>>, ApiError> {
    let limit = params.int("limit", 5, 1..=100)?;
    let end = params
        .date("end_date")?
        .unwrap_or_else(|| Utc::now().date_naive());
    let start = match params.date("start_date")? {
        Some(start) => start,
        None => end
            .checked_sub_days(Days::new(DEFAULT_DAYS - 1))
            .unwrap_or(end),
    };
    if start > end {
        return Err(ApiError::bad_request(format!(
            "`start_date` ({start}) is after `end_date` ({end})"
        )));
    }
    let rows = sqlx::query_as(include_str!("sql/merchants_top.sql"))
        .bind(start)
        .bind(end)
        .bind(limit)
        .fetch_all(&state.pool)
        .await?;
    Ok(Json(rows))
}
