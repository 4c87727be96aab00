//! Connection tokens (JWTs) for the access tests, minted with `jsonwebtoken` from the test-only
//! keys in `tests/fixtures/` (see its README), and the broken tokens no library would make
//! (`alg: none`, a payload that is not JSON) crafted by hand.

use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{crypto, encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A file of `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// [`fixture`] as a command-line argument.
pub fn fixture_arg(name: &str) -> String {
    fixture(name).to_str().expect("UTF-8 path").to_owned()
}

/// The HS256 secret file given to the server (it ends with one newline).
pub const SECRET_FILE: &str = "test-only-hs256-secret.txt";
/// The RSA public key given to the server (RS256).
pub const RSA_PUBLIC: &str = "test-only-rsa-public.pem";
/// The EC P-256 public key given to the server (ES256).
pub const EC_PUBLIC: &str = "test-only-ec-p256-public.pem";

/// The HS256 secret: the secret file's bytes without its one trailing newline.
pub fn secret() -> Vec<u8> {
    let mut bytes = std::fs::read(fixture(SECRET_FILE)).expect("the secret fixture");
    assert_eq!(
        bytes.pop(),
        Some(b'\n'),
        "the secret file ends with a newline"
    );
    bytes
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Claims for `sub` valid for an hour (nothing else set).
pub fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 3600})
}

/// How a token is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// HS256 with the server's secret.
    Hs256,
    /// HS256 with another secret.
    Hs256WrongSecret,
    /// RS256 with the private half of [`RSA_PUBLIC`].
    Rs256,
    /// RS256 with an unrelated RSA key.
    Rs256WrongKey,
    /// ES256 with the private half of [`EC_PUBLIC`].
    Es256,
    /// ES256 with an unrelated P-256 key.
    Es256WrongKey,
}

impl Signer {
    fn key_and_algorithm(self) -> (EncodingKey, Algorithm) {
        let pem = |name: &str| std::fs::read(fixture(name)).expect("a key fixture");
        match self {
            Signer::Hs256 => (
                EncodingKey::from_secret(&secret()).unwrap(),
                Algorithm::HS256,
            ),
            Signer::Hs256WrongSecret => (
                EncodingKey::from_secret(b"some-other-secret-the-server-does-not-know").unwrap(),
                Algorithm::HS256,
            ),
            Signer::Rs256 => (
                EncodingKey::from_rsa_pem(&pem("test-only-rsa-private.pem")).unwrap(),
                Algorithm::RS256,
            ),
            Signer::Rs256WrongKey => (
                EncodingKey::from_rsa_pem(&pem("test-only-other-rsa-private.pem")).unwrap(),
                Algorithm::RS256,
            ),
            Signer::Es256 => (
                EncodingKey::from_ec_pem(&pem("test-only-ec-p256-private.pem")).unwrap(),
                Algorithm::ES256,
            ),
            Signer::Es256WrongKey => (
                EncodingKey::from_ec_pem(&pem("test-only-other-ec-p256-private.pem")).unwrap(),
                Algorithm::ES256,
            ),
        }
    }
}

/// A token of `claims` signed by `signer`.
pub fn sign(signer: Signer, claims: &Value) -> String {
    let (key, algorithm) = signer.key_and_algorithm();
    encode(&Header::new(algorithm), claims, &key).expect("sign a token")
}

/// An HS256 token of `claims` with the server's secret.
pub fn hs256(claims: &Value) -> String {
    sign(Signer::Hs256, claims)
}

/// An HS256 token whose HMAC key is `key` (e.g. the bytes of an RSA public key: the classic
/// algorithm-confusion attack).
pub fn hs256_with_key(key: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key).unwrap(),
    )
    .unwrap()
}

/// An unsigned token: header `{"alg":"none","typ":"JWT"}`, the claims, and an empty signature.
pub fn alg_none(claims: &Value) -> String {
    format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(claims.to_string().as_bytes())
    )
}

/// A correctly signed HS256 token whose payload is `payload` as it is (e.g. not JSON).
pub fn hs256_raw_payload(payload: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        base64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        base64url(payload)
    );
    let key = EncodingKey::from_secret(&secret()).unwrap();
    let signature = crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{message}.{signature}")
}

/// Base64url without padding (RFC 7515 §2).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, byte)| n | (u32::from(*byte) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
        }
    }
    out
}

/// The claims of a token, decoded without checking the signature (to read what a minted token
/// says; the server is what checks signatures).
pub fn peek_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64url_decode(payload);
    serde_json::from_slice(&bytes).expect("the payload is JSON")
}

/// The header of a token.
pub fn peek_header(token: &str) -> Value {
    let header = token.split('.').next().expect("a JWT has three parts");
    serde_json::from_slice(&base64url_decode(header)).expect("the header is JSON")
}

fn base64url_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("not base64url: {text:?}"),
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
