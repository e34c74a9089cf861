//! `POST /events`: a transaction into the stream, checked by the sink's own validator.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody, FieldProblem};
use super::state::AppState;
use crate::domain::rules::Rules;
use crate::domain::transaction::{Field, Rejection, RejectionKind, validate_with};
use crate::kafka::producer::PRODUCED_AT_HEADER;

/// A valid message: each field of an invalid event is tried in it alone, so that every invalid
/// field is reported, not only the first the validator meets.
const PROBE: &str = r#"{"tx_id":"00000000-0000-4000-8000-000000000000","user_id":"00000000-0000-4000-8000-000000000001","amount":1,"currency":"USD","merchant":"probe","category":"online_shopping","timestamp":"2025-01-01T00:00:00Z","status":"approved","payment_method":"credit_card"}"#;

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub tx_id: Uuid,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The stream message of DESIGN §4 (unknown extra fields are ignored).
#[derive(ToSchema)]
#[allow(dead_code)] // documents the body; the handler reads raw bytes for the validator
pub struct TransactionEvent {
    tx_id: Uuid,
    user_id: Uuid,
    /// Non-zero, at most two decimals, |amount| ≤ 1,000,000; negative for refunds.
    #[schema(minimum = -1000000, maximum = 1000000)]
    amount: f64,
    currency: Currency,
    #[schema(min_length = 1, max_length = 255)]
    merchant: String,
    category: Category,
    /// RFC 3339 with an offset, in the years 2000–2100.
    #[schema(value_type = String, format = DateTime)]
    timestamp: String,
    status: Status,
    payment_method: PaymentMethod,
    city: Option<String>,
    country: Option<String>,
    source_system: Option<String>,
    transaction_type: Option<String>,
    #[schema(minimum = 0)]
    processing_time_ms: Option<i32>,
}

/// The currencies of dim_currencies.
#[derive(ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)]
enum Currency {
    USD,
    EUR,
    GBP,
    CAD,
    AUD,
}

#[derive(ToSchema, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum Category {
    OnlineShopping,
    FoodDelivery,
    RideSharing,
    StreamingServices,
    Gaming,
    SocialMedia,
    MobileApps,
    DigitalSubscriptions,
    CryptoTrading,
    PeerToPeer,
    MicroTransactions,
    InstantTransfers,
}

#[derive(ToSchema, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum Status {
    Approved,
    Declined,
    Pending,
}

#[derive(ToSchema, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum PaymentMethod {
    CreditCard,
    DebitCard,
    ApplePay,
    GooglePay,
    BankTransfer,
}

/// Validates a transaction and produces it to the transactions topic (key user_id).
#[utoipa::path(post, path = "/events", tag = "events",
    request_body(content = TransactionEvent, content_type = "application/json"),
    security((), ("bearer" = [])),
    responses(
        (status = 202, description = "Kafka acknowledged the event", body = Accepted),
        (status = 401, description = "ETL_API_TOKEN is set and the bearer token is missing or wrong", body = ErrorBody),
        (status = 413, description = "The body is larger than the limit"),
        (status = 422, description = "Not a valid transaction; `fields` lists each invalid field", body = ErrorBody),
        (status = 503, description = "Kafka did not acknowledge in time", body = ErrorBody),
    ))]
pub async fn post_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    if let Some(token) = &state.options.api_token {
        authorize(&headers, token)?;
    }
    let rules = &state.options.rules;
    let tx = validate_with(&body, rules)
        .map_err(|first| ApiError::Invalid(problems(&body, first, rules)))?;
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
        .to_string();
    let key = tx.user_id.to_string();
    let topic = state.options.topic.as_str();
    let record = FutureRecord::to(topic)
        .key(&key)
        .payload(body.as_ref())
        .headers(OwnedHeaders::new().insert(Header {
            key: PRODUCED_AT_HEADER,
            value: Some(&micros),
        }));
    match state
        .producer
        .send(record, state.options.kafka_timeout)
        .await
    {
        Ok(delivery) => {
            tracing::debug!(tx_id = %tx.tx_id, partition = delivery.partition, offset = delivery.offset, "event produced");
            Ok((
                StatusCode::ACCEPTED,
                Json(Accepted {
                    tx_id: tx.tx_id,
                    topic: topic.to_string(),
                    partition: delivery.partition,
                    offset: delivery.offset,
                }),
            ))
        }
        Err((err, _)) => {
            tracing::warn!(%err, %topic, "event not acknowledged");
            Err(ApiError::Unavailable(
                "Kafka did not acknowledge the event; it may or may not have been written, \
                 sending it again is safe (the tx_id is the key of its row)"
                    .into(),
            ))
        }
    }
}

/// `Authorization: Bearer <token>`, compared in constant time (on digests, so that the length
/// of the token does not show either).
fn authorize(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let given = Sha256::digest(given.trim().as_bytes());
    let expected = Sha256::digest(token.as_bytes());
    if bool::from(given.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Every invalid field of a refused event. Problems with the document as a whole (not JSON, not
/// an object, a field twice) are the only problem reported.
pub fn problems(body: &[u8], first: Rejection, rules: &Rules) -> Vec<FieldProblem> {
    let whole = |r: &Rejection| FieldProblem {
        field: "(document)".into(),
        kind: r.kind.as_str().into(),
        message: r.message.clone(),
    };
    let document_level = matches!(
        first.kind,
        RejectionKind::InvalidUtf8
            | RejectionKind::NotJson
            | RejectionKind::NotObject
            | RejectionKind::EmptyObject
            | RejectionKind::DuplicateField(_)
            | RejectionKind::TooLarge
            | RejectionKind::TooDeep
            | RejectionKind::TooManyKeys
    );
    // Before parsing the body again: a body over the validator's bounds must not be parsed at all.
    if document_level {
        return vec![whole(&first)];
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return vec![whole(&first)];
    };
    let template: Map<String, Value> =
        serde_json::from_str(PROBE).expect("the probe message is JSON");
    let mut found = Vec::new();
    for field in Field::ALL {
        let name = field.name();
        let mut probe = template.clone();
        match fields.get(name) {
            Some(value) => probe.insert(name.to_string(), value.clone()),
            None => probe.remove(name),
        };
        let bytes = serde_json::to_vec(&probe).expect("a JSON map serializes");
        if let Err(rejection) = validate_with(&bytes, rules) {
            found.push(FieldProblem {
                field: name.into(),
                kind: rejection.kind.as_str().into(),
                message: rejection.message,
            });
        }
    }
    if found.is_empty() {
        found.push(whole(&first));
    }
    found
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::*;
    use crate::domain::transaction::validate;

    #[test]
    fn the_probe_is_valid_and_every_bad_field_is_listed() {
        validate(PROBE.as_bytes()).unwrap();
        let body = br#"{"tx_id":"nope","user_id":"00000000-0000-4000-8000-000000000001","amount":1.234,"currency":"XXX","merchant":"m","category":"online_shopping","timestamp":"2025-01-01T00:00:00Z","status":"approved"}"#;
        let first = validate(body).unwrap_err();
        let found = problems(body, first, Rules::standard());
        let names: Vec<&str> = found.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(names, ["tx_id", "amount", "currency", "payment_method"]);
        assert_eq!(found[3].kind, "missing_payment_method");
    }

    #[test]
    fn the_documented_vocabularies_are_the_catalogs() {
        use crate::domain::catalog;
        let doc = serde_json::to_value(crate::http::openapi::ApiDoc::openapi()).unwrap();
        let names = |schema: &str| -> Vec<String> {
            serde_json::from_value(doc["components"]["schemas"][schema]["enum"].clone()).unwrap()
        };
        assert_eq!(names("Currency"), catalog::CURRENCIES);
        assert_eq!(names("Category"), catalog::STREAM_CATEGORIES);
        assert_eq!(names("Status"), catalog::STATUSES);
        assert_eq!(names("PaymentMethod"), catalog::PAYMENT_METHODS);
    }

    #[test]
    fn document_problems_are_reported_alone() {
        let first = validate(b"[1]").unwrap_err();
        let found = problems(b"[1]", first, Rules::standard());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, "not_object");
    }

    #[test]
    fn a_body_over_the_validators_bounds_is_one_document_problem() {
        // Valid fields, but a nested extra field deeper than the bound.
        let deep = PROBE.replacen(
            '{',
            &format!(r#"{{"extra":{}1{},"#, "[".repeat(40), "]".repeat(40)),
            1,
        );
        let found = problems(
            deep.as_bytes(),
            validate(deep.as_bytes()).unwrap_err(),
            Rules::standard(),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].field.as_str(), found[0].kind.as_str()),
            ("(document)", "too_deep")
        );
    }

    #[test]
    fn tokens_compare_by_value() {
        let mut headers = HeaderMap::new();
        assert!(authorize(&headers, "s3cret").is_err());
        headers.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(authorize(&headers, "s3cret").is_err());
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorize(&headers, "s3cret").is_ok());
    }
}
