//! Seeded fake-data generators: pure iterators, the same seed always gives the same data,
//! plus the inputs they read (earlier months, `user_ids`) and the files they write.

pub mod corrupt;
pub mod files;
pub mod monthly;
pub mod stream;
pub mod user_ids;

#[cfg(test)]
mod properties;
