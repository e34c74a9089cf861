//! Query and path parameters, parsed by hand so that every bad value is a 400 naming the
//! parameter (never a 500, never a value passed on unchecked), whatever bytes it holds.

use std::ops::RangeInclusive;

use chrono::{Datelike, NaiveDate};
use uuid::Uuid;

use super::error::ApiError;

/// Longest parameter value quoted back in an error message.
const QUOTE_CHARS: usize = 40;

/// The query string as decoded by axum (invalid UTF-8 already replaced, so it fails below).
/// A parameter given twice, or given empty, is refused: which value was meant would be a guess.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The parameter's value; `None` when absent.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let value = values.next();
        if values.next().is_some() {
            return Err(ApiError::bad_request(format!(
                "`{name}` is given more than once"
            )));
        }
        match value {
            Some("") => Err(ApiError::bad_request(format!(
                "`{name}` is empty; leave it out for the default"
            ))),
            other => Ok(other),
        }
    }

    pub fn int(
        &self,
        name: &str,
        default: i64,
        range: RangeInclusive<i64>,
    ) -> Result<i64, ApiError> {
        let Some(text) = self.get(name)? else {
            return Ok(default);
        };
        let value: i64 = text.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "`{name}` must be a whole number from {} to {}, got {}",
                range.start(),
                range.end(),
                quote(text)
            ))
        })?;
        if !range.contains(&value) {
            return Err(ApiError::bad_request(format!(
                "`{name}` must be from {} to {}, got {value}",
                range.start(),
                range.end()
            )));
        }
        Ok(value)
    }

    pub fn float(&self, name: &str, range: RangeInclusive<f64>) -> Result<Option<f64>, ApiError> {
        let Some(text) = self.get(name)? else {
            return Ok(None);
        };
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() && range.contains(&value) => Ok(Some(value)),
            _ => Err(ApiError::bad_request(format!(
                "`{name}` must be a number from {} to {}, got {}",
                range.start(),
                range.end(),
                quote(text)
            ))),
        }
    }

    pub fn date(&self, name: &str) -> Result<Option<NaiveDate>, ApiError> {
        self.get(name)?
            .map(|text| parse_date(name, text))
            .transpose()
    }

    pub fn uuid(&self, name: &str) -> Result<Option<Uuid>, ApiError> {
        self.get(name)?
            .map(|text| parse_uuid(name, text))
            .transpose()
    }

    /// One of `allowed`, or `None` when absent or `all`.
    pub fn choice(
        &self,
        name: &str,
        allowed: &[&'static str],
    ) -> Result<Option<&'static str>, ApiError> {
        let Some(text) = self.get(name)?.filter(|v| *v != "all") else {
            return Ok(None);
        };
        allowed
            .iter()
            .copied()
            .find(|a| *a == text)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`{name}` must be one of all, {}; got {}",
                    allowed.join(", "),
                    quote(text)
                ))
            })
    }
}

/// A calendar date written YYYY-MM-DD, in years 1–9999 (what PostgreSQL and people agree on).
pub fn parse_date(name: &str, text: &str) -> Result<NaiveDate, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "`{name}` must be a date written YYYY-MM-DD, got {}",
            quote(text)
        ))
    };
    if text.len() != 10 || !text.is_ascii() {
        return Err(bad());
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad())?;
    if !(1..=9999).contains(&date.year()) {
        return Err(bad());
    }
    Ok(date)
}

pub fn parse_uuid(name: &str, text: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(text)
        .map_err(|_| ApiError::bad_request(format!("`{name}` must be a UUID, got {}", quote(text))))
}

/// The value for an error message: shortened, control characters escaped.
fn quote(text: &str) -> String {
    let mut short: String = text.chars().take(QUOTE_CHARS).collect();
    if text.chars().count() > QUOTE_CHARS {
        short.push('…');
    }
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn hostile_values_are_refused_with_the_parameter_named() {
        for bad in [
            "'; drop table x; --",
            "\0",
            "-1",
            "1e3",
            "999999999999999999999",
            "5 ",
        ] {
            let err = params(&[("limit", bad)])
                .int("limit", 5, 1..=100)
                .unwrap_err();
            assert!(err.to_string().contains("`limit`"), "{err}");
        }
        for bad in [
            "2025-13-01",
            "2025-1-1",
            "+10000-01-01",
            "0000-01-01",
            "2025-01-01\0",
            "２０２５-01-01",
        ] {
            assert!(params(&[("d", bad)]).date("d").is_err(), "{bad}");
        }
        for bad in ["NaN", "inf", "-1", "abc"] {
            assert!(
                params(&[("z", bad)]).float("z", 0.0..=1e6).is_err(),
                "{bad}"
            );
        }
        let long = "x".repeat(10_000);
        let err = params(&[("user_id", &long)]).uuid("user_id").unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn repeated_and_empty_parameters_are_refused() {
        assert!(
            params(&[("limit", "5"), ("limit", "6")])
                .int("limit", 5, 1..=100)
                .is_err()
        );
        assert!(params(&[("limit", "")]).int("limit", 5, 1..=100).is_err());
        assert!(params(&[("other", "")]).int("limit", 5, 1..=100).is_ok());
    }

    #[test]
    fn good_values_and_defaults() {
        let p = params(&[("limit", "7"), ("d", "2025-08-15"), ("status", "approved")]);
        assert_eq!(p.int("limit", 5, 1..=100).unwrap(), 7);
        assert_eq!(p.int("offset", 0, 0..=10).unwrap(), 0);
        assert_eq!(p.date("d").unwrap(), NaiveDate::from_ymd_opt(2025, 8, 15));
        assert_eq!(
            p.choice("status", &["approved", "declined"]).unwrap(),
            Some("approved")
        );
        assert_eq!(
            params(&[("status", "all")])
                .choice("status", &["approved"])
                .unwrap(),
            None
        );
    }
}
