//! JSON Web Key Sets ([RFC 7517 §5]) and choosing the key for a token.
//!
//! [RFC 7517 §5]: https://www.rfc-editor.org/rfc/rfc7517#section-5

use std::fmt;
use std::sync::OnceLock;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The keys of one issuer that may verify tokens, each with the validation it
/// verifies under (its algorithms, plus the issuer's `iss`, `aud`, leeway).
pub(crate) struct KeySet {
    keys: Vec<SigningKey>,
    /// `kid`s of keys the set holds but that may not verify tokens (`use: enc`,
    /// an algorithm outside the allowlist, …): refused without a refresh.
    unusable: Vec<Box<str>>,
    /// Encoded headers of tokens this set's keys verified, and the key: the
    /// same header bytes always choose the same key, so a token with a header
    /// seen before skips decoding it. Filled only by verified tokens.
    seen: [OnceLock<(Box<str>, usize)>; SEEN_HEADERS],
}

/// Distinct token headers remembered per key set: a provider signs with one
/// or two header shapes per key (access and ID tokens).
const SEEN_HEADERS: usize = 8;

pub(crate) struct SigningKey {
    kid: Option<Box<str>>,
    pub(crate) key: DecodingKey,
    /// `algorithms`: the allowlist ∩ the key's family and curve ∩ its own `alg`.
    pub(crate) validation: Validation,
}

/// The key for a token, or why there is none.
pub(crate) enum Choice {
    /// The key at this index.
    Key(usize),
    /// No key of this `kid` (or, without `kid`, none for the algorithm): the
    /// provider may have rotated its keys.
    Unknown,
    /// The set has the key, and it may not verify this token.
    Refused(&'static str),
}

/// Why a key set document was not accepted.
#[derive(Debug)]
pub(crate) struct JwksError(&'static str);

impl JwksError {
    pub(crate) fn message(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for JwksError {}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// No keys: every token is [`Choice::Unknown`].
    pub(crate) fn empty() -> Self {
        Self {
            keys: Vec::new(),
            unusable: Vec::new(),
            seen: Default::default(),
        }
    }

    /// Parse a JWKS document. Keys this crate cannot use are skipped, as
    /// RFC 7517 §5 asks, so one exotic key does not break the set. `base` is
    /// the issuer's validation; each key gets a copy restricted to its
    /// algorithms.
    ///
    /// # Errors
    ///
    /// Not a JSON object with a `keys` array.
    pub(crate) fn parse(
        document: &[u8],
        allowlist: &[Algorithm],
        base: &Validation,
    ) -> Result<Self, JwksError> {
        let document: Document = serde_json::from_slice(document)
            .map_err(|_| JwksError("not a JWK set (a JSON object with a `keys` array)"))?;
        let mut set = Self::empty();
        for value in document.keys {
            // A key that does not even parse as a JWK (unknown `kty`, missing
            // members) is skipped; its `kid`, if any, is remembered.
            let kid = value.get("kid").and_then(|k| k.as_str()).map(Box::from);
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                set.unusable.extend(kid);
                continue;
            };
            match usable(&jwk, allowlist) {
                Some((key, algorithms)) => {
                    let mut validation = base.clone();
                    validation.algorithms = algorithms;
                    set.keys.push(SigningKey {
                        kid,
                        key,
                        validation,
                    });
                }
                None => set.unusable.extend(kid),
            }
        }
        Ok(set)
    }

    /// How many keys may verify tokens.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key may verify tokens.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key at `index`, from [`Choice::Key`] or [`remembered`](Self::remembered).
    pub(crate) fn key(&self, index: usize) -> &SigningKey {
        &self.keys[index]
    }

    /// The key that verified a token with this encoded header before.
    #[inline]
    pub(crate) fn remembered(&self, header: &str) -> Option<usize> {
        for slot in &self.seen {
            match slot.get() {
                Some((seen, index)) if **seen == *header => return Some(*index),
                Some(_) => {}
                None => break,
            }
        }
        None
    }

    /// Remember that a token with this encoded header verified with the key at
    /// `index`. Once every slot is taken, nothing more is remembered.
    pub(crate) fn remember(&self, header: &str, index: usize) {
        if let Some(slot) = self.seen.iter().find(|slot| slot.get().is_none()) {
            let _ = slot.set((header.into(), index));
        }
    }

    /// The key for a token signed with `alg`, naming `kid`.
    pub(crate) fn choose(&self, alg: Algorithm, kid: Option<&str>) -> Choice {
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    if self.unusable.iter().any(|u| &**u == kid) {
                        return Choice::Refused("the token's key may not verify tokens");
                    }
                    return Choice::Unknown;
                }
                match named.find(|(_, k)| k.validation.algorithms.contains(&alg)) {
                    Some((index, _)) => Choice::Key(index),
                    None => Choice::Refused("token algorithm not accepted for its key"),
                }
            }
            None => {
                let mut fitting = self
                    .keys
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.validation.algorithms.contains(&alg));
                match (fitting.next(), fitting.next()) {
                    (Some((index, _)), None) => Choice::Key(index),
                    (None, _) => Choice::Unknown,
                    (Some(_), Some(_)) => {
                        Choice::Refused("token names no key and several keys fit its algorithm")
                    }
                }
            }
        }
    }
}

/// The decoding key and the algorithms `jwk` may verify, or `None` when it may
/// verify nothing.
fn usable(jwk: &Jwk, allowlist: &[Algorithm]) -> Option<(DecodingKey, Vec<Algorithm>)> {
    let common = &jwk.common;
    match &common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return None,
    }
    if let Some(ops) = &common.key_operations {
        if !ops.iter().any(|op| matches!(op, KeyOperations::Verify)) {
            return None;
        }
    }
    // The algorithms the key's type and curve can verify.
    let family: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return None,
        },
        // A shared secret has no place in a published key set.
        _ => return None,
    };
    let own = match &common.key_algorithm {
        None => None,
        Some(alg) => Some(signing_algorithm(alg)?),
    };
    let algorithms: Vec<Algorithm> = family
        .iter()
        .copied()
        .filter(|alg| allowlist.contains(alg) && own.is_none_or(|own| own == *alg))
        .collect();
    if algorithms.is_empty() {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((key, algorithms))
}

/// A JWK `alg` as a signature algorithm; `None` for encryption algorithms.
fn signing_algorithm(alg: &KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| {
                (
                    k.kid.as_deref().unwrap_or("(no kid)"),
                    &k.validation.algorithms,
                    "[redacted]",
                )
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "vM-Rr-KrQpE32s9BDKXKKGUEc1Q3OQ6f7LNLNTdwNamtxBrxupGd8SypakJ3OOdkkMT2zyK_cfocr4sNgOlrrIjYsB21xmOvKA4UpOKY24_TJfaTmoZIGbH6zapyWGSC9gph-LWVZmOg0aO9dk5J338uzuI1Se82bY3dQENS5OJjBjNngxDwBIQOOv0md8IKyyJq1YS4LYc5tKDMzEq1haMxaplANenP8eLGxO4W1FLuOKrAZeJA37-KEdfq08K_hQWwoshTMJps6_XrMMP03i7tNLi56AIPspeOQI_94yNAXvjC-hNRjeOWh9aT6gtbMP2BpG21yFUiTPlYTlzLtQ";
    const EC_X: &str = "i6UlN3CWYp8OkYI3cIjzsdWcO2gihmpucvGNza3Ql4w";
    const EC_Y: &str = "fJ16DG_HFzh_ffzNch5SX9tOQWSVL6WxFEqr4i2WVgg";

    fn rsa(kid: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut key = serde_json::json!({"kty": "RSA", "kid": kid, "n": RSA_N, "e": "AQAB"});
        if let (Some(key), Some(extra)) = (key.as_object_mut(), extra.as_object()) {
            key.extend(extra.clone());
        }
        key
    }

    fn set(keys: Vec<serde_json::Value>, allowlist: &[Algorithm]) -> KeySet {
        let document = serde_json::json!({ "keys": keys }).to_string();
        KeySet::parse(
            document.as_bytes(),
            allowlist,
            &Validation::new(Algorithm::RS256),
        )
        .unwrap()
    }

    fn chosen(set: &KeySet, alg: Algorithm, kid: Option<&str>) -> Result<Vec<Algorithm>, String> {
        match set.choose(alg, kid) {
            Choice::Key(index) => Ok(set.key(index).validation.algorithms.clone()),
            Choice::Unknown => Err("unknown".into()),
            Choice::Refused(why) => Err(why.into()),
        }
    }

    const ALL: &[Algorithm] = &[
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    #[test]
    fn keys_are_chosen_by_kid_algorithm_and_use() {
        let set = set(
            vec![
                rsa("sig", serde_json::json!({"use": "sig", "alg": "RS256"})),
                rsa("enc", serde_json::json!({"use": "enc"})),
                rsa("any", serde_json::json!({})),
                rsa("ops", serde_json::json!({"key_ops": ["encrypt"]})),
                rsa("oaep", serde_json::json!({"alg": "RSA-OAEP"})),
                serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "ec", "x": EC_X, "y": EC_Y}),
                serde_json::json!({"kty": "oct", "kid": "secret", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}),
                serde_json::json!({"kty": "XYZ", "kid": "exotic"}),
            ],
            ALL,
        );
        assert_eq!(set.len(), 3);
        assert_eq!(
            chosen(&set, Algorithm::RS256, Some("sig")),
            Ok(vec![Algorithm::RS256])
        );
        // The key's own `alg` wins over the rest of its family.
        assert!(chosen(&set, Algorithm::PS256, Some("sig")).is_err());
        assert_eq!(
            chosen(&set, Algorithm::PS256, Some("any")),
            Ok(vec![Algorithm::RS256, Algorithm::PS256])
        );
        // Family confusion: an RSA key never verifies ES256 or HS256.
        assert!(chosen(&set, Algorithm::ES256, Some("any")).is_err());
        assert!(chosen(&set, Algorithm::HS256, Some("any")).is_err());
        assert_eq!(
            chosen(&set, Algorithm::ES256, Some("ec")),
            Ok(vec![Algorithm::ES256])
        );
        assert!(chosen(&set, Algorithm::ES384, Some("ec")).is_err());
        // Keys that may not verify are refused without a refresh.
        for kid in ["enc", "ops", "oaep", "secret", "exotic"] {
            assert_eq!(
                chosen(&set, Algorithm::RS256, Some(kid)),
                Err("the token's key may not verify tokens".into()),
                "{kid}"
            );
        }
        assert_eq!(
            chosen(&set, Algorithm::RS256, Some("new")),
            Err("unknown".into())
        );
        // Without a kid: only when exactly one key fits.
        assert!(chosen(&set, Algorithm::RS256, None).is_err());
        assert_eq!(
            chosen(&set, Algorithm::ES256, None),
            Ok(vec![Algorithm::ES256])
        );
    }

    #[test]
    fn the_allowlist_limits_every_key() {
        let set = set(
            vec![
                rsa("a", serde_json::json!({"alg": "RS256"})),
                rsa("b", serde_json::json!({})),
            ],
            &[Algorithm::PS256],
        );
        assert_eq!(set.len(), 1);
        assert!(chosen(&set, Algorithm::RS256, Some("a")).is_err());
        assert!(chosen(&set, Algorithm::RS256, Some("b")).is_err());
        assert_eq!(
            chosen(&set, Algorithm::PS256, Some("b")),
            Ok(vec![Algorithm::PS256])
        );
    }

    #[test]
    fn documents_that_are_not_key_sets() {
        let base = Validation::new(Algorithm::RS256);
        for document in [&b"[]"[..], b"{}", b"{\"keys\": 3}", b"not json", b""] {
            assert!(KeySet::parse(document, ALL, &base).is_err());
        }
        let empty = KeySet::parse(b"{\"keys\": []}", ALL, &base).unwrap();
        assert!(matches!(
            empty.choose(Algorithm::RS256, Some("k")),
            Choice::Unknown
        ));
    }

    #[test]
    fn debug_redacts_keys() {
        let set = set(vec![rsa("k", serde_json::json!({}))], ALL);
        let debug = format!("{set:?}");
        assert!(debug.contains("[redacted]") && debug.contains("\"k\""));
        assert!(!debug.contains(&RSA_N[..20]));
    }
}
