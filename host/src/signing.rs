//! Webhook signatures: the original `X-Webhook-Signature` and Standard Webhooks.
//!
//! * `X-Webhook-Signature`: lowercase hex HMAC-SHA256 of the body, keyed with the secret's raw
//!   bytes, exactly as the original service did.
//! * `webhook-signature`: `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where a
//!   `whsec_` secret is base64-decoded to get the key (any other secret is used as raw bytes).
//!   During a rotation the header carries a space-separated list, current secret first.
//!
//! Keys are prepared once per endpoint ([`SigningKey`]); a signature then clones a pre-keyed
//! HMAC state instead of re-deriving the key for every request.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const WHSEC_PREFIX: &str = "whsec_";

/// A secret value that never prints itself: `Debug` shows `Secret(***)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// A secret whose text cannot be used as a key.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("is empty")]
    Empty,
    #[error("starts with `whsec_` but the rest is not valid base64")]
    BadBase64,
}

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret text itself. Call sites are the signing code and constant-time compares.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A new random secret in the Standard Webhooks form: `whsec_` and 24 random bytes in
    /// base64.
    pub fn generate() -> Self {
        let bytes: [u8; 24] = rand::random();
        Self(format!("{WHSEC_PREFIX}{}", BASE64.encode(bytes)))
    }

    /// Checks the secret can produce both signatures.
    pub fn validate(&self) -> Result<(), SecretError> {
        self.standard_key().map(|_| ())
    }

    /// The Standard Webhooks key: base64-decoded after `whsec_`, else the raw bytes.
    fn standard_key(&self) -> Result<Vec<u8>, SecretError> {
        if self.0.is_empty() {
            return Err(SecretError::Empty);
        }
        match self.0.strip_prefix(WHSEC_PREFIX) {
            Some(encoded) => BASE64
                .decode(encoded)
                .ok()
                .filter(|key| !key.is_empty())
                .ok_or(SecretError::BadBase64),
            None => Ok(self.0.as_bytes().to_vec()),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Writes the secret's text: for the store only, which must keep it to sign. Answers of the
/// admin API never serialize a `Secret`; they show a secret once, as text, when it is made.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// One secret, prepared for signing.
#[derive(Clone)]
pub struct SigningKey {
    legacy: HmacSha256,
    standard: HmacSha256,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    pub fn new(secret: &Secret) -> Result<Self, SecretError> {
        let standard_key = secret.standard_key()?;
        Ok(Self {
            legacy: keyed(secret.expose().as_bytes()),
            standard: keyed(&standard_key),
        })
    }

    /// `X-Webhook-Signature`: lowercase hex HMAC-SHA256(secret, body).
    pub fn legacy_signature(&self, body: &[u8]) -> String {
        let mut mac = self.legacy.clone();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    /// One Standard Webhooks signature: `v1,<base64>`.
    pub fn standard_signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = self.standard.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length")
}

/// The signature headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// `X-Webhook-Signature` (current secret).
    pub legacy: String,
    /// `X-Webhook-Signature-Previous`, while a rotated-out secret is still valid.
    pub legacy_previous: Option<String>,
    /// `webhook-signature`: current first, then the previous secret's, space-separated.
    pub standard: String,
}

/// Signs one request with the current key and, during a rotation, the previous one.
pub fn sign(
    current: &SigningKey,
    previous: Option<&SigningKey>,
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> SignatureHeaders {
    let mut standard = current.standard_signature(id, timestamp, body);
    if let Some(previous) = previous {
        standard.push(' ');
        standard.push_str(&previous.standard_signature(id, timestamp, body));
    }
    SignatureHeaders {
        legacy: current.legacy_signature(body),
        legacy_previous: previous.map(|key| key.legacy_signature(body)),
        standard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> SigningKey {
        SigningKey::new(&Secret::new(secret)).unwrap()
    }

    #[test]
    fn standard_webhooks_test_vector_passes() {
        let signature = key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").standard_signature(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn legacy_signature_is_lowercase_hex_hmac_of_the_body_with_the_raw_secret() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let signature = key("Jefe").legacy_signature(b"what do ya want for nothing?");
        assert_eq!(
            signature,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn rotation_sends_both_signatures_current_first() {
        let current = key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let previous = key("old-plain-secret");
        let headers = sign(&current, Some(&previous), "evt_1", 42, b"{}");
        let parts: Vec<&str> = headers.standard.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], current.standard_signature("evt_1", 42, b"{}"));
        assert_eq!(parts[1], previous.standard_signature("evt_1", 42, b"{}"));
        assert_eq!(
            headers.legacy_previous.as_deref(),
            Some(previous.legacy_signature(b"{}").as_str())
        );
    }

    #[test]
    fn a_whsec_secret_with_bad_base64_is_refused() {
        let err = Secret::new("whsec_not*base64").validate().unwrap_err();
        assert!(matches!(err, SecretError::BadBase64));
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2-secret");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(
            format!("{:?}", SigningKey::new(&secret).unwrap()),
            "SigningKey(***)"
        );
    }
}
