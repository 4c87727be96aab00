//! The connection token checker (HS256 JWTs).
//!
//! Properties: any string is checked without a panic, and `header_algorithm` reads the `alg`
//! of any well-formed header. A token minted with the key verifies exactly when its claims say
//! it should at that time (a `sub`, `exp` after now, `nbf` not after now) and gives exactly the
//! identity its claims describe; the same token is refused by a verifier with another key; and
//! a token changed in any way (bytes replaced, inserted, removed, parts swapped) never verifies.
//! A string that verifies at all is byte-equal to what minting its own claims gives (no second
//! spelling of a token is accepted).
#![no_main]

use std::sync::{Arc, OnceLock};

use base64::Engine;
use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use switchboard_actors::access::{
    token::{header_algorithm, mint, Claims},
    TokenError, TokenVerifier,
};

const KEY: &[u8] = b"the fuzz target's HS256 secret";
const OTHER_KEY: &[u8] = b"another secret";

fn verifier(
    secret: &'static [u8],
    cell: &'static OnceLock<Arc<TokenVerifier>>,
) -> &'static TokenVerifier {
    cell.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "switchboard-fuzz-secret-{}-{}",
            std::process::id(),
            secret.len()
        ));
        std::fs::write(&path, secret).unwrap();
        let verifier = TokenVerifier::from_files(Some(&path), None)
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        verifier
    })
}

static ONE: OnceLock<Arc<TokenVerifier>> = OnceLock::new();
static TWO: OnceLock<Arc<TokenVerifier>> = OnceLock::new();

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The claims a string's payload decodes to, if it has any.
fn claims_of(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

fn string(u: &mut Unstructured) -> String {
    u.arbitrary::<String>().unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let key = verifier(KEY, &ONE);
    let other = verifier(OTHER_KEY, &TWO);
    let mut u = Unstructured::new(data);
    let Ok(mode) = u.int_in_range(0u8..=2) else {
        return;
    };
    let now = u.arbitrary::<u64>().unwrap_or(0);
    match mode {
        // Garbage.
        0 => {
            let text = string(&mut u);
            let _ = header_algorithm(&text);
            if let Ok(identity) = key.verify_at(&text, now) {
                let claims = claims_of(&text).expect("verified without claims");
                assert_eq!(
                    mint(KEY, &claims),
                    text,
                    "a second spelling of a token verified"
                );
                assert_eq!(*identity.sub, claims.sub);
            }
        }
        // A header with a chosen alg.
        1 => {
            let alg = string(&mut u);
            let header = serde_json::json!({ "alg": alg, "typ": "JWT" }).to_string();
            let token = format!(
                "{}.{}.{}",
                b64(header.as_bytes()),
                string(&mut u).replace('.', ""),
                string(&mut u).replace('.', "")
            );
            assert_eq!(header_algorithm(&token).ok(), Some(alg.clone()));
            if alg != "HS256" {
                assert!(matches!(
                    key.verify_at(&token, now),
                    Err(TokenError::Algorithm(..))
                ));
            }
        }
        // Minted with the key, then changed.
        _ => {
            let small = |u: &mut Unstructured| -> Option<u64> {
                match u.int_in_range(0u8..=3).unwrap_or(0) {
                    0 => None,
                    1 => Some(now),
                    2 => Some(
                        now.saturating_add(u.int_in_range(0..=3).unwrap_or(0))
                            .saturating_sub(1),
                    ),
                    _ => Some(u.arbitrary::<u64>().unwrap_or(0)),
                }
            };
            let claims = Claims {
                sub: if u.ratio(1, 8).unwrap_or(false) {
                    String::new()
                } else {
                    string(&mut u)
                },
                name: if u.arbitrary::<bool>().unwrap_or(false) {
                    Some(string(&mut u))
                } else {
                    None
                },
                exp: small(&mut u),
                nbf: small(&mut u),
                rooms: (0..u.int_in_range(0..=3).unwrap_or(0))
                    .map(|_| string(&mut u))
                    .collect(),
                publish: u.arbitrary::<Option<bool>>().unwrap_or(None),
                publish_api: u.arbitrary::<Option<bool>>().unwrap_or(None),
            };
            let token = mint(KEY, &claims);
            assert_eq!(header_algorithm(&token).ok().as_deref(), Some("HS256"));
            let result = key.verify_at(&token, now);
            if claims.sub.is_empty() {
                assert!(
                    matches!(result, Err(TokenError::Malformed(_))),
                    "{result:?}"
                );
            } else if claims.exp.is_some_and(|exp| exp <= now) {
                assert!(matches!(result, Err(TokenError::Expired)), "{result:?}");
            } else if claims.nbf.is_some_and(|nbf| nbf > now) {
                assert!(matches!(result, Err(TokenError::NotYetValid)), "{result:?}");
            } else {
                let identity = result.expect("a good token was refused");
                assert_eq!(*identity.sub, claims.sub);
                assert_eq!(
                    identity.name,
                    claims.name.clone().unwrap_or_else(|| claims.sub.clone())
                );
                assert_eq!(identity.rooms, claims.rooms);
                assert_eq!(identity.publish, claims.publish.unwrap_or(true));
                assert_eq!(identity.publish_api, claims.publish_api.unwrap_or(false));
                assert_eq!(identity.expires, claims.exp);
            }
            assert!(matches!(
                other.verify_at(&token, now),
                Err(TokenError::Signature)
            ));

            // Changed tokens.
            let mut bytes = token.clone().into_bytes();
            let edits = u.int_in_range(1u8..=4).unwrap_or(1);
            for _ in 0..edits {
                let at = u.int_in_range(0..=bytes.len()).unwrap_or(0);
                match u.int_in_range(0u8..=4).unwrap_or(0) {
                    0 if at < bytes.len() => bytes[at] = u.arbitrary().unwrap_or(b'A'),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    2 => bytes.insert(at, u.arbitrary().unwrap_or(b'=')),
                    3 => bytes.insert(at, *u.choose(b"=.-_+/ \n").unwrap_or(&b'=')),
                    _ => {
                        // Swap two parts, or change the case of a byte.
                        let parts: Vec<&[u8]> = bytes.split(|&b| b == b'.').collect();
                        if parts.len() == 3 && u.arbitrary::<bool>().unwrap_or(false) {
                            bytes = [parts[1], parts[0], parts[2]].join(&b'.');
                        } else if at < bytes.len() {
                            bytes[at] ^= 0x20;
                        }
                    }
                }
            }
            if let Ok(changed) = String::from_utf8(bytes) {
                if changed != token {
                    let _ = header_algorithm(&changed);
                    let result = key.verify_at(&changed, now);
                    assert!(
                        result.is_err(),
                        "a changed token verified: {changed:?} (minted {token:?})"
                    );
                }
            }
        }
    }
});
