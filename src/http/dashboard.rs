//! The dashboard (`/`) and the stream page (`/stream`): static pages of our own that poll
//! `/api/dashboard` and `/api/stream` and draw their charts as SVG themselves.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::params::Params;
use super::state::AppState;
use crate::domain::catalog::STATUSES;
use crate::kafka::admin::{self, TopicInfo};

pub async fn dashboard_page() -> Html<&'static str> {
    Html(include_str!("assets/dashboard.html"))
}

pub async fn stream_page() -> Html<&'static str> {
    Html(include_str!("assets/stream.html"))
}

pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/charts.js"),
    )
}

pub async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/style.css"),
    )
}

/// What the dashboard shows (stream transactions; amounts in USD).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Dashboard {
    pub generated_at: DateTime<Utc>,
    pub days: i32,
    pub status: String,
    pub kpis: Kpis,
    /// Rows written by the sink per second over the last minute.
    pub ingest_per_second: f64,
    /// Messages in the transactions topic that the sink has not written yet; null when Kafka
    /// does not answer.
    #[serde(default)]
    pub consumer_lag: Option<i64>,
    /// Transactions per minute over the last hour (by event time).
    pub per_minute: Vec<MinuteCount>,
    pub by_category: Vec<Slice>,
    pub by_country: Vec<Slice>,
    pub top_merchants: Vec<Slice>,
    pub anomaly_severity: Vec<SeverityCount>,
    pub latest: Vec<LatestTransaction>,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Kpis {
    pub transactions: i64,
    pub total_usd: f64,
    pub average_usd: f64,
    /// 0–1.
    pub approval_rate: f64,
    /// 0–1.
    pub anomaly_rate: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MinuteCount {
    pub minute: DateTime<Utc>,
    pub count: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Slice {
    pub label: String,
    pub spend_usd: f64,
    pub count: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeverityCount {
    pub label: String,
    pub count: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LatestTransaction {
    pub tx_id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub event_time: DateTime<Utc>,
    pub amount: f64,
    pub currency: String,
    pub amount_usd: f64,
    pub merchant: String,
    pub category: String,
    pub status: String,
    pub country: Option<String>,
    pub is_anomaly: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    pub tx_id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub event_time: DateTime<Utc>,
    pub amount: f64,
    pub currency: String,
    pub amount_usd: f64,
    pub merchant: String,
    pub category: String,
    pub z_score: f64,
}

/// The dashboard's data.
#[utoipa::path(get, path = "/api/dashboard", tag = "dashboard",
    params(
        ("days" = Option<i64>, Query, minimum = 1, maximum = 30, description = "Lookback: 1, 7 or 30 days (default 1)"),
        ("status" = Option<String>, Query, description = "all, approved, declined or pending (default all)"),
    ),
    responses(
        (status = 200, description = "KPIs, chart series and tables", body = Dashboard),
        (status = 400, description = "A parameter is malformed or out of range", body = ErrorBody),
        (status = 503, description = "The database is unavailable, too slow, or the models are not built", body = ErrorBody),
    ))]
pub async fn dashboard_data(
    State(state): State<AppState>,
    Query(params): Query<Params>,
) -> Result<Json<Dashboard>, ApiError> {
    let days = params.int("days", 1, 1..=30)? as i32;
    if ![1, 7, 30].contains(&days) {
        return Err(ApiError::bad_request("`days` must be 1, 7 or 30"));
    }
    let status = params.choice("status", &STATUSES)?;
    let query = sqlx::query_scalar::<_, DbJson<Dashboard>>(include_str!("sql/dashboard.sql"))
        .bind(days)
        .bind(status)
        .fetch_one(&state.pool);
    let (dashboard, stream) = tokio::join!(query, sink_positions(&state));
    let DbJson(mut dashboard) = dashboard?;
    dashboard.consumer_lag = stream.ok().and_then(|topic| topic.lag);
    Ok(Json(dashboard))
}

/// The stream page's data.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamStatus {
    pub group: String,
    /// The transactions topic with the sink's position, then the dead-letter and anomalies topics.
    pub topics: Vec<TopicStatus>,
    pub dead_letters: DeadLetters,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopicStatus {
    pub name: String,
    /// Null when the broker does not answer or the topic does not exist.
    pub error: Option<String>,
    pub partitions: Vec<PartitionStatus>,
    /// Total lag of the sink's group (transactions topic only).
    pub lag: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionStatus {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
    /// Next offset the sink will write (from etl.sink_offsets, where it commits with the rows).
    pub sink_offset: Option<i64>,
    pub lag: Option<i64>,
    pub sink_updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetters {
    /// Every kind with its count.
    pub kinds: Vec<KindCount>,
    /// The newest, of the chosen kind when one is chosen.
    pub newest: Vec<DeadLetter>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KindCount {
    pub kind: String,
    pub count: i64,
}

/// A dead letter as the sink recorded it: its `error.kind` and `error.message` headers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub kind: String,
    pub message: String,
    /// The first 300 bytes of the original message, non-printable bytes escaped.
    pub payload: Option<String>,
    pub rejected_at: DateTime<Utc>,
}

/// Topics, partitions, offsets, the sink's lag and the newest dead letters.
#[utoipa::path(get, path = "/api/stream", tag = "dashboard",
    params(
        ("kind" = Option<String>, Query, description = "Only dead letters of this error.kind"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Dead letters shown (default 50)"),
    ),
    responses(
        (status = 200, description = "The stream's state", body = StreamStatus),
        (status = 400, description = "A parameter is malformed or out of range", body = ErrorBody),
        (status = 503, description = "The database is unavailable or too slow", body = ErrorBody),
    ))]
pub async fn stream_data(
    State(state): State<AppState>,
    Query(params): Query<Params>,
) -> Result<Json<StreamStatus>, ApiError> {
    let limit = params.int("limit", 50, 1..=200)?;
    let kind = params.get("kind")?.filter(|k| *k != "all");
    if kind.is_some_and(|k| k.len() > 100 || k.contains('\0')) {
        return Err(ApiError::bad_request("`kind` is not an error kind"));
    }
    let letters =
        sqlx::query_scalar::<_, DbJson<DeadLetters>>(include_str!("sql/dead_letters.sql"))
            .bind(kind)
            .bind(limit)
            .fetch_one(&state.pool);
    let others = async {
        let mut topics = Vec::new();
        for name in [&state.options.dlq_topic, &state.options.anomalies_topic] {
            topics.push(describe(&state, name).await);
        }
        topics
    };
    let (letters, main, others) = tokio::join!(letters, sink_positions(&state), others);
    let DbJson(dead_letters) = letters?;
    let mut topics = vec![main?];
    topics.extend(others);
    Ok(Json(StreamStatus {
        group: state.options.group.clone(),
        topics,
        dead_letters,
    }))
}

/// One topic's partitions and watermarks, or why they are unknown.
async fn describe(state: &AppState, name: &str) -> TopicStatus {
    let described = tokio::time::timeout(
        state.options.kafka_timeout,
        admin::describe_topics(&state.kafka, Some(name)),
    )
    .await;
    let (partitions, error) = match described {
        Ok(Ok(topics)) => (topics.into_iter().next().map(partitions_of), None),
        Ok(Err(err)) => {
            tracing::debug!(%err, topic = name, "describing a topic");
            (None, Some(public_kafka_error(&err)))
        }
        Err(_) => (None, Some("Kafka does not answer in time".to_string())),
    };
    TopicStatus {
        name: name.to_string(),
        error,
        partitions: partitions.unwrap_or_default(),
        lag: None,
    }
}

fn public_kafka_error(err: &crate::kafka::KafkaError) -> String {
    match err {
        crate::kafka::KafkaError::UnknownTopic { .. } => "the topic does not exist".into(),
        _ => "Kafka does not answer".into(),
    }
}

fn partitions_of(topic: TopicInfo) -> Vec<PartitionStatus> {
    topic
        .partitions
        .into_iter()
        .map(|p| PartitionStatus {
            partition: p.id,
            low: p.low,
            high: p.high,
            sink_offset: None,
            lag: None,
            sink_updated_at: None,
        })
        .collect()
}

/// The transactions topic with the sink's written position per partition and the lag.
async fn sink_positions(state: &AppState) -> Result<TopicStatus, ApiError> {
    let offsets =
        sqlx::query_as::<_, (i32, i64, DateTime<Utc>)>(include_str!("sql/sink_offsets.sql"))
            .bind(&state.options.group)
            .bind(&state.options.topic)
            .fetch_all(&state.pool);
    let (topic, offsets) = tokio::join!(describe(state, &state.options.topic), offsets);
    let offsets = offsets?;
    let mut topic = topic;
    let mut total = None;
    for p in &mut topic.partitions {
        let written = offsets.iter().find(|(id, _, _)| *id == p.partition);
        // A partition the sink never wrote from starts at the low watermark.
        let next = written.map_or(p.low, |(_, next, _)| *next);
        p.sink_offset = written.map(|(_, next, _)| *next);
        p.sink_updated_at = written.map(|(_, _, at)| *at);
        let lag = (p.high - next).max(0);
        p.lag = Some(lag);
        *total.get_or_insert(0) += lag;
    }
    topic.lag = if topic.error.is_none() { total } else { None };
    Ok(topic)
}
