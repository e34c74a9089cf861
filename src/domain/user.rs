//! A row of `user_registrations_YYYY_MM.csv` (ARCHITECTURE §3) and the rules that make rows coherent:
//! income follows age, tier follows income. The generator draws within these rules and the tests
//! check every generated row against the same functions.

use chrono::NaiveDateTime;
use uuid::Uuid;

use super::catalog::{
    BATCH_CATEGORIES, CUSTOMER_TIERS, INCOME_BRACKETS, RISK_PROFILES, USERS_CSV_HEADER,
};
use super::field::{self, FieldError, NAIVE_DATE_TIME_FORMAT, RejectKind};

/// Columns of the user file, in header order.
pub const USER_COLUMNS: [&str; 15] = [
    "user_id",
    "first_name",
    "last_name",
    "email",
    "age",
    "income_bracket",
    "customer_tier",
    "risk_profile",
    "city",
    "state",
    "country",
    "registration_date",
    "preferred_categories",
    "is_active",
    "source_system",
];

/// Ages the generator draws (ARCHITECTURE §3); the loader accepts what `users_raw` accepts.
pub const GENERATED_AGES: std::ops::RangeInclusive<u8> = 18..=75;
pub const ACCEPTED_AGES: std::ops::RangeInclusive<i64> = 18..=120;

/// Limit on free-text fields: long enough for any real name, short enough to catch garbage.
const MAX_TEXT_CHARS: usize = 255;

/// One user as the monthly file states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub age: u8,
    pub income_bracket: &'static str,
    pub customer_tier: &'static str,
    pub risk_profile: &'static str,
    pub city: String,
    pub state: String,
    pub country: String,
    pub registration_date: NaiveDateTime,
    pub preferred_categories: Vec<&'static str>,
    pub is_active: bool,
    pub source_system: String,
}

impl UserRecord {
    /// Parses one CSV record already split into fields (header order); the first bad field wins.
    pub fn parse(fields: &[&str]) -> Result<Self, FieldError> {
        check_column_count(fields.len(), USER_COLUMNS.len())?;
        let [
            user_id,
            first_name,
            last_name,
            email,
            age,
            income_bracket,
            customer_tier,
            risk_profile,
            city,
            state,
            country,
            registration_date,
            preferred_categories,
            is_active,
            source_system,
        ] = USER_COLUMNS;
        Ok(Self {
            user_id: field::uuid(user_id, fields[0])?,
            first_name: field::text(first_name, fields[1], MAX_TEXT_CHARS)?,
            last_name: field::text(last_name, fields[2], MAX_TEXT_CHARS)?,
            email: parse_email(email, fields[3])?,
            age: parse_age(age, fields[4])?,
            income_bracket: field::one_of(income_bracket, fields[5], &INCOME_BRACKETS)?,
            customer_tier: field::one_of(customer_tier, fields[6], &CUSTOMER_TIERS)?,
            risk_profile: field::one_of(risk_profile, fields[7], &RISK_PROFILES)?,
            city: field::text(city, fields[8], MAX_TEXT_CHARS)?,
            state: field::text(state, fields[9], MAX_TEXT_CHARS)?,
            country: field::text(country, fields[10], MAX_TEXT_CHARS)?,
            registration_date: field::naive_date_time(registration_date, fields[11])?,
            preferred_categories: parse_categories(preferred_categories, fields[12])?,
            is_active: field::bool_word(is_active, fields[13])?,
            source_system: field::text(source_system, fields[14], MAX_TEXT_CHARS)?,
        })
    }

    /// The row's fields in header order, as the CSV writer wants them.
    pub fn to_fields(&self) -> Vec<String> {
        vec![
            self.user_id.hyphenated().to_string(),
            self.first_name.clone(),
            self.last_name.clone(),
            self.email.clone(),
            self.age.to_string(),
            self.income_bracket.to_string(),
            self.customer_tier.to_string(),
            self.risk_profile.to_string(),
            self.city.clone(),
            self.state.clone(),
            self.country.clone(),
            self.registration_date
                .format(NAIVE_DATE_TIME_FORMAT)
                .to_string(),
            self.preferred_categories.join(","),
            self.is_active.to_string(),
            self.source_system.clone(),
        ]
    }

    /// Whether the row follows the coherence rules (income by age band, tier by income, 2–4
    /// distinct categories, an e-mail made from the name); `Err` says which rule failed.
    pub fn check_coherence(&self) -> Result<(), String> {
        if !GENERATED_AGES.contains(&self.age) {
            return Err(format!("age {} outside {GENERATED_AGES:?}", self.age));
        }
        if !income_brackets_for_age(self.age).contains(&self.income_bracket) {
            return Err(format!(
                "income {} does not fit age {}",
                self.income_bracket, self.age
            ));
        }
        if !tiers_for_income(self.income_bracket).contains(&self.customer_tier) {
            return Err(format!(
                "tier {} does not fit income {}",
                self.customer_tier, self.income_bracket
            ));
        }
        let n = self.preferred_categories.len();
        let mut distinct = self.preferred_categories.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if !(2..=4).contains(&n) || distinct.len() != n {
            return Err(format!(
                "preferred categories {:?} are not 2-4 distinct ones",
                self.preferred_categories
            ));
        }
        let expected = format!(
            "{}.{}",
            email_part(&self.first_name),
            email_part(&self.last_name)
        );
        if !self.email.starts_with(&expected) {
            return Err(format!(
                "email {} does not match name {} {}",
                self.email, self.first_name, self.last_name
            ));
        }
        Ok(())
    }
}

/// The age bands and the income brackets each allows: the young earn less, peak earners are 35–64.
pub fn income_brackets_for_age(age: u8) -> &'static [&'static str] {
    match age {
        0..=24 => &["low", "medium"],
        25..=34 => &["low", "medium", "high"],
        35..=64 => &["medium", "high", "very_high"],
        _ => &["low", "medium", "high"],
    }
}

/// The customer tiers each income bracket allows; every bracket allows at least two, so a user can
/// change tier without breaking the rule.
pub fn tiers_for_income(income_bracket: &str) -> &'static [&'static str] {
    match income_bracket {
        "low" => &["bronze", "silver"],
        "medium" => &["bronze", "silver", "gold"],
        "high" => &["silver", "gold", "platinum"],
        _ => &["gold", "platinum"],
    }
}

/// A name reduced to what an e-mail local part holds: lowercase ASCII letters and digits.
pub fn email_part(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `USERS_CSV_HEADER` split into its column names matches `USER_COLUMNS`.
pub fn header_matches(header: &str) -> bool {
    header == USERS_CSV_HEADER
}

pub(crate) fn check_column_count(found: usize, expected: usize) -> Result<(), FieldError> {
    if found == expected {
        Ok(())
    } else {
        Err(FieldError {
            column: None,
            kind: RejectKind::WrongColumnCount,
            detail: format!("expected {expected} fields, found {found}"),
        })
    }
}

fn parse_age(column: &'static str, raw: &str) -> Result<u8, FieldError> {
    let value = field::required(column, raw)?;
    let age: i64 = value.parse().map_err(|_| {
        FieldError::new(
            column,
            RejectKind::NotANumber,
            format!("{value:?} is not a whole number"),
        )
    })?;
    if !ACCEPTED_AGES.contains(&age) {
        return Err(FieldError::new(
            column,
            RejectKind::OutOfRange,
            format!("{age} is outside {ACCEPTED_AGES:?}"),
        ));
    }
    // In range 18..=120, so it fits.
    Ok(age as u8)
}

fn parse_categories(column: &'static str, raw: &str) -> Result<Vec<&'static str>, FieldError> {
    let value = field::required(column, raw)?;
    value
        .split(',')
        .map(|c| field::one_of(column, c.trim(), &BATCH_CATEGORIES))
        .collect()
}

fn parse_email(column: &'static str, raw: &str) -> Result<String, FieldError> {
    let value = field::text(column, raw, MAX_TEXT_CHARS)?;
    if is_plausible_email(&value) {
        Ok(value)
    } else {
        Err(FieldError::new(
            column,
            RejectKind::UnknownValue,
            format!("{value:?} is not an e-mail address"),
        ))
    }
}

fn is_plausible_email(value: &str) -> bool {
    match value.split_once('@') {
        Some((local, domain)) => !local.is_empty() && domain.contains('.') && !domain.contains('@'),
        None => false,
    }
}

/// A valid user row in header order, shared by the tests of the parser and of the corruptions.
#[cfg(test)]
pub(crate) const SAMPLE_ROW: [&str; 15] = [
    "67e55044-10b1-426f-9247-bb680e5fe0c8",
    "Ada",
    "Lovelace",
    "ada.lovelace@example.com",
    "36",
    "high",
    "gold",
    "moderate",
    "Austin",
    "TX",
    "US",
    "2025-03-04T05:06:07",
    "groceries,travel",
    "true",
    "third_party_registration",
];

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: [&str; 15] = SAMPLE_ROW;

    #[test]
    fn a_good_row_parses_and_round_trips() {
        let user = UserRecord::parse(&GOOD).unwrap();
        assert_eq!(user.preferred_categories, ["groceries", "travel"]);
        assert_eq!(user.to_fields(), GOOD.map(String::from).to_vec());
        user.check_coherence().unwrap();
    }

    #[test]
    fn each_bad_field_names_its_column() {
        let cases: [(usize, &str, RejectKind); 6] = [
            (0, "nope", RejectKind::BadUuid),
            (0, "", RejectKind::Missing),
            (4, "abc", RejectKind::NotANumber),
            (4, "150", RejectKind::OutOfRange),
            (6, "diamond", RejectKind::UnknownValue),
            (11, "2025-02-30T00:00:00", RejectKind::BadDate),
        ];
        for (index, value, kind) in cases {
            let mut fields = GOOD;
            fields[index] = value;
            let err = UserRecord::parse(&fields).unwrap_err();
            assert_eq!(
                (err.column, err.kind),
                (Some(USER_COLUMNS[index]), kind),
                "{value}"
            );
        }
        let err = UserRecord::parse(&GOOD[..14]).unwrap_err();
        assert_eq!((err.column, err.kind), (None, RejectKind::WrongColumnCount));
    }

    #[test]
    fn the_header_constant_lists_the_columns() {
        assert!(header_matches(&USER_COLUMNS.join(",")));
    }

    #[test]
    fn every_income_allows_two_tiers_and_fits_some_age() {
        for income in INCOME_BRACKETS {
            assert!(tiers_for_income(income).len() >= 2, "{income}");
            assert!(
                GENERATED_AGES
                    .clone()
                    .any(|a| income_brackets_for_age(a).contains(&income))
            );
        }
    }
}
