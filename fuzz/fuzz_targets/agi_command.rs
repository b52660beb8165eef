//! `Command::parse` (res_agi's word splitting, quotes, escapes, longest verb first) on
//! arbitrary text; a parsed command that `to_line` accepts parses back to itself.
#![no_main]

use dialgate::agi::command::MAX_COMMAND_LINE;
use dialgate::agi::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(command) = Command::parse(&text) else {
        return;
    };
    let _ = command.to_string();
    if let Ok(line) = command.to_line() {
        assert!(line.len() <= MAX_COMMAND_LINE);
        assert!(!line.contains(['\r', '\n', '\0']), "{line:?}");
        let again = Command::parse(&line).expect("to_line output parses");
        assert_eq!(again, command, "round trip through {line:?}");
    }
});
