//! Domain types with their validation rules: no I/O here, unit tests inline.

pub mod catalog;
pub mod transaction;
