//! Console sessions: a random token in an HttpOnly cookie; the store keeps only its
//! SHA-256 and a CSRF token the console echoes in `X-CSRF-Token`.

use sha2::{Digest, Sha256};

pub const COOKIE: &str = "cairn_session";

/// SHA-256 of a session token, the store key.
#[must_use]
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The `Set-Cookie` value for a new session.
#[must_use]
pub fn set_cookie(token: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
#[must_use]
pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", 0, secure)
}

/// Finds the session token among `Cookie` header values.
pub fn from_cookies<'a>(headers: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    headers
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// Hex of a CSRF token, as sent to and from the console.
#[must_use]
pub fn csrf_hex(csrf: &[u8; 32]) -> String {
    csrf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a hex CSRF token.
#[must_use]
pub fn parse_csrf(text: &str) -> Option<[u8; 32]> {
    // `from_str_radix` alone would accept a leading `+`.
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_round_trip() {
        let cookie = set_cookie("abc", 60, true);
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
                && cookie.ends_with("Secure")
        );
        assert_eq!(
            from_cookies(["a=1; cairn_session=tok; b=2"].into_iter()),
            Some("tok")
        );
        assert_eq!(from_cookies(["cairn_session="].into_iter()), None);
        let csrf = [0xabu8; 32];
        assert_eq!(parse_csrf(&csrf_hex(&csrf)), Some(csrf));
        assert_eq!(parse_csrf("zz"), None);
        assert_eq!(parse_csrf(&format!("+a{}", "0".repeat(62))), None);
    }
}
