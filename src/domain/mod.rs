//! Domain types with their validation rules: no I/O here, unit tests inline.

pub mod anomaly;
pub mod batch_transaction;
pub mod catalog;
pub mod field;
pub mod limits;
pub mod rules;
pub mod schema;
pub mod transaction;
pub mod user;

#[cfg(test)]
mod transaction_props;
