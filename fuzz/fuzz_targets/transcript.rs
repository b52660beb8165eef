//! The transcript format (`Transcript::parse`) on arbitrary bytes, with its header and
//! server-line accessors.
#![no_main]

use dialgate::agi::sim::transcript::{Direction, Transcript};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Transcript::parse("fuzz", data) else {
        return;
    };
    assert!(!t.lines.is_empty());
    let mut last = 0;
    for line in &t.lines {
        assert!(line.number > last, "line numbers out of order");
        last = line.number;
        assert!(!line.bytes.contains(&b'\n'));
    }
    let server = t.server_lines().count();
    let asterisk = t
        .lines
        .iter()
        .filter(|l| l.direction == Direction::FromAsterisk)
        .count();
    assert_eq!(server + asterisk, t.lines.len());
    // The first comments only: looking each one up is quadratic.
    for c in t.comments.iter().take(32) {
        if let Some((k, _)) = c.split_once(':') {
            assert!(t.header(k.trim()).is_some());
        }
    }
    let _ = (t.header("server"), t.header(""));
});
