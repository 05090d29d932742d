//! Detached ed25519 signatures over a model blob's SHA-256: how an operator proves a model
//! came from their build pipeline. `cairn model keygen` / `cairn model sign` make them;
//! `registry.trusted_keys` lists the public keys an upload may be signed by.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// A public key the registry trusts, with the name it is known by.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub name: String,
    key: VerifyingKey,
}

/// Parses `name:BASE64` or a bare `BASE64` (then named by its first 8 characters).
///
/// # Errors
/// Not base64, or not a 32-byte ed25519 public key.
pub fn parse_public_key(text: &str) -> Result<TrustedKey, String> {
    let text = text.trim();
    let (name, encoded) = match text.rsplit_once(':') {
        Some((name, encoded)) => (name.trim().to_owned(), encoded.trim()),
        None => (text.chars().take(8).collect(), text),
    };
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|e| format!("not base64 ({e})"))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "an ed25519 public key is 32 bytes, this is {}; make one with `cairn model keygen`",
            b.len()
        )
    })?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an ed25519 key ({e})"))?;
    Ok(TrustedKey { name, key })
}

/// Decodes a base64 signature as sent in `X-Cairn-Signature`.
///
/// # Errors
/// Not base64 or not 64 bytes.
pub fn parse_signature(text: &str) -> Result<Signature, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("the signature is not base64 ({e})"))?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("an ed25519 signature is 64 bytes, this is {}", b.len()))?;
    Ok(Signature::from_bytes(&bytes))
}

/// The name of the first trusted key that verifies `signature` over `sha256`.
#[must_use]
pub fn verify(keys: &[TrustedKey], sha256: &[u8; 32], signature: &Signature) -> Option<String> {
    keys.iter()
        .find(|k| k.key.verify(sha256, signature).is_ok())
        .map(|k| k.name.clone())
}

/// A new signing key: (private key as base64 for a file, public key as base64).
///
/// # Errors
/// The OS has no randomness.
pub fn generate() -> Result<(String, String), String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    Ok((
        STANDARD.encode(key.to_bytes()),
        STANDARD.encode(key.verifying_key().to_bytes()),
    ))
}

/// Signs a blob's SHA-256 with a private key as `generate` wrote it; returns base64.
///
/// # Errors
/// The private key text is not a base64 32-byte seed.
pub fn sign(private_key: &str, sha256: &[u8; 32]) -> Result<String, String> {
    let bytes = STANDARD
        .decode(private_key.trim())
        .map_err(|e| format!("the private key is not base64 ({e})"))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "the private key is not 32 bytes".to_owned())?;
    let key = SigningKey::from_bytes(&seed);
    Ok(STANDARD.encode(key.sign(sha256).to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let (private, public) = generate().unwrap();
        let trusted = parse_public_key(&format!("ci:{public}")).unwrap();
        assert_eq!(trusted.name, "ci");
        let digest = [7u8; 32];
        let signature = parse_signature(&sign(&private, &digest).unwrap()).unwrap();
        assert_eq!(
            verify(std::slice::from_ref(&trusted), &digest, &signature).as_deref(),
            Some("ci")
        );
        assert!(verify(&[trusted], &[8u8; 32], &signature).is_none());
        assert!(parse_public_key("ci:AAAA").is_err());
        assert!(parse_signature("!!").is_err());
    }
}
