//! Signed connection tokens (JWT): checking one gives an [`Identity`].
//!
//! The accepted algorithms are exactly those of the configured keys: HS256 with a shared secret,
//! RS256 or ES256 with a public key. The header's `alg` is read first and checked against them,
//! so `none` and a token signed for another key type are refused as such (never "tried"). `exp`
//! and `nbf` are checked here, to the second and without leeway, so that a token is refused at
//! the handshake exactly when a live connection holding it is closed.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Identity;

/// The claims Switchboard reads (and [`mint`] writes). Unknown claims are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    /// The user id; required.
    #[serde(default)]
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_api: Option<bool>,
}

/// Why a token was refused. The text is what the client is told (401 body, chat error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing token: send it as ?token=... or Authorization: Bearer ...")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0} is not accepted here (accepted: {1})")]
    Algorithm(String, String),
    #[error("invalid signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
}

/// Why the configured keys could not be loaded (the server does not start).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the secret is empty", path.display())]
    EmptySecret { path: PathBuf },
    #[error("{}: not a PEM RSA or EC (P-256) public key", path.display())]
    BadPublicKey { path: PathBuf },
}

/// Checks tokens against the configured keys. Built once at start-up, shared by every worker.
pub struct TokenVerifier {
    keys: Vec<(Algorithm, DecodingKey)>,
}

impl TokenVerifier {
    /// The verifier of `--auth-jwt-secret` and `--auth-jwt-public-key`; `None` when neither is
    /// set (tokens are off).
    pub fn from_files(
        secret: Option<&Path>,
        public_key: Option<&Path>,
    ) -> Result<Option<Arc<TokenVerifier>>, KeyError> {
        install_crypto();
        let mut keys = Vec::new();
        if let Some(path) = secret {
            let secret = read_secret(path)?;
            let key = DecodingKey::from_secret(&secret).map_err(|_| KeyError::EmptySecret {
                path: path.to_owned(),
            })?;
            keys.push((Algorithm::HS256, key));
        }
        if let Some(path) = public_key {
            keys.push(read_public_key(path)?);
        }
        Ok((!keys.is_empty()).then(|| Arc::new(TokenVerifier { keys })))
    }

    /// The identity a token gives, checked as of now.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        self.verify_at(token, unix_now())
    }

    /// The identity a token gives, checked as of `now` (seconds since the Unix epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        let algorithm = header_algorithm(token)?;
        let Some((algorithm, key)) = self
            .keys
            .iter()
            .find(|(accepted, _)| format!("{accepted:?}") == algorithm)
        else {
            return Err(TokenError::Algorithm(algorithm, self.accepted()));
        };
        let mut validation = Validation::new(*algorithm);
        // Times are checked below, without leeway; no audience is configured.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
                _ => TokenError::Malformed(err.to_string()),
            })?
            .claims;
        if claims.sub.is_empty() {
            return Err(TokenError::Malformed("the `sub` claim is missing".into()));
        }
        if claims.exp.is_some_and(|exp| exp <= now) {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now) {
            return Err(TokenError::NotYetValid);
        }
        Ok(Identity {
            name: claims.name.unwrap_or_else(|| claims.sub.clone()),
            sub: claims.sub.into(),
            rooms: claims.rooms,
            publish: claims.publish.unwrap_or(true),
            publish_api: claims.publish_api.unwrap_or(false),
            expires: claims.exp,
        })
    }

    /// The accepted algorithms, for messages.
    pub fn accepted(&self) -> String {
        let names: Vec<String> = self
            .keys
            .iter()
            .map(|(algorithm, _)| format!("{algorithm:?}"))
            .collect();
        names.join(", ")
    }
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenVerifier({})", self.accepted())
    }
}

/// Signs `claims` with an HS256 secret (`switchboard token`, tests).
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    install_crypto();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret)
            .expect("a non-empty secret (as `read_secret` gives) is an HS256 key"),
    )
    .expect("HS256 signing of serializable claims cannot fail")
}

/// Reads an HS256 secret file: its bytes, without one trailing newline.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, KeyError> {
    let mut secret = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    if secret.is_empty() {
        return Err(KeyError::EmptySecret {
            path: path.to_owned(),
        });
    }
    Ok(secret)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn read_public_key(path: &Path) -> Result<(Algorithm, DecodingKey), KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((Algorithm::RS256, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((Algorithm::ES256, key));
    }
    Err(KeyError::BadPublicKey {
        path: path.to_owned(),
    })
}

/// The `alg` of a token's header, read before anything else is trusted. Public for the fuzz
/// target only.
#[doc(hidden)]
pub fn header_algorithm(token: &str) -> Result<String, TokenError> {
    #[derive(Deserialize)]
    struct JustAlg {
        alg: String,
    }
    let header = token
        .split('.')
        .next()
        .filter(|_| token.split('.').count() == 3)
        .ok_or_else(|| TokenError::Malformed("not a JWT (three dot-separated parts)".into()))?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed("the header is not base64url".into()))?;
    serde_json::from_slice::<JustAlg>(&json)
        .map(|header| header.alg)
        .map_err(|_| TokenError::Malformed("the header has no `alg`".into()))
}

/// `jsonwebtoken` needs its crypto backend chosen once per process.
fn install_crypto() {
    // An error only says a provider is installed already.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(secret: &[u8]) -> TokenVerifier {
        install_crypto();
        TokenVerifier {
            keys: vec![(Algorithm::HS256, DecodingKey::from_secret(secret).unwrap())],
        }
    }

    fn claims(sub: &str) -> Claims {
        Claims {
            sub: sub.into(),
            ..Claims::default()
        }
    }

    #[test]
    fn a_good_token_gives_its_identity_with_defaults() {
        let token = mint(
            b"s3cret",
            &Claims {
                rooms: vec!["private:team".into()],
                exp: Some(2_000),
                ..claims("u1")
            },
        );
        let identity = verifier(b"s3cret").verify_at(&token, 1_000).unwrap();
        assert_eq!(&*identity.sub, "u1");
        assert_eq!(identity.name, "u1");
        assert!(identity.publish);
        assert!(!identity.publish_api);
        assert_eq!(identity.expires, Some(2_000));
        assert!(identity.may_join("private:team"));
    }

    #[test]
    fn times_are_checked_to_the_second() {
        let token = mint(
            b"k",
            &Claims {
                exp: Some(100),
                nbf: Some(50),
                ..claims("u")
            },
        );
        let check = |now| verifier(b"k").verify_at(&token, now);
        assert_eq!(check(49), Err(TokenError::NotYetValid));
        assert!(check(50).is_ok());
        assert!(check(99).is_ok());
        assert_eq!(check(100), Err(TokenError::Expired));
    }

    #[test]
    fn wrong_key_none_and_garbage_are_refused() {
        let token = mint(b"one", &claims("u"));
        assert_eq!(
            verifier(b"two").verify_at(&token, 0),
            Err(TokenError::Signature)
        );
        let body = token.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}.");
        assert!(matches!(
            verifier(b"one").verify_at(&none, 0),
            Err(TokenError::Algorithm(alg, _)) if alg == "none"
        ));
        assert!(matches!(
            verifier(b"one").verify_at("a.b", 0),
            Err(TokenError::Malformed(_))
        ));
        let no_sub = mint(b"one", &Claims::default());
        assert!(matches!(
            verifier(b"one").verify_at(&no_sub, 0),
            Err(TokenError::Malformed(_))
        ));
    }
}
