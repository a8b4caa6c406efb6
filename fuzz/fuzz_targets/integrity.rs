//! The integrity parser must never panic, and whatever it accepts must print and re-parse to the
//! same value (the round trip npm compatibility depends on).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tarvault::Integrity;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Integrity::parse_address(text);
    if let Ok(parsed) = Integrity::parse(text) {
        let printed = parsed.to_string();
        let again = Integrity::parse(&printed).expect("printed integrity re-parses");
        assert_eq!(again, parsed);
        assert_eq!(again.to_string(), printed);
        assert!(parsed.matches(&again));
    }
});
