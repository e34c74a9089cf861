//! The stream message validator on arbitrary bytes: it must answer (accept or reject with a kind),
//! never panic, hang or grow without bound. An accepted message must also be one the database's
//! rules accept, which the validator's own invariants stand for here.
#![no_main]

use etl::domain::transaction::{MAX_ABS_AMOUNT, MAX_AMOUNT_DECIMALS, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match validate(data) {
        Ok(tx) => {
            assert!(!tx.amount.is_zero());
            assert!(tx.amount.abs() <= MAX_ABS_AMOUNT.into());
            assert!(tx.amount.scale() <= MAX_AMOUNT_DECIMALS);
            assert!(!tx.merchant.trim().is_empty());
            // PostgreSQL text cannot hold U+0000: an accepted message must be storable as sent.
            let texts = [
                &tx.city,
                &tx.country,
                &tx.source_system,
                &tx.transaction_type,
            ];
            assert!(!tx.merchant.contains('\0'));
            assert!(
                texts
                    .iter()
                    .all(|t| t.as_ref().is_none_or(|t| !t.contains('\0')))
            );
        }
        Err(rejection) => {
            // Error messages quote at most a bounded slice of the input.
            assert!(rejection.message.len() <= 1_024, "{}", rejection.message);
            assert!(!rejection.kind.as_str().is_empty());
        }
    }
});
