//! `GET /schema/transaction.json`: the JSON Schema of what `POST /events` and the sink accept,
//! rendered from the same rules this server validates with.

use axum::Json;
use axum::extract::State;

use super::AppState;
use crate::domain::schema;

pub async fn transaction_schema(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(schema::transaction_schema(&state.options.rules))
}
