//! The `dialgate import` CSV reader (`cli::import::parse_rows`: header row, flexible
//! rows, trimmed fields, per-row failures) on arbitrary bytes.
#![no_main]

use dialgate::cli::import::parse_rows;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((rows, failed)) = parse_rows(data) else {
        return;
    };
    for (line, row) in &rows {
        assert!(*line >= 1);
        assert_eq!(row.username.trim_ascii(), row.username);
        assert_eq!(row.phone.trim_ascii(), row.phone);
    }
    for f in &failed {
        assert!(!f.error.is_empty());
    }
});
