//! Seeded fake-data generators: pure iterators, the same seed always gives the same data.

pub mod stream;
