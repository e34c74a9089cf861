//! Seeded fake-data generators: pure iterators, the same seed always gives the same data,
//! plus the one input they read (`user_ids`).

pub mod stream;
pub mod user_ids;
