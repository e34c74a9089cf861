//! The JSON Schema (draft 2020-12) of the stream message, rendered from [`crate::domain::rules`]:
//! the same table and the same vocabularies and bounds [`crate::domain::transaction::validate_with`]
//! checks against, so a new category or a changed bound shows up here without anyone editing a
//! schema file. `etl schema` prints it and `etl serve` serves it at `/schema/transaction.json`.
//!
//! JSON Schema cannot say everything the validator checks; what it cannot, [`NOT_EXPRESSED`]
//! lists, the schema's `description` repeats, and the validator stays the authority.

use serde_json::{Map, Value, json};

use super::rules::{FIELDS, Rules, Shape};

/// Where the schema is served by `etl serve`, also its `$id`'s path.
pub const SCHEMA_PATH: &str = "/schema/transaction.json";

/// Rejection kinds whose rule the schema does not check, each with the reason, for the schema's
/// description. A message refused only for one of these conforms to the schema (the schema test
/// checks exactly that); a new kind the schema cannot express belongs here.
pub const NOT_EXPRESSED: [(&str, &str); 5] = [
    (
        "too_many_decimals",
        "at most 2 decimals in `amount`: `multipleOf: 0.01` is evaluated in binary floating point \
         by most validators, which then refuse valid amounts such as 0.07, so the rule is given as \
         the annotation `x-etl-max-decimals` instead",
    ),
    (
        "duplicate_field",
        "a field given twice: JSON parsers silently keep one of the two",
    ),
    (
        "invalid_utf8",
        "the bytes must be UTF-8: checked before any schema applies",
    ),
    (
        "not_json",
        "the bytes must be one JSON document: checked before any schema applies",
    ),
    (
        "bad_processing_time_ms",
        "`processing_time_ms` written as 150.0: JSON Schema's `integer` admits it, the validator \
         wants an integer literal",
    ),
];

/// [`NOT_EXPRESSED`] as one paragraph.
fn limitations() -> String {
    let items: Vec<String> = NOT_EXPRESSED
        .iter()
        .map(|(kind, why)| format!("[{kind}] {why}"))
        .collect();
    format!(
        "Not checked by this schema, only by the sink's validator (which dead-letters with the \
         kind in brackets): {}. `merchant` must contain a character that is not white space: the \
         schema's pattern uses the regular-expression class \\S, the validator Unicode's \
         White_Space property (they differ only for rare characters).",
        items.join("; ")
    )
}

/// The schema for messages valid under `rules`.
pub fn transaction_schema(rules: &Rules) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for spec in &FIELDS {
        let name = spec.field.name();
        let mut property = shape_schema(spec.shape, rules);
        property.insert("description".into(), spec.description.into());
        if !spec.required {
            // Optional fields may also be null; `type` already holds a string or a list.
            let declared = property.remove("type").unwrap_or(Value::Null);
            property.insert("type".into(), json!([declared, "null"]));
        } else {
            required.push(Value::from(name));
        }
        properties.insert(name.into(), Value::Object(property));
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("urn:etl:stream-message{SCHEMA_PATH}"),
        "title": "Transaction (the value of a message on the transactions topic)",
        "description": format!(
            "UTF-8 JSON, key = user_id (ARCHITECTURE §4). Unknown extra fields are allowed and ignored. {}",
            limitations()
        ),
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": true,
    })
}

fn shape_schema(shape: Shape, rules: &Rules) -> Map<String, Value> {
    let schema = match shape {
        // No `format: uuid`: validators that assert formats would refuse the unhyphenated form,
        // which the validator accepts. The pattern admits exactly what `Uuid::try_parse` does:
        // simple, hyphenated, braced and URN forms.
        Shape::Uuid => json!({
            "type": "string",
            "pattern": UUID_PATTERN,
        }),
        Shape::Amount => json!({
            "type": "number",
            "minimum": -rules.max_abs_amount,
            "maximum": rules.max_abs_amount,
            "not": { "const": 0 },
            "x-etl-max-decimals": rules.max_amount_decimals,
        }),
        Shape::OneOf(vocabulary) => json!({
            "type": "string",
            "enum": rules.vocabulary(vocabulary),
        }),
        Shape::Merchant => json!({
            "type": "string",
            "minLength": 1,
            "maxLength": rules.max_merchant_chars,
            "pattern": "\\S",
        }),
        Shape::Timestamp => json!({
            "type": "string",
            "format": "date-time",
            "pattern": timestamp_pattern(rules.event_years.clone()),
        }),
        Shape::Text => json!({ "type": "string" }),
        Shape::Millis => json!({
            "type": "integer",
            "minimum": 0,
            "maximum": i32::MAX,
        }),
    };
    match schema {
        Value::Object(map) => map,
        _ => unreachable!("every shape is a JSON object"),
    }
}

const UUID_PATTERN: &str = "^(?:[0-9a-fA-F]{32}\
    |[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\
    |\\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\\}\
    |urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$";

/// RFC 3339 with a mandatory offset, its year (as written) within `years`. Whether the date
/// exists (no 30 February) is left to `format: date-time` for validators that assert formats.
fn timestamp_pattern(years: std::ops::RangeInclusive<i32>) -> String {
    format!(
        "^(?:{})-[0-9]{{2}}-[0-9]{{2}}[Tt ][0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}(?:\\.[0-9]+)?(?:[Zz]|[+-][0-9]{{2}}:[0-9]{{2}})$",
        year_alternatives(years)
    )
}

/// The four-digit years of `years` as regular-expression alternatives, whole decades folded
/// into `201[0-9]`, so that 2000–2100 reads `200[0-9]|…|209[0-9]|2100`.
fn year_alternatives(years: std::ops::RangeInclusive<i32>) -> String {
    let (first, last) = (*years.start().max(&0), *years.end().min(&9999));
    let mut parts = Vec::new();
    let mut year = first;
    while year <= last {
        if year % 10 == 0 && year + 9 <= last {
            parts.push(format!("{:03}[0-9]", year / 10));
            year += 10;
        } else {
            parts.push(format!("{year:04}"));
            year += 1;
        }
    }
    parts.join("|")
}

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::*;
    use crate::domain::transaction::Field;

    #[test]
    fn year_alternatives_cover_exactly_the_range() {
        assert_eq!(
            year_alternatives(2000..=2100),
            "200[0-9]|201[0-9]|202[0-9]|203[0-9]|204[0-9]|205[0-9]|206[0-9]|207[0-9]|208[0-9]|209[0-9]|2100"
        );
        assert_eq!(
            year_alternatives(1998..=2011),
            "1998|1999|200[0-9]|2010|2011"
        );
        let pattern = Regex::new(&timestamp_pattern(2000..=2100)).unwrap();
        for ok in [
            "2000-01-01T00:00:00Z",
            "2100-12-31T23:59:59.123-05:00",
            "2025-08-15t10:30:00+02:00",
        ] {
            assert!(pattern.is_match(ok), "{ok}");
        }
        for bad in [
            "1999-12-31T23:59:59Z",
            "2101-01-01T00:00:00Z",
            "2025-08-15T10:30:00",
            "2025-08-15 10:30:00",
        ] {
            assert!(!pattern.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn the_uuid_pattern_agrees_with_the_parser() {
        let pattern = Regex::new(UUID_PATTERN).unwrap();
        let id = "6f1c2b9e-5a4d-4c3b-9e8f-1a2b3c4d5e6f";
        for text in [
            id.to_string(),
            id.replace('-', ""),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            id.to_uppercase(),
            id[..23].to_string(),
            format!("{id}0"),
            "not-a-uuid".to_string(),
        ] {
            assert_eq!(
                pattern.is_match(&text),
                uuid::Uuid::try_parse(&text).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn required_fields_and_vocabularies_come_from_the_rules() {
        let rules = Rules::with_extra_categories(&["groceries"]).unwrap();
        let schema = transaction_schema(&rules);
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            required.contains(&"tx_id") && !required.contains(&"city"),
            "{required:?}"
        );
        let categories = &schema["properties"]["category"]["enum"];
        assert!(categories.as_array().unwrap().contains(&json!("groceries")));
        assert_eq!(
            schema["properties"]["city"]["type"],
            json!(["string", "null"])
        );
        assert_eq!(schema["properties"]["amount"]["maximum"], json!(1_000_000));
        assert_eq!(
            schema["properties"].as_object().unwrap().len(),
            Field::ALL.len()
        );
    }
}
