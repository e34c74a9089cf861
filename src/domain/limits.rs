//! Bounds on the work [`super::transaction::validate`] does for one message, checked before any
//! parsing: a message from others may be a 10 MB string, JSON nested 10^5 levels deep or an object
//! of 10^6 keys, and none of them may cost more than a glance.
//!
//! One pass over at most [`MAX_MESSAGE_BYTES`] + 1 bytes, without allocating, counts container
//! nesting and object keys outside strings; the first bound crossed in reading order is the
//! answer, so even a gigabyte costs one mebibyte of reading. Within the bounds serde_json's own
//! work is bounded too (its recursion limit of 128 is never reached, see [`MAX_DEPTH`]).

use std::fmt;

use super::transaction::{Rejection, RejectionKind};

/// Largest message in bytes: Kafka's default `message.max.bytes` (1 MiB), far above a real
/// message (about 400 bytes) and any honest extra fields.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Deepest nesting of arrays and objects, the message object itself being level 1. The message is
/// flat; extra fields may nest, but 32 levels is already beyond any producer we know, and it stays
/// well under serde_json's recursion limit of 128.
pub const MAX_DEPTH: usize = 32;
/// Most object keys in the whole document, nested ones included: 14 are ours, the rest is ignored
/// but still read.
pub const MAX_KEYS: usize = 1_024;

/// The bound a message crossed, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// More than [`MAX_MESSAGE_BYTES`] bytes.
    TooLarge,
    /// The container opened at byte `offset` is level [`MAX_DEPTH`] + 1.
    TooDeep { offset: usize },
    /// The key whose `:` is at byte `offset` is key number [`MAX_KEYS`] + 1.
    TooManyKeys { offset: usize },
}

impl Exceeded {
    pub fn kind(self) -> RejectionKind {
        match self {
            Self::TooLarge => RejectionKind::TooLarge,
            Self::TooDeep { .. } => RejectionKind::TooDeep,
            Self::TooManyKeys { .. } => RejectionKind::TooManyKeys,
        }
    }
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => write!(
                f,
                "the message is larger than {MAX_MESSAGE_BYTES} bytes; it was not parsed"
            ),
            Self::TooDeep { offset } => write!(
                f,
                "the message nests arrays or objects more than {MAX_DEPTH} levels deep \
                 (at byte {offset}); it was not parsed"
            ),
            Self::TooManyKeys { offset } => write!(
                f,
                "the message has more than {MAX_KEYS} object keys (key {} at byte {offset}); \
                 it was not parsed",
                MAX_KEYS + 1
            ),
        }
    }
}

impl From<Exceeded> for Rejection {
    fn from(exceeded: Exceeded) -> Self {
        Rejection {
            kind: exceeded.kind(),
            message: exceeded.to_string(),
        }
    }
}

/// Checks the bounds on the raw bytes. Not a JSON check: bytes that are no JSON at all pass (or
/// cross a bound) just the same, and the parser says what is wrong with them afterwards.
pub fn check(bytes: &[u8]) -> Result<(), Exceeded> {
    let mut depth = 0usize;
    let mut keys = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // Reading one byte past the limit is enough to know it is crossed.
    for (offset, &byte) in bytes.iter().enumerate().take(MAX_MESSAGE_BYTES + 1) {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Exceeded::TooDeep { offset });
                }
            }
            // Unbalanced closers are the parser's business; here they only must not underflow.
            b'}' | b']' => depth = depth.saturating_sub(1),
            b':' => {
                keys += 1;
                if keys > MAX_KEYS {
                    return Err(Exceeded::TooManyKeys { offset });
                }
            }
            _ => {}
        }
    }
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Exceeded::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::domain::transaction::validate;

    /// Generous for a debug build on a busy machine, and still far below what parsing a hostile
    /// document would cost (or the stack overflow it would end in).
    const QUICK: Duration = Duration::from_millis(500);

    /// Validates `bytes` and returns the kind, asserting it took less than [`QUICK`].
    fn kind_quickly(bytes: &[u8]) -> &'static str {
        let started = Instant::now();
        let rejection = validate(bytes).expect_err("should be rejected");
        let took = started.elapsed();
        assert!(took < QUICK, "took {took:?}: {}", rejection.message);
        rejection.kind.as_str()
    }

    #[test]
    fn json_nested_a_hundred_thousand_levels_is_too_deep() {
        let levels = 100_000;
        let nested = format!(
            r#"{{"tx_id":"x","extra":{}{}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        );
        assert_eq!(kind_quickly(nested.as_bytes()), "too_deep");
        // Objects as well as arrays, and in a known field as well as an extra one.
        let objects = format!(r#"{{"merchant":{}}}"#, r#"{"a":"#.repeat(levels));
        assert_eq!(kind_quickly(objects.as_bytes()), "too_deep");
        assert_eq!(
            check(objects.as_bytes()),
            Err(Exceeded::TooDeep {
                offset: 12 + 5 * (MAX_DEPTH - 1)
            })
        );
    }

    #[test]
    fn a_ten_megabyte_string_is_too_large() {
        let huge = format!(r#"{{"merchant":"{}"}}"#, "x".repeat(10 * 1024 * 1024));
        assert_eq!(kind_quickly(huge.as_bytes()), "too_large");
        let rejection = validate(huge.as_bytes()).unwrap_err();
        assert!(rejection.message.contains("1048576 bytes"), "{rejection}");
    }

    #[test]
    fn a_million_keys_are_too_many() {
        let mut many = String::from("{");
        for i in 0..1_000_000 {
            many.push_str(&format!(r#""k{i}":0,"#));
        }
        many.push_str(r#""end":0}"#);
        assert_eq!(kind_quickly(many.as_bytes()), "too_many_keys");
        let rejection = validate(many.as_bytes()).unwrap_err();
        assert!(
            rejection.message.contains("key 1025 at byte"),
            "{rejection}"
        );
    }

    #[test]
    fn messages_just_inside_the_bounds_pass_them() {
        let deepest = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(check(deepest.as_bytes()), Ok(()));
        let keys = format!("{{{}\"last\":0}}", r#""k":0,"#.repeat(MAX_KEYS - 1));
        assert_eq!(check(keys.as_bytes()), Ok(()));
        let biggest = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_MESSAGE_BYTES - 8));
        assert_eq!(biggest.len(), MAX_MESSAGE_BYTES);
        assert_eq!(check(biggest.as_bytes()), Ok(()));
    }

    #[test]
    fn brackets_colons_and_escaped_quotes_inside_strings_do_not_count() {
        let text = format!(
            r#"{{"a":"{}\"{}","b":1}}"#,
            "[{:".repeat(MAX_KEYS),
            "[{:".repeat(MAX_KEYS)
        );
        assert_eq!(check(text.as_bytes()), Ok(()));
        // Closers first must not wrap the depth around.
        assert_eq!(check(b"]]]]{}"), Ok(()));
    }
}
