//! `etl schema` and `GET /schema/transaction.json` against generated traffic, checked with an
//! independent JSON Schema validator (the `jsonschema` crate): every valid message the generator
//! makes conforms, every kind of bad message it injects does not. The generator's own record of
//! what it injected is the oracle.

use std::collections::BTreeSet;
use std::sync::Arc;

use etl::domain::rules::Rules;
use etl::domain::schema::{NOT_EXPRESSED, SCHEMA_PATH, transaction_schema};
use etl::generate::stream::{InjectedKind, StreamGenerator, StreamOptions};
use etl::http::{AppState, ServeOptions, app};
use jsonschema::{Keyword, ValidationError};
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestDb, kafka, run_etl};

/// `x-etl-max-decimals`, the schema's annotation for what `multipleOf` cannot say exactly: the
/// decimals of the number as serde_json prints it back (shortest round-trip form).
struct MaxDecimals(u32);

impl<'i> Keyword<'i> for MaxDecimals {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        if self.is_valid(instance) {
            Ok(())
        } else {
            Err(ValidationError::custom(format!(
                "more than {} decimals",
                self.0
            )))
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        let Value::Number(n) = instance else {
            return true;
        };
        let text = n.to_string();
        let parsed = if text.contains(['e', 'E']) {
            Decimal::from_scientific(&text)
        } else {
            text.parse::<Decimal>()
        };
        parsed.is_ok_and(|d| d.normalize().scale() <= self.0)
    }
}

/// A validator that also checks the `x-etl-max-decimals` annotation, as a consumer can.
fn full_validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_keyword("x-etl-max-decimals", |_, value, _| {
            let max = value.as_u64().ok_or_else(|| {
                ValidationError::schema("x-etl-max-decimals takes a whole number")
            })?;
            Ok(Box::new(MaxDecimals(max as u32)))
        })
        .build(schema)
        .expect("the schema compiles")
}

/// Does `payload` conform? Bytes that are not one JSON document conform to no schema.
fn conforms(validator: &jsonschema::Validator, payload: &[u8]) -> bool {
    serde_json::from_slice::<Value>(payload).is_ok_and(|v| validator.is_valid(&v))
}

#[test]
fn generated_valid_messages_conform_and_every_injected_kind_does_not() {
    let (ok, stdout, stderr) = run_etl(&["schema"], None);
    assert!(ok, "etl schema failed: {stderr}");
    let schema: Value = serde_json::from_str(&stdout).expect("etl schema prints JSON");
    assert_eq!(schema, transaction_schema(Rules::standard()));
    jsonschema::meta::validate(&schema).expect("a valid draft 2020-12 schema");

    let full = full_validator(&schema);
    // What a consumer gets from a validator that knows no vendor keyword.
    let plain = jsonschema::validator_for(&schema).expect("the schema compiles");
    let messages = StreamGenerator::new(
        &(0..200).map(|_| Uuid::new_v4()).collect::<Vec<_>>(),
        StreamOptions {
            seed: 23,
            invalid_ratio: 0.3,
            orphan_ratio: 0.05,
            ..StreamOptions::default()
        },
    )
    .take(3_000);
    let (mut valid, mut kinds) = (0, BTreeSet::new());
    for m in messages {
        match m.injected {
            None => {
                valid += 1;
                assert!(
                    conforms(&full, &m.payload) && conforms(&plain, &m.payload),
                    "a valid message fails the schema: {}",
                    String::from_utf8_lossy(&m.payload)
                );
            }
            Some(kind) => {
                kinds.insert(kind);
                assert!(
                    !conforms(&full, &m.payload),
                    "{kind} conforms: {}",
                    String::from_utf8_lossy(&m.payload)
                );
                // A plain validator misses exactly the documented gaps that are JSON at all.
                let documented = NOT_EXPRESSED.iter().any(|(k, _)| *k == kind.as_str());
                let json = serde_json::from_slice::<Value>(&m.payload).is_ok();
                assert_eq!(
                    conforms(&plain, &m.payload),
                    documented && json,
                    "{kind}, plain validator"
                );
            }
        }
    }
    assert!(valid > 1_500, "{valid} valid messages");
    assert_eq!(
        kinds,
        InjectedKind::ALL.into_iter().collect(),
        "every injected kind was tried"
    );
    let description = schema["description"].as_str().unwrap();
    for (kind, _) in NOT_EXPRESSED {
        assert!(
            description.contains(kind),
            "{kind} missing in {description}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn extra_categories_reach_the_printed_and_the_served_schema() {
    let (ok, stdout, stderr) = run_etl(
        &["schema", "--extra-categories", "groceries,pharmacy"],
        None,
    );
    assert!(ok, "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    let categories = printed["properties"]["category"]["enum"]
        .as_array()
        .unwrap();
    assert!(categories.contains(&"groceries".into()) && categories.contains(&"pharmacy".into()));
    let (ok, _, stderr) = run_etl(&["schema", "--extra-categories", "Home Improvement"], None);
    assert!(!ok && stderr.contains("snake_case"), "{stderr}");

    let db = TestDb::empty().await;
    let rules = Arc::new(Rules::with_extra_categories(&["groceries"]).unwrap());
    let options = ServeOptions {
        rules: rules.clone(),
        ..ServeOptions::default()
    };
    let state = AppState::new(&db.url, kafka(), options).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{SCHEMA_PATH}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app(state)).await });
    let served: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    server.abort();
    assert_eq!(served, transaction_schema(&rules));
    let served_categories = served["properties"]["category"]["enum"].as_array().unwrap();
    assert!(served_categories.contains(&"groceries".into()));
}
