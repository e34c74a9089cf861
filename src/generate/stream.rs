//! Seeded stream traffic (ARCHITECTURE §4): an endless iterator of keyed JSON messages.
//!
//! Everything but the wall-clock timestamp follows from the seed: the same seed, users and
//! options give the same keys, fields and injected bad messages, message for message. The event
//! time draws from a random stream of its own, so switching between `--start-time` and
//! `--backfill-days` changes timestamps only.
//!
//! The shape aims at the anomaly rule of ARCHITECTURE §4, which cannot flag anything before a user's
//! 11th transaction: users are picked Zipf-like, so a head of heavy users gets hundreds of
//! transactions, and about one valid transaction in 70 is an outlier far above that user's usual
//! spend.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{LogNormal, Zipf};
use uuid::Uuid;

use crate::domain::catalog::{
    CURRENCIES, PAYMENT_METHODS, STREAM_CITIES, STREAM_MERCHANTS, STREAM_SOURCE_SYSTEM,
};

/// Share of valid transactions that are refunds (negative amounts).
const REFUND_SHARE: f64 = 0.03;
/// Share of valid transactions far above the user's usual spend.
const OUTLIER_SHARE: f64 = 0.015;
/// Share of transactions paid in the user's home currency.
const HOME_CURRENCY_SHARE: f64 = 0.85;
/// Share of transactions paid with the user's favourite method.
const FAVOURITE_PAYMENT_SHARE: f64 = 0.6;
/// Zipf exponent of user activity: 1.0 gives a heavy head and a long tail.
const USER_ACTIVITY_EXPONENT: f64 = 1.0;
/// Largest amount generated for valid messages (the validator allows up to 1,000,000).
const MAX_CENTS: i64 = 99_999_999;

/// Typical amount per category, in the transaction's currency.
const CATEGORY_TYPICAL_AMOUNT: [(&str, f64); 12] = [
    ("online_shopping", 60.0),
    ("food_delivery", 35.0),
    ("ride_sharing", 25.0),
    ("streaming_services", 14.0),
    ("gaming", 30.0),
    ("social_media", 10.0),
    ("mobile_apps", 6.0),
    ("digital_subscriptions", 15.0),
    ("crypto_trading", 400.0),
    ("peer_to_peer", 80.0),
    ("micro_transactions", 3.0),
    ("instant_transfers", 200.0),
];
/// Relative popularity of `STREAM_MERCHANTS`, same order.
const MERCHANT_WEIGHTS: [u32; 20] = [
    30, 8, 4, 12, 10, 14, 6, 10, 10, 5, 6, 3, 7, 6, 4, 4, 8, 5, 5, 3,
];
/// Relative use of `PAYMENT_METHODS`, same order.
const PAYMENT_WEIGHTS: [u32; 5] = [35, 30, 15, 10, 10];

/// The kinds of bad messages `--invalid-ratio` injects, in the order they take turns. Each name
/// is exactly the [`crate::domain::transaction::RejectionKind`] the validator reports for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InjectedKind {
    NotJson,
    InvalidUtf8,
    EmptyObject,
    MissingTxId,
    NullUserId,
    BadUuid,
    AmountAsString,
    ZeroAmount,
    AmountTooLarge,
    TooManyDecimals,
    UnknownCurrency,
    UnknownCategory,
    BadTimestamp,
    MerchantTooLong,
}

impl InjectedKind {
    pub const ALL: [InjectedKind; 14] = [
        Self::NotJson,
        Self::InvalidUtf8,
        Self::EmptyObject,
        Self::MissingTxId,
        Self::NullUserId,
        Self::BadUuid,
        Self::AmountAsString,
        Self::ZeroAmount,
        Self::AmountTooLarge,
        Self::TooManyDecimals,
        Self::UnknownCurrency,
        Self::UnknownCategory,
        Self::BadTimestamp,
        Self::MerchantTooLong,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::EmptyObject => "empty_object",
            Self::MissingTxId => "missing_tx_id",
            Self::NullUserId => "null_user_id",
            Self::BadUuid => "bad_uuid",
            Self::AmountAsString => "amount_as_string",
            Self::ZeroAmount => "zero_amount",
            Self::AmountTooLarge => "amount_too_large",
            Self::TooManyDecimals => "too_many_decimals",
            Self::UnknownCurrency => "unknown_currency",
            Self::UnknownCategory => "unknown_category",
            Self::BadTimestamp => "bad_timestamp",
            Self::MerchantTooLong => "merchant_too_long",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for InjectedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where event timestamps come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClock {
    /// The wall clock when the message is generated.
    Now,
    /// `start + sequence × step`: identical run to run.
    Fixed {
        start: DateTime<Utc>,
        step: TimeDelta,
    },
    /// Spread (seeded, uniformly) over the `days` before `end`, for demo data on daily charts.
    Backfill { end: DateTime<Utc>, days: u32 },
}

/// How to generate; tests override only what matters.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub seed: u64,
    /// Share of messages replaced by a bad message, 0.0–1.0.
    pub invalid_ratio: f64,
    /// Share of messages whose user is in no user file, 0.0–1.0.
    pub orphan_ratio: f64,
    pub clock: EventClock,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            invalid_ratio: 0.0,
            orphan_ratio: 0.0,
            clock: EventClock::Now,
        }
    }
}

/// One message ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMessage {
    /// Position in the stream, from 0; the tx_id derives from it.
    pub sequence: u64,
    pub tx_id: Uuid,
    /// The user_id as text: the message key (shared with the user's profile, not copied).
    pub key: Arc<str>,
    pub payload: Vec<u8>,
    /// Set on deliberately bad messages: what the validator must report.
    pub injected: Option<InjectedKind>,
    /// The user is in no user file (a late-arriving dimension member).
    pub orphan: bool,
}

impl StreamMessage {
    /// The message made at least `bytes` long by a leading `padding` field, which the validator
    /// ignores as it does every unknown field: large messages for capacity tests.
    pub fn padded_to(mut self, bytes: usize) -> Self {
        const OVERHEAD: usize = r#""padding":"","#.len();
        let fill = bytes.saturating_sub(self.payload.len() + OVERHEAD);
        if fill > 0 && self.payload.first() == Some(&b'{') {
            let mut padding = Vec::with_capacity(fill + OVERHEAD);
            padding.extend_from_slice(br#""padding":""#);
            padding.resize(padding.len() + fill, b'x');
            padding.extend_from_slice(br#"","#);
            self.payload.splice(1..1, padding);
        }
        self
    }
}

/// The UUIDv5 namespace of every tx_id a seed produces.
pub fn seed_namespace(seed: u64) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("etl-produce-seed-{seed}").as_bytes(),
    )
}

/// The tx_id of message `sequence` of a run with `seed`: re-running re-sends the same ids.
pub fn tx_id(namespace: &Uuid, sequence: u64) -> Uuid {
    Uuid::new_v5(namespace, &sequence.to_be_bytes())
}

/// A user's habits, fixed for the run.
#[derive(Debug, Clone)]
struct UserProfile {
    key: Arc<str>,
    city: usize,
    /// Multiplies every amount: some users spend more than others.
    spend: f64,
    favourite_payment: usize,
}

/// The fields of one valid transaction before rendering.
struct Draft<'a> {
    tx_id: Uuid,
    user: &'a UserProfile,
    cents: i64,
    currency: &'static str,
    merchant: &'static str,
    category: &'static str,
    time: DateTime<Utc>,
    /// `time` in RFC 3339 with milliseconds.
    time_text: &'a str,
    status: &'static str,
    payment_method: &'static str,
    processing_time_ms: u32,
}

/// The endless, seeded message stream. Take as many as needed.
pub struct StreamGenerator {
    options: StreamOptions,
    rng: ChaCha8Rng,
    time_rng: ChaCha8Rng,
    namespace: Uuid,
    users: Vec<UserProfile>,
    orphans: Vec<UserProfile>,
    activity: Option<Zipf<f64>>,
    merchants: WeightedIndex<u32>,
    payments: WeightedIndex<u32>,
    amount_noise: LogNormal<f64>,
    processing_time: LogNormal<f64>,
    /// The last event time rendered, by epoch millisecond: at high rates several messages in a
    /// row share one, and formatting a date is one of the dearer steps of a message.
    time_text: (i64, String),
    sequence: u64,
    injected: u64,
}

impl StreamGenerator {
    /// A stream over `users` (order does not matter). With no users at all, every message is an
    /// orphan.
    pub fn new(users: &[Uuid], options: StreamOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let mut time_rng = ChaCha8Rng::seed_from_u64(options.seed);
        time_rng.set_stream(1);
        let namespace = seed_namespace(options.seed);

        let mut sorted = users.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        // Which users are the heavy ones is the seed's choice, not the file order's.
        sorted.shuffle(&mut rng);
        let spend = LogNormal::new(0.0, 0.5).expect("valid log-normal parameters");
        let profile = |id: Uuid, rng: &mut ChaCha8Rng| UserProfile {
            key: Arc::from(id.hyphenated().to_string()),
            city: rng.random_range(0..STREAM_CITIES.len()),
            spend: spend.sample(rng),
            favourite_payment: rng.random_range(0..PAYMENT_METHODS.len()),
        };
        let profiles: Vec<UserProfile> =
            sorted.into_iter().map(|id| profile(id, &mut rng)).collect();
        let orphan_pool = (profiles.len() / 10).clamp(10, 1_000);
        let orphans = (0..orphan_pool)
            .map(|i| {
                let id = Uuid::new_v5(&namespace, format!("orphan-{i}").as_bytes());
                profile(id, &mut rng)
            })
            .collect();
        let activity = (!profiles.is_empty()).then(|| {
            Zipf::new(profiles.len() as f64, USER_ACTIVITY_EXPONENT).expect("valid Zipf parameters")
        });
        Self {
            options,
            rng,
            time_rng,
            namespace,
            users: profiles,
            orphans,
            activity,
            merchants: WeightedIndex::new(MERCHANT_WEIGHTS).expect("positive weights"),
            payments: WeightedIndex::new(PAYMENT_WEIGHTS).expect("positive weights"),
            amount_noise: LogNormal::new(0.0, 0.6).expect("valid log-normal parameters"),
            processing_time: LogNormal::new(120f64.ln(), 0.7).expect("valid log-normal parameters"),
            time_text: (i64::MIN, String::new()),
            sequence: 0,
            injected: 0,
        }
    }

    fn event_time(&mut self, sequence: u64) -> DateTime<Utc> {
        match self.options.clock {
            EventClock::Now => Utc::now(),
            EventClock::Fixed { start, step } => {
                let offset = step.checked_mul(sequence.min(i32::MAX as u64) as i32);
                offset
                    .and_then(|o| start.checked_add_signed(o))
                    .unwrap_or(start)
            }
            EventClock::Backfill { end, days } => {
                let span_ms = i64::from(days.max(1)) * 86_400_000;
                end - TimeDelta::milliseconds(self.time_rng.random_range(0..span_ms))
            }
        }
    }
}

impl Iterator for StreamGenerator {
    type Item = StreamMessage;

    fn next(&mut self) -> Option<StreamMessage> {
        let sequence = self.sequence;
        self.sequence += 1;
        let time = self.event_time(sequence);
        if self.time_text.0 != time.timestamp_millis() {
            self.time_text = (
                time.timestamp_millis(),
                time.to_rfc3339_opts(SecondsFormat::Millis, true),
            );
        }
        let rng = &mut self.rng;

        let orphan = self.activity.is_none() || rng.random_bool(self.options.orphan_ratio);
        let user = match &self.activity {
            Some(activity) if !orphan => {
                let rank = activity.sample(rng) as usize;
                &self.users[rank.clamp(1, self.users.len()) - 1]
            }
            _ => &self.orphans[rng.random_range(0..self.orphans.len())],
        };
        let injected = rng.random_bool(self.options.invalid_ratio).then(|| {
            let kind = InjectedKind::ALL[(self.injected % 14) as usize];
            self.injected += 1;
            kind
        });

        let (merchant, category) = STREAM_MERCHANTS[self.merchants.sample(rng)];
        let typical = CATEGORY_TYPICAL_AMOUNT
            .iter()
            .find(|(c, _)| *c == category)
            .map_or(20.0, |(_, a)| *a);
        let amount = if rng.random_bool(OUTLIER_SHARE) {
            // Far beyond anything this user usually spends, whatever the category.
            80.0 * user.spend * rng.random_range(20.0..50.0)
        } else {
            typical * user.spend * self.amount_noise.sample(rng)
        };
        let mut cents = ((amount * 100.0).round() as i64).clamp(1, MAX_CENTS);
        if rng.random_bool(REFUND_SHARE) {
            cents = -cents;
        }
        let (_, _, home_currency) = STREAM_CITIES[user.city];
        let currency = if rng.random_bool(HOME_CURRENCY_SHARE) {
            home_currency
        } else {
            CURRENCIES[rng.random_range(0..CURRENCIES.len())]
        };
        let status = match rng.random_range(0..100) {
            0..90 => "approved",
            90..95 => "declined",
            _ => "pending",
        };
        let status = if cents < 0 { "approved" } else { status };
        let payment_method = if rng.random_bool(FAVOURITE_PAYMENT_SHARE) {
            PAYMENT_METHODS[user.favourite_payment]
        } else {
            PAYMENT_METHODS[self.payments.sample(rng)]
        };
        let processing_time_ms = self.processing_time.sample(rng).clamp(5.0, 5_000.0) as u32;
        let tx_id = tx_id(&self.namespace, sequence);
        let draft = Draft {
            tx_id,
            user,
            cents,
            currency,
            merchant,
            category,
            time,
            time_text: &self.time_text.1,
            status,
            payment_method,
            processing_time_ms,
        };
        Some(StreamMessage {
            sequence,
            tx_id,
            payload: render(&draft, injected),
            key: user.key.clone(),
            injected,
            orphan,
        })
    }
}

/// The message value: valid JSON per ARCHITECTURE §4, or that message with one `defect`.
fn render(d: &Draft<'_>, defect: Option<InjectedKind>) -> Vec<u8> {
    use InjectedKind as K;
    if defect == Some(K::EmptyObject) {
        return b"{}".to_vec();
    }
    let mut out = Vec::with_capacity(512);
    out.push(b'{');
    let mut uuid_buf = Uuid::encode_buffer();
    match defect {
        Some(K::MissingTxId) => {}
        // Cut after the fourth group: the right alphabet, the wrong shape.
        Some(K::BadUuid) => string(&mut out, "tx_id", &d.tx_id.hyphenated().to_string()[..23]),
        _ => string(
            &mut out,
            "tx_id",
            d.tx_id.hyphenated().encode_lower(&mut uuid_buf),
        ),
    }
    match defect {
        Some(K::NullUserId) => raw(&mut out, "user_id", "null"),
        _ => string(&mut out, "user_id", &d.user.key),
    }
    let mut amount_buf = [0u8; 24];
    let amount = format_cents(d.cents, &mut amount_buf);
    match defect {
        Some(K::AmountAsString) => string(&mut out, "amount", amount),
        Some(K::ZeroAmount) => raw(&mut out, "amount", "0.00"),
        Some(K::AmountTooLarge) => {
            let mut buf = [0u8; 24];
            raw(
                &mut out,
                "amount",
                format_cents(d.cents.signum() * 250_000_000, &mut buf),
            );
        }
        Some(K::TooManyDecimals) => raw(&mut out, "amount", &format!("{amount}7")),
        _ => raw(&mut out, "amount", amount),
    }
    match defect {
        Some(K::UnknownCurrency) => string(&mut out, "currency", "BTC"),
        _ => string(&mut out, "currency", d.currency),
    }
    match defect {
        Some(K::InvalidUtf8) => {
            // A Latin-1 "é" where UTF-8 needs two bytes: the classic encoding mix-up.
            out.extend_from_slice(b"\"merchant\":\"Caf\xe9 ");
            out.extend_from_slice(d.merchant.as_bytes());
            out.extend_from_slice(b"\",");
        }
        Some(K::MerchantTooLong) => {
            let long = format!("{} ", d.merchant).repeat(256 / (d.merchant.len() + 1) + 1);
            string(&mut out, "merchant", &long);
        }
        _ => string(&mut out, "merchant", d.merchant),
    }
    match defect {
        // A batch category: right vocabulary, wrong stream.
        Some(K::UnknownCategory) => string(&mut out, "category", "groceries"),
        _ => string(&mut out, "category", d.category),
    }
    match defect {
        Some(K::BadTimestamp) => string(
            &mut out,
            "timestamp",
            &d.time.format("%Y-%m-%d %H:%M:%S").to_string(),
        ),
        _ => string(&mut out, "timestamp", d.time_text),
    }
    let (city, country, _) = STREAM_CITIES[d.user.city];
    string(&mut out, "status", d.status);
    string(&mut out, "payment_method", d.payment_method);
    string(&mut out, "city", city);
    string(&mut out, "country", country);
    string(&mut out, "source_system", STREAM_SOURCE_SYSTEM);
    string(&mut out, "transaction_type", "real_time");
    let mut ms_buf = [0u8; 20];
    raw(
        &mut out,
        "processing_time_ms",
        decimal(u64::from(d.processing_time_ms), &mut ms_buf),
    );
    // The last field's comma becomes the closing brace.
    *out.last_mut().expect("at least one field") = b'}';
    if defect == Some(K::NotJson) {
        out.truncate(out.len() / 2);
    }
    out
}

/// `"name":"value",` — every value we write is plain text without quotes, backslashes or
/// control characters, so no escaping is needed. Plain byte copies: this runs 14 times per
/// message, and `write!` would cost more than everything else in the message.
fn string(out: &mut Vec<u8>, name: &str, value: &str) {
    debug_assert!(!value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20));
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":\"");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\",");
}

/// `"name":value,` with `value` already JSON.
fn raw(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(value.as_bytes());
    out.push(b',');
}

/// 12345 → "123.45", -5 → "-0.05", written into `buf`: no allocation per message.
fn format_cents(cents: i64, buf: &mut [u8; 24]) -> &str {
    let abs = cents.unsigned_abs();
    let mut end = buf.len();
    for digit in [abs % 10, abs / 10 % 10] {
        end -= 1;
        buf[end] = b'0' + digit as u8;
    }
    end -= 1;
    buf[end] = b'.';
    let mut whole = [0u8; 20];
    let whole = decimal(abs / 100, &mut whole).as_bytes();
    let mut start = end - whole.len();
    buf[start..end].copy_from_slice(whole);
    if cents < 0 {
        start -= 1;
        buf[start] = b'-';
    }
    std::str::from_utf8(&buf[start..]).expect("ASCII digits")
}

/// `n` in decimal, written into `buf` without the formatting machinery.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[start..]).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::domain::transaction::validate;

    fn users(n: u32) -> Vec<Uuid> {
        (0..n)
            .map(|i| Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("user-{i}").as_bytes()))
            .collect()
    }

    fn fixed_clock() -> EventClock {
        EventClock::Fixed {
            start: "2025-08-15T10:30:00Z".parse().unwrap(),
            step: TimeDelta::milliseconds(100),
        }
    }

    #[test]
    fn same_seed_same_messages_other_seed_other_messages() {
        let options = StreamOptions {
            seed: 7,
            invalid_ratio: 0.1,
            orphan_ratio: 0.1,
            clock: fixed_clock(),
        };
        let a: Vec<_> = StreamGenerator::new(&users(50), options.clone())
            .take(500)
            .collect();
        let mut shuffled = users(50);
        shuffled.reverse();
        let b: Vec<_> = StreamGenerator::new(&shuffled, options.clone())
            .take(500)
            .collect();
        assert_eq!(a, b, "user order in the files must not matter");
        let c: Vec<_> = StreamGenerator::new(&users(50), StreamOptions { seed: 8, ..options })
            .take(500)
            .collect();
        assert_ne!(a[0].tx_id, c[0].tx_id);
        assert_eq!(a[3].tx_id, tx_id(&seed_namespace(7), 3));
    }

    #[test]
    fn a_padded_message_is_as_long_as_asked_and_still_the_same_valid_transaction() {
        let users = [Uuid::from_u128(7)];
        let message = StreamGenerator::new(&users, StreamOptions::default())
            .next()
            .unwrap();
        let plain = crate::domain::transaction::validate(&message.payload).unwrap();
        let padded = message.clone().padded_to(10_000);
        assert_eq!(padded.payload.len(), 10_000);
        assert_eq!(
            crate::domain::transaction::validate(&padded.payload),
            Ok(plain)
        );
        // Already long enough: unchanged.
        assert_eq!(message.clone().padded_to(10).payload, message.payload);
    }

    #[test]
    fn the_clock_changes_timestamps_only() {
        let wall = StreamOptions {
            seed: 3,
            ..StreamOptions::default()
        };
        let backfill = StreamOptions {
            clock: EventClock::Backfill {
                end: Utc::now(),
                days: 30,
            },
            ..wall.clone()
        };
        let a: Vec<_> = StreamGenerator::new(&users(20), wall).take(200).collect();
        let b: Vec<_> = StreamGenerator::new(&users(20), backfill)
            .take(200)
            .collect();
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (validate(&x.payload).unwrap(), validate(&y.payload).unwrap());
            assert_eq!(
                (x.tx_id, x.user_id, x.amount),
                (y.tx_id, y.user_id, y.amount)
            );
            assert!(y.event_time <= Utc::now());
            assert!(y.event_time > Utc::now() - TimeDelta::days(31));
        }
    }

    #[test]
    fn valid_messages_pass_and_injected_ones_fail_with_their_kind() {
        let known: HashSet<Uuid> = users(100).into_iter().collect();
        let options = StreamOptions {
            seed: 11,
            invalid_ratio: 0.2,
            orphan_ratio: 0.05,
            clock: fixed_clock(),
        };
        let mut kinds: HashMap<InjectedKind, usize> = HashMap::new();
        let mut orphans = 0;
        let mut valid = 0;
        for m in StreamGenerator::new(&users(100), options).take(20_000) {
            match m.injected {
                Some(kind) => {
                    let rejection = validate(&m.payload).expect_err(kind.as_str());
                    assert_eq!(rejection.kind.as_str(), kind.as_str(), "{rejection}");
                    *kinds.entry(kind).or_default() += 1;
                }
                None => {
                    let tx = validate(&m.payload)
                        .unwrap_or_else(|r| panic!("{r}: {}", String::from_utf8_lossy(&m.payload)));
                    assert_eq!(tx.tx_id, m.tx_id);
                    assert_eq!(tx.user_id.to_string(), *m.key);
                    assert_eq!(known.contains(&tx.user_id), !m.orphan);
                    valid += 1;
                    orphans += usize::from(m.orphan);
                }
            }
        }
        assert_eq!(kinds.len(), 14, "every kind appears: {kinds:?}");
        let (min, max) = (kinds.values().min().unwrap(), kinds.values().max().unwrap());
        assert!(max - min <= 1, "kinds take turns: {kinds:?}");
        let injected: usize = kinds.values().sum();
        assert!(
            (3_600..=4_400).contains(&injected),
            "{injected} of 20000 at 0.2"
        );
        let share = orphans as f64 / valid as f64;
        assert!((0.04..=0.06).contains(&share), "orphan share {share}");
    }

    #[test]
    fn traffic_looks_real_and_gives_the_anomaly_rule_work() {
        let messages: Vec<_> = StreamGenerator::new(&users(1_000), StreamOptions::default())
            .take(20_000)
            .map(|m| validate(&m.payload).unwrap())
            .collect();
        let count = |f: &dyn Fn(&crate::domain::transaction::Transaction) -> bool| {
            messages.iter().filter(|t| f(t)).count() as f64 / messages.len() as f64
        };
        assert!((0.88..0.93).contains(&count(&|t| t.status == "approved")));
        assert!((0.03..0.07).contains(&count(&|t| t.status == "declined")));
        assert!((0.01..0.05).contains(&count(&|t| t.amount.is_sign_negative())));
        let merchants: HashSet<&str> = messages.iter().map(|t| t.merchant.as_str()).collect();
        let categories: HashSet<&str> = messages.iter().map(|t| t.category).collect();
        let currencies: HashSet<&str> = messages.iter().map(|t| t.currency).collect();
        assert_eq!(
            (merchants.len(), categories.len(), currencies.len()),
            (20, 12, 5)
        );

        // Replay ARCHITECTURE §4's rule: heavy users exist and some of their transactions stand out.
        let mut per_user: HashMap<Uuid, (f64, f64, f64)> = HashMap::new();
        let mut flagged = 0;
        for t in &messages {
            let x: f64 = t.amount.try_into().unwrap();
            let (n, mean, m2) = per_user.entry(t.user_id).or_default();
            *n += 1.0;
            let delta = x - *mean;
            *mean += delta / *n;
            *m2 += delta * (x - *mean);
            if *n >= 2.0 {
                let sd = (*m2 / (*n - 1.0)).sqrt();
                if sd > 0.0 && ((x - *mean) / sd).abs() > 3.0 {
                    flagged += 1;
                }
            }
        }
        let heavy = per_user.values().filter(|(n, _, _)| *n >= 50.0).count();
        assert!(heavy >= 20, "{heavy} users with ≥ 50 transactions");
        assert!(flagged >= 50, "{flagged} anomalies in 20000");
    }

    #[test]
    fn fixed_clock_advances_by_step() {
        let mut g = StreamGenerator::new(
            &users(3),
            StreamOptions {
                clock: fixed_clock(),
                ..StreamOptions::default()
            },
        );
        let t: Vec<_> = (&mut g)
            .take(3)
            .map(|m| validate(&m.payload).unwrap().event_time.to_rfc3339())
            .collect();
        assert_eq!(
            t,
            [
                "2025-08-15T10:30:00+00:00",
                "2025-08-15T10:30:00.100+00:00",
                "2025-08-15T10:30:00.200+00:00"
            ]
        );
    }

    #[test]
    fn no_users_means_all_orphans() {
        let m = StreamGenerator::new(&[], StreamOptions::default())
            .next()
            .unwrap();
        assert!(m.orphan);
        assert!(validate(&m.payload).is_ok());
    }

    #[test]
    fn cents_are_formatted_exactly() {
        let cents = |c| format_cents(c, &mut [0; 24]).to_string();
        assert_eq!(cents(12345), "123.45");
        assert_eq!(cents(-5), "-0.05");
        assert_eq!(cents(100), "1.00");
        assert_eq!(cents(99_999_999), "999999.99");
        assert_eq!(cents(-250_000_000), "-2500000.00");
        assert_eq!(cents(i64::MIN), "-92233720368547758.08");
        assert_eq!(decimal(0, &mut [0; 20]), "0");
        assert_eq!(decimal(u64::MAX, &mut [0; 20]), "18446744073709551615");
    }
}
