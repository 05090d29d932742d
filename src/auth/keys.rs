//! API key strings: `cairn_<id>_<secret>`, where `id` is 16 hex digits (public: it names
//! the key in lists, logs and metrics) and `secret` is 43 base64url characters (256 bits).
//! Only HMAC-SHA256(server secret, secret) is stored; checks compare in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "cairn_";
const SECRET_BYTES: usize = 32;
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A parsed key string.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub id: u64,
    pub secret: &'a str,
}

/// Splits a key string into id and secret.
///
/// `None` for anything that is not `cairn_<16 hex>_<43 base64url>`.
#[must_use]
pub fn parse(key: &str) -> Option<Parsed<'_>> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 16 || secret.len() != 43 || !secret.bytes().all(|b| B64.contains(&b)) {
        return None;
    }
    let id = u64::from_str_radix(id, 16).ok()?;
    Some(Parsed { id, secret })
}

#[must_use]
pub fn format_id(id: u64) -> String {
    format!("{id:016x}")
}

/// A new key: its id, the full string (shown once), and the secret's MAC to store.
///
/// # Errors
/// No randomness.
pub fn generate(server_secret: &[u8]) -> Result<(u64, String, [u8; 32]), String> {
    let mut raw = [0u8; 8 + SECRET_BYTES];
    getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
    let id = u64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
    let secret = base64url(&raw[8..]);
    let mac = mac(server_secret, &secret);
    Ok((id, format!("{PREFIX}{}_{secret}", format_id(id)), mac))
}

/// HMAC-SHA256 of a key secret.
#[must_use]
pub fn mac(server_secret: &[u8], secret: &str) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(server_secret).expect("HMAC takes any key length");
    mac.update(secret.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Constant-time equality of two MACs.
#[must_use]
pub fn mac_matches(expected: &[u8; 32], actual: &[u8; 32]) -> bool {
    expected.ct_eq(actual).into()
}

fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Random bytes as base64url (session tokens, setup tokens).
///
/// # Errors
/// No randomness.
pub fn random_token(bytes: usize) -> Result<String, String> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
    Ok(base64url(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let server = [7u8; 32];
        let (id, key, stored) = generate(&server).unwrap();
        let parsed = parse(&key).unwrap();
        assert_eq!(parsed.id, id);
        assert!(mac_matches(&stored, &mac(&server, parsed.secret)));
        assert!(!mac_matches(&stored, &mac(&[8u8; 32], parsed.secret)));
        for bad in [
            "",
            "cairn_",
            "cairn_zz_zz",
            "bearer",
            &key[..key.len() - 1],
            &key.replace("cairn_", "cairm_"),
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        assert_eq!(base64url(b"\xff\xff\xff"), "____");
        assert_eq!(base64url(b"ab"), "YWI");
    }
}
