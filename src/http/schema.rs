//! `GET /schema/transaction.json`: the JSON Schema of what `POST /events` and the sink accept,
//! rendered from the same rules this server validates with.

use axum::Json;
use axum::extract::State;

use super::AppState;
use crate::domain::schema;

/// The path must match `domain::schema::SCHEMA_PATH`, which routes it (the macro needs a literal;
/// a test checks both).
#[utoipa::path(get, path = "/schema/transaction.json", tag = "schema",
    responses((status = 200, description = "JSON Schema (draft 2020-12) of a transaction message as this server's rules accept it", body = Object)))]
pub async fn transaction_schema(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(schema::transaction_schema(&state.options.rules))
}
