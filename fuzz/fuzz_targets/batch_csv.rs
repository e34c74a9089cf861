//! The batch CSV scanner and row parser on arbitrary bytes. The first byte picks the file kind and
//! whether the right header comes first (without it nearly every input would stop at the header).
#![no_main]

use etl::batch::BatchFileKind;
use etl::batch::read::parse_file;
use etl::batch::scan::scan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let kind = if selector & 1 == 0 {
        BatchFileKind::Users
    } else {
        BatchFileKind::Transactions
    };
    let mut file = Vec::with_capacity(rest.len() + 256);
    if selector & 2 == 0 {
        file.extend_from_slice(kind.header().as_bytes());
        file.push(b'\n');
    }
    file.extend_from_slice(rest);

    let scanned = scan(&file);
    for record in &scanned.records {
        assert!(record.bytes.start <= record.bytes.end && record.bytes.end <= file.len());
    }
    if let Ok(parsed) = parse_file(kind, "fuzz.csv", &file) {
        // Every record is either loaded or rejected, never both or neither.
        assert_eq!(
            parsed.rows_loaded + parsed.rows_rejected,
            scanned.records.len() as u64
        );
    }
});
