//! `GET /transactions/{tx_id}`: one transaction with its user and merchant.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::params::parse_uuid;
use super::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionDetail {
    pub tx_id: Uuid,
    /// `stream` (Kafka) or `batch` (monthly file).
    pub source: String,
    pub amount: f64,
    pub currency: String,
    pub event_time: DateTime<Utc>,
    /// Stream transactions only.
    pub status: Option<String>,
    pub payment_method: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    /// The anomaly score; stream transactions from a user's second on.
    pub z_score: Option<f64>,
    pub is_anomaly: bool,
    pub merchant: Merchant,
    pub user: User,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Merchant {
    pub name: String,
    pub category: String,
}

/// The user as of the transaction's time; the attributes are null for a user no file has
/// registered yet (a late-arriving member).
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub user_id: Uuid,
    pub name: Option<String>,
    pub tier: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    tx_id: Uuid,
    source: String,
    amount: f64,
    currency: String,
    event_time: DateTime<Utc>,
    status: Option<String>,
    payment_method: Option<String>,
    city: Option<String>,
    country: Option<String>,
    z_score: Option<f64>,
    is_anomaly: bool,
    merchant_name: String,
    merchant_category: String,
    user_id: Uuid,
    user_name: Option<String>,
    customer_tier: Option<String>,
    user_city: Option<String>,
    user_country: Option<String>,
}

/// A transaction by id, stream or batch.
#[utoipa::path(get, path = "/transactions/{tx_id}", tag = "transactions",
    params(("tx_id" = Uuid, Path, description = "The transaction's UUID")),
    responses(
        (status = 200, description = "The transaction", body = TransactionDetail),
        (status = 400, description = "tx_id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such transaction", body = ErrorBody),
        (status = 503, description = "The database is unavailable or too slow", body = ErrorBody),
    ))]
pub async fn get_transaction(
    State(state): State<AppState>,
    Path(tx_id): Path<String>,
) -> Result<Json<TransactionDetail>, ApiError> {
    let tx_id = parse_uuid("tx_id", &tx_id)?;
    let row: Option<Row> = sqlx::query_as(include_str!("sql/transaction.sql"))
        .bind(tx_id)
        .fetch_optional(&state.pool)
        .await?;
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no transaction {tx_id}")))?;
    Ok(Json(TransactionDetail {
        tx_id: row.tx_id,
        source: row.source,
        amount: row.amount,
        currency: row.currency,
        event_time: row.event_time,
        status: row.status,
        payment_method: row.payment_method,
        city: row.city,
        country: row.country,
        z_score: row.z_score,
        is_anomaly: row.is_anomaly,
        merchant: Merchant {
            name: row.merchant_name,
            category: row.merchant_category,
        },
        user: User {
            user_id: row.user_id,
            name: row.user_name,
            tier: row.customer_tier,
            city: row.user_city,
            country: row.user_country,
        },
    }))
}
