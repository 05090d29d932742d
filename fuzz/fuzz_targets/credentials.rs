//! The parsers that see attacker-controlled credentials: API key strings, cookies,
//! CSRF tokens, and the value parsers shared with configuration.
#![no_main]

use cairn::auth::{keys, sessions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(parsed) = keys::parse(text) {
        // A parsed key always re-formats to its own id.
        assert_eq!(keys::format_id(parsed.id).len(), 16);
        assert_eq!(parsed.secret.len(), 43);
    }
    let _ = sessions::from_cookies(std::iter::once(text));
    if let Some(csrf) = sessions::parse_csrf(text) {
        assert_eq!(sessions::csrf_hex(&csrf), text.to_ascii_lowercase());
    }
    let _ = text.parse::<cairn::config::ByteSize>();
    let _ = text.parse::<cairn::config::Listen>();
});
