//! An interaction's content and its canonical encoding, the input of `content_sha256`.
//!
//! The server computes the digest at ingest (`holdfast-server`'s `domain::InteractionContent`
//! is this type with a validated mailbox id); the client recomputes it when it verifies an
//! export. Keeping the one definition here, with no dependency on either, is what makes the
//! two agree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

// The parts of an interaction below are read with their fields optional (missing: empty) and
// unknown fields refused, so that a misspelt field is an error rather than lost evidence.

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Model {
    pub provider: String,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Plugin {
    pub id: String,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct AccessedResource {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub url: String,
    pub action: String,
    pub sensitivity_label: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Context {
    pub id: String,
    #[serde(rename = "type")]
    pub context_type: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Safety {
    pub jailbreak_detected: bool,
    pub cross_prompt_injection_detected: bool,
    pub content_filtered: bool,
    pub categories: Vec<String>,
}

/// What the caller sent, validated. Immutable once stored. Empty strings mean "not given".
/// `M` is the mailbox id's type (the server's validated `MailboxId`, or a plain `String`:
/// both serialise as the lower-cased string).
///
/// Its canonical encoding (the input of `content_sha256`) is the compact JSON of this struct:
/// fields in declaration order, attributes sorted by key, `created_at` in RFC 3339 with the
/// caller's sub-second precision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractionContent<M = String> {
    pub client_key: String,
    pub mailbox_id: M,
    pub thread_id: String,
    pub app: String,
    pub created_at: DateTime<Utc>,
    pub prompt: String,
    pub response: String,
    pub model: Model,
    pub plugins: Vec<Plugin>,
    pub accessed_resources: Vec<AccessedResource>,
    pub contexts: Vec<Context>,
    pub safety: Safety,
    pub sensitivity_label: String,
    pub attributes: BTreeMap<String, String>,
}

impl<M: Serialize> InteractionContent<M> {
    pub fn canonical_encoding(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("interaction content always serialises")
    }

    pub fn digest(canonical: &[u8]) -> [u8; 32] {
        Sha256::digest(canonical).into()
    }

    /// Lower-case hex SHA-256 of the canonical encoding: `content_sha256`.
    pub fn sha256_hex(&self) -> String {
        Self::digest(&self.canonical_encoding())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_encoding_is_fixed() {
        let content = InteractionContent {
            client_key: "k".into(),
            mailbox_id: "a@b".to_string(),
            thread_id: String::new(),
            app: "Word".into(),
            created_at: Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap(),
            prompt: "p".into(),
            response: "r".into(),
            model: Model::default(),
            plugins: vec![],
            accessed_resources: vec![],
            contexts: vec![],
            safety: Safety::default(),
            sensitivity_label: String::new(),
            attributes: [("z".to_string(), "1".to_string()), ("a".into(), "2".into())].into(),
        };
        let expected = r#"{"client_key":"k","mailbox_id":"a@b","thread_id":"","app":"Word","created_at":"2025-01-01T12:00:00Z","prompt":"p","response":"r","model":{"provider":"","name":"","version":""},"plugins":[],"accessed_resources":[],"contexts":[],"safety":{"jailbreak_detected":false,"cross_prompt_injection_detected":false,"content_filtered":false,"categories":[]},"sensitivity_label":"","attributes":{"a":"2","z":"1"}}"#;
        assert_eq!(
            String::from_utf8(content.canonical_encoding()).unwrap(),
            expected
        );
        assert_eq!(content.sha256_hex().len(), 64);
    }
}
