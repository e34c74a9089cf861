//! One month of users and batch transactions (ARCHITECTURE §3), as pure seeded iterators.
//!
//! Every random choice, UUIDs included, comes from ChaCha streams seeded by (seed, month, purpose),
//! so the same options give the same rows, other months give other users, and changing the number
//! of transactions leaves the users untouched.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Utc};
use fake::Fake;
use fake::faker::name::en::{FirstName, LastName};
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::domain::batch_transaction::BatchTransaction;
use crate::domain::catalog::{BATCH_CATEGORIES, CURRENCIES, RISK_PROFILES, USER_SOURCE_SYSTEM};
use crate::domain::user::{UserRecord, income_brackets_for_age, tiers_for_income};

/// Share of a month's user rows that restate earlier users, from the second month on.
pub const RESTATED_SHARE: f64 = 0.10;

/// What to generate. Tests override only what matters: `..Default::default()`.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthlyOptions {
    pub month: Month,
    /// User rows, restatements included.
    pub users: u64,
    pub transactions: u64,
    pub seed: u64,
    /// Share of rows in each file written deliberately bad, in `[0, 1]`.
    pub invalid_ratio: f64,
}

impl Default for MonthlyOptions {
    fn default() -> Self {
        Self {
            month: Month::new(2025, 1).expect("a valid month"),
            users: 1_000,
            transactions: 5_000,
            seed: 42,
            invalid_ratio: 0.0,
        }
    }
}

/// A calendar month, the unit of the batch files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    /// `None` unless 1 ≤ month ≤ 12 and the year is within 2000–2100.
    pub fn new(year: i32, month: u32) -> Option<Self> {
        ((1..=12).contains(&month) && (2000..=2100).contains(&year)).then_some(Self { year, month })
    }

    /// Parses `YYYY-MM` (the CLI's form) or `YYYY_MM` (the file names' form).
    pub fn parse(text: &str) -> Option<Self> {
        let (year, month) = text.split_once(['-', '_'])?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        Self::new(year.parse().ok()?, month.parse().ok()?)
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("validated month")
    }

    pub fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn start(self) -> NaiveDateTime {
        self.first_day()
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
    }

    /// Seconds in the month, so that `start + [0, seconds)` stays inside it.
    pub fn seconds(self) -> i64 {
        (self.next().start() - self.start()).num_seconds()
    }

    /// `YYYY_MM`, as in the file names.
    pub fn file_label(self) -> String {
        format!("{:04}_{:02}", self.year, self.month)
    }

    pub fn users_file_name(self) -> String {
        format!("user_registrations_{}.csv", self.file_label())
    }

    pub fn transactions_file_name(self) -> String {
        format!("transactions_{}.csv", self.file_label())
    }

    pub fn contains(self, at: NaiveDateTime) -> bool {
        at.year() == self.year && at.month() == self.month
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Independent random streams, so that one purpose's draws never shift another's.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Users = 1,
    Transactions = 2,
    Sampling = 4,
}

fn rng_for(seed: u64, month: Month, stream: Stream) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..12].copy_from_slice(&month.year.to_le_bytes());
    key[12..16].copy_from_slice(&month.month.to_le_bytes());
    key[16] = stream as u8;
    ChaCha8Rng::from_seed(key)
}

/// A UUID (version 4 layout) drawn from the seeded stream rather than the OS.
fn seeded_uuid(rng: &mut ChaCha8Rng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

/// Earlier users this month can restate or reference: every id, and a seeded sample of full
/// records (latest version of each user) to restate.
#[derive(Debug, Default, Clone)]
pub struct PriorUsers {
    pub ids: Vec<Uuid>,
    pub restatable: Vec<UserRecord>,
}

/// Builds [`PriorUsers`] from earlier files in one pass, keeping only `capacity` full records
/// (reservoir sampling), so memory stays bounded however many months precede.
pub struct PriorUsersBuilder {
    capacity: usize,
    seen: std::collections::HashSet<Uuid>,
    prior: PriorUsers,
    rng: ChaCha8Rng,
}

impl PriorUsersBuilder {
    /// `capacity`: how many users the month will restate.
    pub fn new(options: &MonthlyOptions) -> Self {
        Self {
            capacity: restated_count(options.users),
            seen: Default::default(),
            prior: PriorUsers::default(),
            rng: rng_for(options.seed, options.month, Stream::Sampling),
        }
    }

    /// Adds a user row from an earlier file. Feed the newest file first: a user's first
    /// appearance is its latest version, later (older) ones are ignored.
    pub fn add(&mut self, user: UserRecord) {
        if !self.seen.insert(user.user_id) {
            return;
        }
        self.prior.ids.push(user.user_id);
        let n = self.prior.ids.len();
        if self.prior.restatable.len() < self.capacity {
            self.prior.restatable.push(user);
        } else if self.capacity > 0 {
            let slot = self.rng.random_range(0..n);
            if slot < self.capacity {
                self.prior.restatable[slot] = user;
            }
        }
    }

    pub fn build(self) -> PriorUsers {
        self.prior
    }
}

/// Restatements a month with earlier users carries for `users` rows.
pub fn restated_count(users: u64) -> usize {
    (users as f64 * RESTATED_SHARE).round() as usize
}

/// A generated user row and whether it restates an earlier user.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub record: UserRecord,
    pub restated: bool,
}

/// The month's user rows: new registrations, and from the second month on ~10 % restatements.
pub struct UserRows {
    month: Month,
    rng: ChaCha8Rng,
    remaining: u64,
    restate_remaining: u64,
    restatable: Vec<UserRecord>,
}

impl UserRows {
    pub fn new(options: &MonthlyOptions, prior: &PriorUsers) -> Self {
        let mut rng = rng_for(options.seed, options.month, Stream::Users);
        let mut restatable = prior.restatable.clone();
        let restate = restated_count(options.users).min(restatable.len());
        restatable.truncate(restate);
        // The reservoir's order depends on file order; shuffle so restatements are not grouped.
        rand::seq::SliceRandom::shuffle(restatable.as_mut_slice(), &mut rng);
        Self {
            month: options.month,
            rng,
            remaining: options.users,
            restate_remaining: restate as u64,
            restatable,
        }
    }

    fn new_user(&mut self) -> UserRecord {
        let rng = &mut self.rng;
        let user_id = seeded_uuid(rng);
        let first_name: String = FirstName().fake_with_rng(rng);
        let last_name: String = LastName().fake_with_rng(rng);
        let email = format!(
            "{}.{}{}@{}",
            crate::domain::user::email_part(&first_name),
            crate::domain::user::email_part(&last_name),
            rng.random_range(1..1000),
            EMAIL_DOMAINS.choose(rng).expect("non-empty")
        );
        let age = draw_age(rng);
        let income_bracket = weighted_first(rng, income_brackets_for_age(age));
        let customer_tier = weighted_first(rng, tiers_for_income(income_bracket));
        let risk_profile = *RISK_PROFILES.choose(rng).expect("non-empty");
        let (city, state) = *CITIES.choose(rng).expect("non-empty");
        let registration_date =
            self.month.start() + Duration::seconds(rng.random_range(0..self.month.seconds()));
        let mut categories = BATCH_CATEGORIES;
        let count = rng.random_range(2..=4);
        let (chosen, _) = rand::seq::SliceRandom::partial_shuffle(&mut categories[..], rng, count);
        UserRecord {
            user_id,
            first_name,
            last_name,
            email,
            age,
            income_bracket,
            customer_tier,
            risk_profile,
            city: city.to_string(),
            state: state.to_string(),
            country: "US".to_string(),
            registration_date,
            preferred_categories: chosen.to_vec(),
            is_active: rng.random_bool(0.85),
            source_system: USER_SOURCE_SYSTEM.to_string(),
        }
    }

    /// The earlier user with at least one of tier, city/state or is_active changed.
    fn restate(&mut self, mut user: UserRecord) -> UserRecord {
        let rng = &mut self.rng;
        let first = rng.random_range(0..3);
        // About a third of restatements change two things at once.
        let second = rng.random_bool(0.3).then(|| (first + 1) % 3);
        for change in std::iter::once(first).chain(second) {
            match change {
                0 => {
                    let others: Vec<&str> = tiers_for_income(user.income_bracket)
                        .iter()
                        .copied()
                        .filter(|t| *t != user.customer_tier)
                        .collect();
                    user.customer_tier = others.choose(rng).expect("two tiers per income");
                }
                1 => {
                    let (city, state) = loop {
                        let pair = *CITIES.choose(rng).expect("non-empty");
                        if pair.0 != user.city {
                            break pair;
                        }
                    };
                    user.city = city.to_string();
                    user.state = state.to_string();
                }
                _ => user.is_active = !user.is_active,
            }
        }
        user
    }
}

impl Iterator for UserRows {
    type Item = UserRow;

    fn next(&mut self) -> Option<UserRow> {
        if self.remaining == 0 {
            return None;
        }
        // Sequential selection: exactly `restate_remaining` of the rows left, at random places.
        let restated = self.restate_remaining > 0
            && self.rng.random_range(0..self.remaining) < self.restate_remaining;
        self.remaining -= 1;
        let record = if restated {
            self.restate_remaining -= 1;
            let user = self.restatable.pop().expect("counted restatements");
            self.restate(user)
        } else {
            self.new_user()
        };
        Some(UserRow { record, restated })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// A user transactions can reference; new users' transactions come after their registration.
#[derive(Debug, Clone, Copy)]
pub struct Payer {
    pub user_id: Uuid,
    pub registered: Option<NaiveDateTime>,
}

/// The month's batch transactions, each by a user of this month or of an earlier one.
pub struct TransactionRows<'a> {
    month: Month,
    rng: ChaCha8Rng,
    remaining: u64,
    new_users: &'a [Payer],
    prior_ids: &'a [Uuid],
}

impl<'a> TransactionRows<'a> {
    /// `None` when there are transactions to make but no user to make them.
    pub fn new(
        options: &MonthlyOptions,
        new_users: &'a [Payer],
        prior_ids: &'a [Uuid],
    ) -> Option<Self> {
        if options.transactions > 0 && new_users.is_empty() && prior_ids.is_empty() {
            return None;
        }
        Some(Self {
            month: options.month,
            rng: rng_for(options.seed, options.month, Stream::Transactions),
            remaining: options.transactions,
            new_users,
            prior_ids,
        })
    }
}

impl Iterator for TransactionRows<'_> {
    type Item = BatchTransaction;

    fn next(&mut self) -> Option<BatchTransaction> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let rng = &mut self.rng;
        let tx_id = seeded_uuid(rng);
        let pick = rng.random_range(0..self.new_users.len() + self.prior_ids.len());
        let payer = match self.new_users.get(pick) {
            Some(payer) => *payer,
            None => Payer {
                user_id: self.prior_ids[pick - self.new_users.len()],
                registered: None,
            },
        };
        let from = payer.registered.unwrap_or(self.month.start());
        let span = (self.month.next().start() - from).num_seconds().max(1);
        let at = from + Duration::seconds(rng.random_range(0..span));
        let category = *BATCH_CATEGORIES.choose(rng).expect("non-empty");
        let (merchants, median) = merchants_for(category);
        let merchant = merchants.choose(rng).expect("non-empty").to_string();
        let spread = LogNormal::new(median.ln(), 0.6).expect("valid log-normal");
        let cents = (spread.sample(rng) * 100.0)
            .round()
            .clamp(1.0, 99_999_999.0) as i64;
        // A few percent are refunds.
        let sign = if rng.random_bool(0.04) { -1 } else { 1 };
        let currency = weighted_first(rng, &CURRENCIES);
        Some(BatchTransaction {
            tx_id,
            user_id: payer.user_id,
            amount: Decimal::new(sign * cents, 2),
            currency,
            merchant,
            category,
            timestamp: DateTime::<Utc>::from_naive_utc_and_offset(at, Utc).fixed_offset(),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// Age bands with their weights, then a uniform age inside the band.
fn draw_age(rng: &mut ChaCha8Rng) -> u8 {
    const BANDS: [((u8, u8), u32); 5] = [
        ((18, 24), 15),
        ((25, 34), 25),
        ((35, 49), 25),
        ((50, 64), 20),
        ((65, 75), 15),
    ];
    let (low, high) = BANDS
        .choose_weighted(rng, |(_, w)| *w)
        .expect("positive weights")
        .0;
    rng.random_range(low..=high)
}

/// Picks from `options` with weights falling with the position (n, n−1, …, 1): the first option is
/// the most common, as bronze is among tiers and USD among currencies.
fn weighted_first(rng: &mut ChaCha8Rng, options: &'static [&'static str]) -> &'static str {
    let n = options.len();
    let weights: Vec<usize> = (0..n).map(|i| n - i).collect();
    let total: usize = weights.iter().sum();
    let mut roll = rng.random_range(0..total);
    for (option, weight) in options.iter().zip(weights) {
        if roll < weight {
            return option;
        }
        roll -= weight;
    }
    options[n - 1]
}

const EMAIL_DOMAINS: [&str; 5] = [
    "example.com",
    "mail.example.org",
    "inbox.example.net",
    "post.example.com",
    "webmail.example.org",
];

/// Real city/state pairs, so a restated move stays a plausible address.
const CITIES: [(&str, &str); 20] = [
    ("New York", "NY"),
    ("Los Angeles", "CA"),
    ("Chicago", "IL"),
    ("Houston", "TX"),
    ("Phoenix", "AZ"),
    ("Philadelphia", "PA"),
    ("San Antonio", "TX"),
    ("San Diego", "CA"),
    ("Dallas", "TX"),
    ("Austin", "TX"),
    ("Jacksonville", "FL"),
    ("Columbus", "OH"),
    ("Charlotte", "NC"),
    ("Indianapolis", "IN"),
    ("Seattle", "WA"),
    ("Denver", "CO"),
    ("Boston", "MA"),
    ("Nashville", "TN"),
    ("Portland", "OR"),
    ("Miami", "FL"),
];

/// Merchants of each batch category and the category's median amount in the currency's units.
fn merchants_for(category: &str) -> (&'static [&'static str], f64) {
    match category {
        "groceries" => (
            &["Whole Foods", "Kroger", "Trader Joe's", "Safeway", "Costco"],
            60.0,
        ),
        "entertainment" => (
            &["AMC Theatres", "Ticketmaster", "Dave & Buster's", "Regal"],
            40.0,
        ),
        "travel" => (
            &["Delta Air Lines", "Marriott", "Expedia", "Hertz", "Airbnb"],
            350.0,
        ),
        "technology" => (
            &["Best Buy", "Apple Store", "Newegg", "Micro Center"],
            250.0,
        ),
        "fashion" => (&["Zara", "H&M", "Nordstrom", "Uniqlo", "Macy's"], 80.0),
        "health" => (&["CVS Pharmacy", "Walgreens", "GNC", "Rite Aid"], 35.0),
        _ => (&["Coursera", "Barnes & Noble", "Udemy", "Chegg"], 90.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(month: u32) -> MonthlyOptions {
        MonthlyOptions {
            month: Month::new(2025, month).unwrap(),
            users: 300,
            transactions: 500,
            ..Default::default()
        }
    }

    #[test]
    fn months_parse_in_both_forms() {
        assert_eq!(Month::parse("2025-03"), Month::new(2025, 3));
        assert_eq!(Month::parse("2025_12"), Month::new(2025, 12));
        assert_eq!(Month::parse("2025-13"), None);
        assert_eq!(Month::parse("25-01"), None);
        assert_eq!(
            Month::new(2025, 12).unwrap().next(),
            Month::new(2026, 1).unwrap()
        );
    }

    #[test]
    fn same_options_same_users_other_month_other_users() {
        let prior = PriorUsers::default();
        let a: Vec<_> = UserRows::new(&options(1), &prior)
            .map(|r| r.record)
            .collect();
        let b: Vec<_> = UserRows::new(&options(1), &prior)
            .map(|r| r.record)
            .collect();
        let c: Vec<_> = UserRows::new(&options(2), &prior)
            .map(|r| r.record)
            .collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|u| c.iter().all(|v| v.user_id != u.user_id)));
    }

    #[test]
    fn new_users_are_coherent_and_registered_in_the_month() {
        let opts = options(2);
        for row in UserRows::new(&opts, &PriorUsers::default()) {
            assert!(!row.restated);
            row.record.check_coherence().unwrap();
            assert!(opts.month.contains(row.record.registration_date));
        }
    }

    #[test]
    fn restatements_change_something_and_stay_coherent() {
        let first: Vec<UserRecord> = UserRows::new(&options(1), &PriorUsers::default())
            .map(|r| r.record)
            .collect();
        let mut builder = PriorUsersBuilder::new(&options(2));
        first.iter().cloned().for_each(|u| builder.add(u));
        let prior = builder.build();
        let rows: Vec<UserRow> = UserRows::new(&options(2), &prior).collect();
        let restated: Vec<_> = rows.iter().filter(|r| r.restated).collect();
        assert_eq!(restated.len(), restated_count(300));
        for row in restated {
            let before = first
                .iter()
                .find(|u| u.user_id == row.record.user_id)
                .unwrap();
            row.record.check_coherence().unwrap();
            assert!(
                before.customer_tier != row.record.customer_tier
                    || before.city != row.record.city
                    || before.is_active != row.record.is_active,
                "nothing changed for {}",
                before.user_id
            );
        }
    }

    #[test]
    fn transactions_follow_registration_and_stay_in_the_month() {
        let opts = options(1);
        let users: Vec<Payer> = UserRows::new(&opts, &PriorUsers::default())
            .map(|r| Payer {
                user_id: r.record.user_id,
                registered: Some(r.record.registration_date),
            })
            .collect();
        let txs: Vec<_> = TransactionRows::new(&opts, &users, &[]).unwrap().collect();
        assert_eq!(txs.len(), 500);
        for tx in txs {
            let payer = users.iter().find(|p| p.user_id == tx.user_id).unwrap();
            let at = tx.timestamp.naive_utc();
            assert!(opts.month.contains(at) && at >= payer.registered.unwrap());
            assert_eq!(tx.amount.scale(), 2);
        }
        assert!(TransactionRows::new(&opts, &[], &[]).is_none());
    }
}
