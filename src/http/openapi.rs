//! The OpenAPI 3 document, derived from the handlers' annotations and the response types.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{anomalies, dashboard, error, events, health, merchants, schema, transactions, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "etl serve", description = "Transactions, merchants, users and anomalies from the etl star schema; events into the stream."),
    paths(
        health::health, health::healthz, health::readyz,
        transactions::get_transaction,
        merchants::top_merchants,
        users::user_trends,
        anomalies::anomalies,
        events::post_event,
        dashboard::dashboard_data, dashboard::stream_data,
        schema::transaction_schema,
    ),
    components(schemas(error::ErrorBody, error::FieldProblem)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
