//! CSV landing of the monthly files (ARCHITECTURE §3 into §5) with polars.

pub mod copy_text;
pub mod error;
pub mod load;
pub mod read;
pub mod scan;

pub use error::BatchError;
pub use load::{BatchFile, FileOutcome, FileStatus, LoadOptions, find_files, load_all, load_file};
pub use read::{BatchFileKind, ChunkOptions};
