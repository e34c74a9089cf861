//! `etl serve` (issue 14): every endpoint over a seeded database and a real broker, the
//! 400/404/422/503 paths, auth on writes, hostile parameters, metrics and the OpenAPI document;
//! then the dashboard in headless Chromium.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use etl::http::seed::{SeedOptions, seed};
use etl::http::{AppState, ServeOptions, app};
use etl::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestDb, TestTopic, kafka};

/// A running `etl serve` on a port of its own, stopped when dropped.
struct Server {
    base: String,
    client: reqwest::Client,
    cancel: CancellationToken,
    db: TestDb,
    /// Stream tx_ids the seed wrote (empty when not seeded).
    tx_ids: Vec<Uuid>,
    _topic: Option<TestTopic>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn small_seed() -> SeedOptions {
    SeedOptions {
        users: 200,
        batch_rows: 600,
        stream_rows: 2_500,
        stream_users: 40,
        days: 10,
        seed: 14,
        models_dir: models_dir(),
    }
}

/// Serves `db`; with `seeded`, fills it first. The topic is the test's own.
async fn start_with(
    db: TestDb,
    seeded: bool,
    settings: KafkaSettings,
    topic: Option<TestTopic>,
    options: ServeOptions,
) -> Server {
    let tx_ids = if seeded {
        seed(&db.pool, &small_seed()).await.expect("seeding")
    } else {
        Vec::new()
    };
    let options = ServeOptions {
        topic: topic
            .as_ref()
            .map_or_else(|| "no-such-topic".into(), |t| t.name.clone()),
        ..options
    };
    let state = AppState::new(&db.url, settings, options)
        .await
        .expect("serve state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        axum::serve(listener, app(state))
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
    });
    Server {
        base,
        client: reqwest::Client::new(),
        cancel,
        db,
        tx_ids,
        _topic: topic,
    }
}

async fn seeded() -> Server {
    let topic = TestTopic::new(3).await;
    start_with(
        TestDb::migrated().await,
        true,
        kafka(),
        Some(topic),
        ServeOptions::default(),
    )
    .await
}

impl Server {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
}

fn event(tx_id: Uuid, user_id: Uuid) -> Value {
    json!({"tx_id": tx_id, "user_id": user_id, "amount": 42.5, "currency": "EUR",
           "merchant": "Amazon", "category": "online_shopping",
           "timestamp": "2026-01-02T03:04:05Z", "status": "approved",
           "payment_method": "credit_card", "city": "Berlin", "country": "DE"})
}

#[tokio::test]
async fn health_names_each_dependency_and_probes_answer() {
    let server = seeded().await;
    let (status, body) = server.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"status": "ok", "postgres": "ok", "kafka": "ok"})
    );
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(server.get("/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn health_is_503_naming_kafka_when_the_broker_is_gone_and_events_are_503() {
    let options = ServeOptions {
        kafka_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let server = start_with(
        TestDb::migrated().await,
        false,
        KafkaSettings::new("127.0.0.1:1"),
        None,
        options,
    )
    .await;
    let (status, body) = server.get("/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["postgres"], "ok");
    assert_ne!(body["kafka"], "ok");
    assert_eq!(
        server.get("/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
    let body = event(Uuid::new_v4(), Uuid::new_v4()).to_string();
    let (status, answer) = server.post("/events", body, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(error_of(&answer).contains("Kafka"), "{answer}");
}

#[tokio::test]
async fn a_transaction_comes_with_its_user_as_of_its_time_and_its_merchant() {
    let server = seeded().await;
    let tx_id = server.tx_ids[7];
    let (status, body) = server.get(&format!("/transactions/{tx_id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (user_id, amount, merchant, category): (Uuid, f64, String, String) = sqlx::query_as(
        "select user_id, amount::float8, merchant, category from transactions_sink where tx_id = $1",
    )
    .bind(tx_id)
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    assert_eq!(body["tx_id"], tx_id.to_string());
    assert_eq!(body["source"], "stream");
    assert_eq!(body["amount"].as_f64(), Some(amount));
    assert_eq!(
        body["merchant"],
        json!({"name": merchant, "category": category})
    );
    assert_eq!(body["user"]["user_id"], user_id.to_string());
    let (name, tier): (String, String) = sqlx::query_as(
        "select first_name || ' ' || last_name, customer_tier from users_raw where user_id = $1 limit 1",
    )
    .bind(user_id)
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    assert_eq!(body["user"]["name"], name);
    assert_eq!(body["user"]["tier"], tier);

    // A batch transaction is found too.
    let batch: Uuid = sqlx::query_scalar("select tx_id from transactions_batch_raw limit 1")
        .fetch_one(&server.db.pool)
        .await
        .unwrap();
    let (status, body) = server.get(&format!("/transactions/{batch}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["source"], "batch");
    assert!(body["status"].is_null());

    let (status, body) = server
        .get(&format!("/transactions/{}", Uuid::new_v4()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&body).starts_with("no transaction"));
    let (status, body) = server.get("/transactions/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("tx_id"), "{body}");
}

#[tokio::test]
async fn top_merchants_match_the_mart_and_bad_ranges_say_which_parameter() {
    let server = seeded().await;
    let (start, end): (chrono::NaiveDate, chrono::NaiveDate) =
        sqlx::query_as("select min(date), max(date) from analytics.daily_merchant_revenue")
            .fetch_one(&server.db.pool)
            .await
            .unwrap();
    let (status, body) = server
        .get(&format!(
            "/merchants/top?start_date={start}&end_date={end}&limit=3"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected: Vec<(String, f64, i64)> = sqlx::query_as(
        "select merchant, sum(revenue_usd)::float8, sum(transaction_count)::int8
         from analytics.daily_merchant_revenue group by merchant order by 2 desc, 1 limit 3",
    )
    .fetch_all(&server.db.pool)
    .await
    .unwrap();
    let rows = body.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for (row, (merchant, revenue, count)) in rows.iter().zip(&expected) {
        assert_eq!(row["merchant"], *merchant);
        assert!(
            (row["revenue_usd"].as_f64().unwrap() - revenue).abs() < 0.005,
            "{row}"
        );
        assert_eq!(row["transaction_count"].as_i64(), Some(*count));
        let avg = row["avg_transaction_usd"].as_f64().unwrap();
        assert!((avg - revenue / *count as f64).abs() < 0.01, "{row}");
        assert!(row["category"].is_string());
    }
    let (status, body) = server
        .get("/merchants/top?start_date=2001-01-01&end_date=2001-01-31")
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
    for (query, names) in [
        ("start_date=2025-02-30", "start_date"),
        ("end_date=yesterday", "end_date"),
        ("start_date=2025-02-01&end_date=2025-01-01", "start_date"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
    ] {
        let (status, body) = server.get(&format!("/merchants/top?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(error_of(&body).contains(names), "{query}: {body}");
    }
}

#[tokio::test]
async fn user_trends_add_up_and_unknown_users_are_404() {
    let server = seeded().await;
    let user_id: Uuid = sqlx::query_scalar(
        "select user_id from transactions_sink group by user_id order by count(*) desc limit 1",
    )
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    let (status, body) = server
        .get(&format!("/users/{user_id}/trends?days=30"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected: i64 = sqlx::query_scalar(
        "select (select count(*) from transactions_sink where user_id = $1
                   and event_time >= now() - interval '30 days')
              + (select count(*) from transactions_batch_raw b where user_id = $1
                   and timestamp >= now() - interval '30 days'
                   and not exists (select 1 from transactions_sink s where s.tx_id = b.tx_id))",
    )
    .bind(user_id)
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    assert!(expected > 10);
    assert_eq!(body["totals"]["transaction_count"].as_i64(), Some(expected));
    let daily: i64 = body["daily"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["transaction_count"].as_i64().unwrap())
        .sum();
    assert_eq!(daily, expected);
    let by_currency: i64 = body["currencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["transaction_count"].as_i64().unwrap())
        .sum();
    assert_eq!(by_currency, expected);
    assert!(body["top_categories"].as_array().unwrap().len() <= 5);
    assert_eq!(body["recent"].as_array().unwrap().len(), 10);
    assert!(body["user"]["name"].is_string());

    let (status, body) = server
        .get(&format!("/users/{}/trends", Uuid::new_v4()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = server.get("/users/nope/trends").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = server.get(&format!("/users/{user_id}/trends?days=0")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("days"));
}

#[tokio::test]
async fn anomalies_are_newest_first_count_all_matches_and_filter() {
    let server = seeded().await;
    let expected: i64 = sqlx::query_scalar(
        "select count(*) from transactions_sink where is_anomaly and event_time >= now() - interval '7 days'",
    )
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    assert!(expected > 2, "the seed should flag some anomalies");
    let (status, body) = server.get("/anomalies?days=7&limit=2&offset=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"].as_i64(), Some(expected));
    let page = body["anomalies"].as_array().unwrap();
    assert_eq!(page.len(), 2);
    assert!(page[0]["event_time"].as_str() >= page[1]["event_time"].as_str());
    assert!(
        page.iter()
            .all(|a| a["z_score"].as_f64().unwrap().abs() > 3.0)
    );

    let user = page[0]["user_id"].as_str().unwrap();
    let (_, mine) = server
        .get(&format!("/anomalies?days=7&user_id={user}"))
        .await;
    assert!(
        mine["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["user_id"] == user)
    );
    assert!(mine["count"].as_i64().unwrap() >= 1);
    let (_, strong) = server.get("/anomalies?days=30&min_z=6").await;
    assert!(
        strong["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["z_score"].as_f64().unwrap().abs() >= 6.0 && a["severity"] == "severe")
    );
    let (_, none) = server.get("/anomalies?days=30&min_z=1000000").await;
    assert_eq!(none, json!({"count": 0, "anomalies": []}));
    for query in [
        "limit=0",
        "limit=501",
        "offset=-1",
        "days=abc",
        "user_id=123",
        "min_z=-3",
        "min_z=NaN",
    ] {
        let (status, body) = server.get(&format!("/anomalies?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
}

/// Every parameter of every read endpoint, with values meant to break things: answered 400,
/// or 200/404 with nothing, and never with a server error or a leaked internal.
#[tokio::test]
async fn hostile_parameters_are_400_or_empty_never_500() {
    let server = seeded().await;
    let hostile = [
        "'",
        "%27%20OR%20%271%27%3D%271",
        "1;DROP%20TABLE%20transactions_sink;--",
        "%00",
        "a%00b",
        &"9".repeat(5_000),
        "-1",
        "-99999999999999999999",
        "1e309",
        "NaN",
        "%FF%FE",
        "%E2%80%AE",
        "%3Cscript%3E",
        "..%2F..%2Fetc%2Fpasswd",
        "0x10",
        "",
    ];
    let paths: Vec<String> = hostile
        .iter()
        .flat_map(|v| {
            [
                format!("/transactions/{v}"),
                format!("/users/{v}/trends"),
                format!("/merchants/top?start_date={v}"),
                format!("/merchants/top?end_date={v}"),
                format!("/merchants/top?limit={v}"),
                format!("/anomalies?days={v}"),
                format!("/anomalies?limit={v}"),
                format!("/anomalies?offset={v}"),
                format!("/anomalies?user_id={v}"),
                format!("/anomalies?min_z={v}"),
                format!("/users/{}/trends?days={v}", Uuid::nil()),
                format!("/api/dashboard?days={v}"),
                format!("/api/dashboard?status={v}"),
                format!("/api/stream?kind={v}"),
                format!("/api/stream?limit={v}"),
            ]
        })
        .collect();
    for path in &paths {
        let (status, body) = server.get(path).await;
        assert!(
            matches!(status.as_u16(), 200 | 400 | 404),
            "{path} answered {status}: {body}"
        );
        let text = body.to_string().to_lowercase();
        for leak in ["sqlx", "postgres", "select ", "syntax", "panicked"] {
            assert!(!text.contains(leak), "{path} leaked {leak:?}: {body}");
        }
    }
    let (status, _) = server
        .get(&format!("/transactions/{}", "a".repeat(8_000)))
        .await;
    assert!(matches!(status.as_u16(), 400 | 414 | 431), "{status}");
    // Still fine afterwards, and the table is still there.
    let rows: i64 = sqlx::query_scalar("select count(*) from transactions_sink")
        .fetch_one(&server.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 2_500);
}

#[tokio::test]
async fn events_are_validated_produced_with_key_and_header_and_refused_field_by_field() {
    let server = seeded().await;
    let topic = server._topic.as_ref().unwrap().name.clone();
    let (tx_id, user_id) = (Uuid::new_v4(), Uuid::new_v4());
    let payload = event(tx_id, user_id).to_string();
    let (status, body) = server.post("/events", payload.clone(), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["tx_id"], tx_id.to_string());
    let (partition, offset) = (
        body["partition"].as_i64().unwrap() as i32,
        body["offset"].as_i64().unwrap(),
    );

    let group = format!("it-serve-{}", Uuid::new_v4().simple());
    let consumer: BaseConsumer = kafka().consumer_config(&group).create().unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&topic, partition, Offset::Offset(offset))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let message = loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => break m.detach(),
            Some(Err(e)) => panic!("consuming: {e}"),
            None => assert!(
                std::time::Instant::now() < deadline,
                "the event did not arrive within 30 s"
            ),
        }
    };
    assert_eq!(message.key(), Some(user_id.to_string().as_bytes()));
    assert_eq!(message.payload(), Some(payload.as_bytes()));
    let headers = message.headers().unwrap();
    let produced_at = (0..headers.count())
        .map(|i| headers.get(i))
        .find(|h| h.key == "produced_at")
        .unwrap();
    let micros: i64 = std::str::from_utf8(produced_at.value.unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert!((chrono::Utc::now().timestamp_micros() - micros).abs() < 60_000_000);

    // Every invalid field is listed with the validator's kind.
    let bad = json!({"tx_id": "nope", "user_id": user_id, "amount": 1.234, "currency": "XXX",
                     "merchant": "m", "category": "online_shopping",
                     "timestamp": "2026-01-02T03:04:05Z", "status": "approved"});
    let (status, body) = server.post("/events", bad.to_string(), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let kinds: Vec<(&str, &str)> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["field"].as_str().unwrap(), f["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("tx_id", "bad_uuid"),
            ("amount", "too_many_decimals"),
            ("currency", "unknown_currency"),
            ("payment_method", "missing_payment_method")
        ]
    );
    for (body, kind) in [
        ("not json", "not_json"),
        ("[]", "not_object"),
        ("{}", "empty_object"),
    ] {
        let (status, answer) = server.post("/events", body, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["fields"][0]["kind"], kind);
    }
    let huge = format!(r#"{{"merchant":"{}"}}"#, "x".repeat(100_000));
    let (status, _) = server.post("/events", huge, None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn with_a_token_writes_need_it_and_reads_stay_open() {
    let topic = TestTopic::new(1).await;
    let options = ServeOptions {
        api_token: Some("s3cret-token".into()),
        ..Default::default()
    };
    let server = start_with(
        TestDb::migrated().await,
        false,
        kafka(),
        Some(topic),
        options,
    )
    .await;
    let body = || event(Uuid::new_v4(), Uuid::new_v4()).to_string();
    let (status, answer) = server.post("/events", body(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(error_of(&answer).contains("Bearer"));
    assert_eq!(
        server.post("/events", body(), Some("s3cret-toke")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .post("/events", body(), Some("s3cret-token-"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // Authorization comes before validation: a stranger learns nothing about the payload.
    assert_eq!(
        server.post("/events", "{}", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, answer) = server.post("/events", body(), Some("s3cret-token")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (status, _) = server.get("/anomalies").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_query_stuck_past_the_statement_timeout_is_503_and_the_server_recovers() {
    let options = ServeOptions {
        statement_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let server = start_with(TestDb::migrated().await, false, kafka(), None, options).await;
    let mut blocker = server.db.pool.begin().await.unwrap();
    sqlx::query("lock table transactions_sink in access exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let (status, body) = server
        .get(&format!("/transactions/{}", Uuid::new_v4()))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(error_of(&body).contains("statement timeout"), "{body}");
    blocker.rollback().await.unwrap();
    let (status, _) = server
        .get(&format!("/transactions/{}", Uuid::new_v4()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn marts_that_are_not_built_are_503_with_advice() {
    let server = start_with(
        TestDb::migrated().await,
        false,
        kafka(),
        None,
        ServeOptions::default(),
    )
    .await;
    for path in ["/merchants/top", "/api/dashboard"] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert!(error_of(&body).contains("etl build-models"), "{body}");
    }
}

#[tokio::test]
async fn metrics_have_a_duration_histogram_per_route_and_status() {
    let server = start_with(
        TestDb::migrated().await,
        false,
        kafka(),
        None,
        ServeOptions::default(),
    )
    .await;
    server
        .get(&format!("/transactions/{}", Uuid::new_v4()))
        .await;
    server.get("/transactions/x").await;
    server.get("/healthz").await;
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    for series in [
        r#"etl_http_request_duration_seconds_count{method="GET",route="/transactions/{tx_id}",status="404"} 1"#,
        r#"etl_http_request_duration_seconds_count{method="GET",route="/transactions/{tx_id}",status="400"} 1"#,
        r#"etl_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"} 1"#,
        "# HELP etl_http_request_duration_seconds",
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }
    assert!(
        !text.contains("route=\"/transactions/x\""),
        "ids must not become labels"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let server = start_with(
        TestDb::migrated().await,
        false,
        kafka(),
        None,
        ServeOptions::default(),
    )
    .await;
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/health",
        "/healthz",
        "/readyz",
        "/transactions/{tx_id}",
        "/merchants/top",
        "/users/{user_id}/trends",
        "/anomalies",
        "/events",
        etl::domain::schema::SCHEMA_PATH,
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["paths"]["/events"]["post"]["responses"]["422"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let (status, body) = server.get("/no/such/thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("openapi.json"));
}

#[tokio::test]
async fn dashboard_data_matches_the_database_and_the_stream_page_filters_dead_letters() {
    let server = seeded().await;
    let (status, body) = server.get("/api/dashboard?days=7&status=approved").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (count, total): (i64, f64) = sqlx::query_as(
        "select count(*), coalesce(sum(round(s.amount * c.rate_to_usd, 2)), 0)::float8
         from transactions_sink s join analytics.dim_currencies c on c.currency_code = s.currency
         where event_time >= now() - interval '7 days' and status = 'approved'",
    )
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    assert_eq!(body["kpis"]["transactions"].as_i64(), Some(count));
    assert!((body["kpis"]["total_usd"].as_f64().unwrap() - total).abs() < 0.005);
    assert_eq!(body["kpis"]["approval_rate"].as_f64(), Some(1.0));
    assert_eq!(body["per_minute"].as_array().unwrap().len(), 60);
    assert_eq!(body["latest"].as_array().unwrap().len(), 20);
    assert!(
        body["latest"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "approved")
    );
    assert_eq!(
        server.get("/api/dashboard?days=3").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        server.get("/api/dashboard?status=lost").await.0,
        StatusCode::BAD_REQUEST
    );

    for (offset, kind) in [(1, "not_json"), (2, "bad_uuid"), (3, "bad_uuid")] {
        sqlx::query(
            "insert into transactions_rejected (kafka_topic, kafka_partition, kafka_offset, error_kind, error_message, payload)
             values ('transactions', 0, $1, $2, 'because', '\\xff00'::bytea)",
        )
        .bind(offset as i64)
        .bind(kind)
        .execute(&server.db.pool)
        .await
        .unwrap();
    }
    let (status, body) = server.get("/api/stream?kind=bad_uuid").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let newest = body["dead_letters"]["newest"].as_array().unwrap();
    assert_eq!(newest.len(), 2);
    assert!(
        newest
            .iter()
            .all(|d| d["kind"] == "bad_uuid" && d["message"] == "because")
    );
    assert_eq!(
        body["dead_letters"]["kinds"][0],
        json!({"kind": "bad_uuid", "count": 2})
    );
    let topic = &body["topics"][0];
    assert_eq!(topic["name"], server._topic.as_ref().unwrap().name);
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(topic["lag"].as_i64(), Some(0));
    for page in ["/", "/stream", "/assets/charts.js", "/assets/style.css"] {
        let response = server
            .client
            .get(format!("{}{page}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("http://") && !text.contains("https://") || page == "/assets/charts.js",
            "{page} must fetch nothing from outside"
        );
    }
}

/// A WebDriver session on Debian's chromium through chromedriver, ended when dropped.
struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        // A process group of its own, which the browser it launches joins: killing the group
        // ends both (killing chromedriver alone orphans a running chromium).
        let driver = std::process::Command::new("chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver is missing: run scripts/install-test-tools.sh (chromium, chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_until("chromedriver answers", Duration::from_secs(30), || async {
            let status = http.get(format!("{base}/status")).send().await.ok()?;
            let body: Value = status.json().await.ok()?;
            body["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1600,1400",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        Self {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn script(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver leads its own process group (see `start`), and the browser is in it.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

/// Polls `check` until it yields a value; fails the test with `what` after `timeout`.
async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Thousands separators, as the dashboard writes counts.
fn grouped(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[tokio::test]
async fn the_dashboard_in_chromium_shows_the_databases_numbers_and_new_transactions() {
    let server = seeded().await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/?days=7", server.base)).await;
    let charts = [
        "chart-per-minute",
        "chart-category",
        "chart-country",
        "chart-merchants",
        "chart-severity",
    ];
    let all_drawn = format!(
        "return {:?}.every(id => document.querySelector('#' + id + ' svg.drawn') !== null)
             && document.getElementById('kpi-transactions').dataset.value !== undefined",
        charts
    );
    wait_until("every chart is drawn", Duration::from_secs(30), || async {
        browser
            .script(&all_drawn)
            .await
            .as_bool()
            .filter(|drawn| *drawn)
    })
    .await;

    let shown = browser
        .script(
            "const kpi = id => ({value: document.getElementById(id).dataset.value,
                                 text: document.getElementById(id).textContent});
             return {transactions: kpi('kpi-transactions'), total: kpi('kpi-total'),
                     average: kpi('kpi-average'), approval: kpi('kpi-approval'),
                     anomaly: kpi('kpi-anomaly'),
                     bars: document.querySelectorAll('#chart-category rect').length,
                     latest: document.querySelectorAll('#latest tbody tr').length};",
        )
        .await;
    let (count, total, average, approval, anomaly): (i64, f64, f64, f64, f64) = sqlx::query_as(
        "select count(*), sum(round(s.amount * c.rate_to_usd, 2))::float8,
                round(avg(round(s.amount * c.rate_to_usd, 2)), 2)::float8,
                avg((status = 'approved')::int)::float8, avg(is_anomaly::int)::float8
         from transactions_sink s join analytics.dim_currencies c on c.currency_code = s.currency
         where event_time >= now() - interval '7 days'",
    )
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    assert_eq!(shown["transactions"]["text"], grouped(count), "{shown}");
    assert_eq!(shown["transactions"]["value"], count.to_string());
    let value = |kpi: &str| {
        shown[kpi]["value"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert!((value("total") - total).abs() < 0.005, "{shown} vs {total}");
    assert!(
        (value("average") - average).abs() < 0.005,
        "{shown} vs {average}"
    );
    assert_eq!(
        shown["average"]["text"],
        format!("${}", format_cents(average))
    );
    assert_eq!(
        shown["approval"]["text"],
        format!("{:.1}%", approval * 100.0),
        "{shown}"
    );
    assert_eq!(
        shown["anomaly"]["text"],
        format!("{:.2}%", anomaly * 100.0),
        "{shown}"
    );
    assert!(shown["bars"].as_i64().unwrap() >= 5, "{shown}");
    assert_eq!(shown["latest"].as_i64(), Some(20));

    // A transaction that lands now shows up at the top of the table without a reload.
    let tx_id = Uuid::new_v4();
    sqlx::query(
        "insert into transactions_sink (tx_id, user_id, amount, currency, merchant, category, event_time,
             status, payment_method, city, country, kafka_topic, kafka_partition, kafka_offset,
             user_txn_count, user_running_mean)
         values ($1, $2, 123.45, 'USD', 'Brand New Merchant', 'gaming', now(), 'approved', 'apple_pay',
                 'Austin', 'US', 'transactions', 0, 999999, 1, 123.45)",
    )
    .bind(tx_id)
    .bind(Uuid::new_v4())
    .execute(&server.db.pool)
    .await
    .unwrap();
    let row = format!("#latest tbody tr[data-key='{tx_id}']");
    let first = wait_until(
        "the new transaction appears",
        Duration::from_secs(30),
        || async {
            let found = browser
                .script(&format!(
                    "const r = document.querySelector(\"{row}\");
                 return r ? r.parentNode.rows[0] === r && r.textContent : null;"
                ))
                .await;
            found.as_str().map(str::to_string)
        },
    )
    .await;
    assert!(first.contains("Brand New Merchant"), "{first}");
    let updated: i64 = browser
        .script("return Number(document.getElementById('kpi-transactions').dataset.value);")
        .await
        .as_i64()
        .unwrap();
    assert_eq!(updated, count + 1);

    let dashboard = browser.screenshot("dashboard.png").await;
    eprintln!("dashboard screenshot: {}", dashboard.display());

    // The stream page: the topic's partitions and the dead letters, filterable by kind.
    sqlx::query(
        "insert into transactions_rejected (kafka_topic, kafka_partition, kafka_offset, error_kind, error_message, payload)
         values ('transactions', 1, 10, 'unknown_currency', 'field `currency` is \"XYZ\"', '{\"currency\":\"XYZ\"}'),
                ('transactions', 2, 11, 'not_json', 'the message is not JSON', 'oops')",
    )
    .execute(&server.db.pool)
    .await
    .unwrap();
    browser
        .open(&format!("{}/stream?kind=not_json", server.base))
        .await;
    let letters = wait_until("the stream page lists the dead letters", Duration::from_secs(30), || async {
        let rows = browser
            .script(
                "const rows = document.querySelectorAll('#dead-letters tbody tr');
                 const parts = document.querySelectorAll('[data-topic] tbody tr').length;
                 return rows.length && parts ? Array.from(rows).map(r => r.cells[2].textContent) : null;",
            )
            .await;
        rows.as_array().cloned()
    })
    .await;
    assert_eq!(letters, [json!("not_json")]);
    let stream = browser.screenshot("stream.png").await;
    eprintln!("stream screenshot: {}", stream.display());
}

/// `1234.5` as `1,234.50`.
fn format_cents(value: f64) -> String {
    let cents = (value * 100.0).round() as i64;
    format!("{}.{:02}", grouped(cents / 100), (cents % 100).abs())
}

/// The contract check of CI: scripts/contract-check.sh runs schemathesis against /openapi.json
/// of `etl serve --scratch` (this build's binary), bounded to 60 s of generated requests; it
/// fails on any 5xx and on any response that does not match the document.
#[test]
fn the_api_keeps_its_openapi_contract_under_schemathesis() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let services = crate::helpers::services();
    let output = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/contract-check.sh"
    ))
    .env("ETL_BIN", env!("CARGO_BIN_EXE_etl"))
    .env("DATABASE_URL", &services.database_url)
    .env("KAFKA_BROKERS", &services.kafka_brokers)
    .env("CONTRACT_PORT", port.to_string())
    .env("CONTRACT_MAX_TIME", "60")
    .env("CONTRACT_EXAMPLES", "20")
    .output()
    .expect("running scripts/contract-check.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the contract check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
}
