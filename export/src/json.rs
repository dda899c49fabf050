//! The JSON form of an interaction, with SPEC §2's field names: one per line in the files
//! `holdfast ingest` reads, and what `holdfast get/list --json` print.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pb;

fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonModel {
    pub provider: String,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonPlugin {
    pub id: String,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonResource {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub url: String,
    pub action: String,
    pub sensitivity_label: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonContext {
    pub id: String,
    #[serde(rename = "type")]
    pub context_type: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonSafety {
    pub jailbreak_detected: bool,
    pub cross_prompt_injection_detected: bool,
    pub content_filtered: bool,
    pub categories: Vec<String>,
}

/// One interaction. Unknown fields are errors (a misspelt field must not vanish silently);
/// the server-assigned fields are accepted and ignored on input, so an export can be read
/// back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonInteraction {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub mailbox_id: String,
    pub client_key: String,
    pub thread_id: String,
    pub app: String,
    pub created_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    pub prompt: String,
    pub response: String,
    pub model: JsonModel,
    pub plugins: Vec<JsonPlugin>,
    pub accessed_resources: Vec<JsonResource>,
    pub contexts: Vec<JsonContext>,
    pub safety: JsonSafety,
    pub sensitivity_label: String,
    pub attributes: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub move_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_at: Option<DateTime<Utc>>,
    /// Tools and resources attached after the item was stored (not part of its content or
    /// digest; ignored on input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annex: Option<JsonAnnex>,
}

/// What the server attached to a stored interaction after storing it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonAnnex {
    pub plugins: Vec<JsonPlugin>,
    pub accessed_resources: Vec<JsonResource>,
    pub updated_at: Option<DateTime<Utc>>,
    pub principals: Vec<String>,
}

fn plugins_from_proto(plugins: Vec<pb::Plugin>) -> Vec<JsonPlugin> {
    plugins
        .into_iter()
        .map(|p| JsonPlugin {
            id: p.id,
            name: p.name,
            version: p.version,
        })
        .collect()
}

fn resources_from_proto(resources: Vec<pb::AccessedResource>) -> Vec<JsonResource> {
    resources
        .into_iter()
        .map(|r| JsonResource {
            id: r.id,
            name: r.name,
            resource_type: r.r#type,
            url: r.url,
            action: r.action,
            sensitivity_label: r.sensitivity_label,
        })
        .collect()
}

fn to_time(timestamp: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
}

pub fn location_name(location: i32) -> &'static str {
    match pb::Location::try_from(location) {
        Ok(pb::Location::Active) => "active",
        Ok(pb::Location::HoldsArea) => "holds_area",
        _ => "unknown",
    }
}

pub fn move_reason_name(reason: i32) -> &'static str {
    match pb::MoveReason::try_from(reason) {
        Ok(pb::MoveReason::Expired) => "expired",
        Ok(pb::MoveReason::UserDeleted) => "user_deleted",
        Ok(pb::MoveReason::PurgeRequested) => "purge_requested",
        _ => "",
    }
}

impl JsonInteraction {
    pub fn into_input(self) -> pb::InteractionInput {
        pb::InteractionInput {
            client_key: self.client_key,
            mailbox_id: self.mailbox_id,
            thread_id: self.thread_id,
            app: self.app,
            created_at: self.created_at.map(timestamp),
            prompt: self.prompt,
            response: self.response,
            model: Some(pb::Model {
                provider: self.model.provider,
                name: self.model.name,
                version: self.model.version,
            }),
            plugins: self
                .plugins
                .into_iter()
                .map(|p| pb::Plugin {
                    id: p.id,
                    name: p.name,
                    version: p.version,
                })
                .collect(),
            accessed_resources: self
                .accessed_resources
                .into_iter()
                .map(|r| pb::AccessedResource {
                    id: r.id,
                    name: r.name,
                    r#type: r.resource_type,
                    url: r.url,
                    action: r.action,
                    sensitivity_label: r.sensitivity_label,
                })
                .collect(),
            contexts: self
                .contexts
                .into_iter()
                .map(|c| pb::Context {
                    id: c.id,
                    r#type: c.context_type,
                })
                .collect(),
            safety: Some(pb::Safety {
                jailbreak_detected: self.safety.jailbreak_detected,
                cross_prompt_injection_detected: self.safety.cross_prompt_injection_detected,
                content_filtered: self.safety.content_filtered,
                categories: self.safety.categories,
            }),
            sensitivity_label: self.sensitivity_label,
            attributes: self.attributes.into_iter().collect(),
        }
    }

    /// The content as the server hashed it, to recompute `content_sha256` (`None` without
    /// `created_at`, which every stored item has).
    pub fn content(&self) -> Option<holdfast_content::InteractionContent> {
        use holdfast_content as c;
        Some(c::InteractionContent {
            client_key: self.client_key.clone(),
            mailbox_id: self.mailbox_id.clone(),
            thread_id: self.thread_id.clone(),
            app: self.app.clone(),
            created_at: self.created_at?,
            prompt: self.prompt.clone(),
            response: self.response.clone(),
            model: c::Model {
                provider: self.model.provider.clone(),
                name: self.model.name.clone(),
                version: self.model.version.clone(),
            },
            plugins: self
                .plugins
                .iter()
                .map(|p| c::Plugin {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    version: p.version.clone(),
                })
                .collect(),
            accessed_resources: self
                .accessed_resources
                .iter()
                .map(|r| c::AccessedResource {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    resource_type: r.resource_type.clone(),
                    url: r.url.clone(),
                    action: r.action.clone(),
                    sensitivity_label: r.sensitivity_label.clone(),
                })
                .collect(),
            contexts: self
                .contexts
                .iter()
                .map(|x| c::Context {
                    id: x.id.clone(),
                    context_type: x.context_type.clone(),
                })
                .collect(),
            safety: c::Safety {
                jailbreak_detected: self.safety.jailbreak_detected,
                cross_prompt_injection_detected: self.safety.cross_prompt_injection_detected,
                content_filtered: self.safety.content_filtered,
                categories: self.safety.categories.clone(),
            },
            sensitivity_label: self.sensitivity_label.clone(),
            attributes: self.attributes.clone(),
        })
    }

    pub fn from_stored(item: pb::Interaction) -> JsonInteraction {
        let model = item.model.unwrap_or_default();
        let safety = item.safety.unwrap_or_default();
        let moved = item.location == pb::Location::HoldsArea as i32;
        JsonInteraction {
            id: Some(item.id),
            mailbox_id: item.mailbox_id,
            client_key: item.client_key,
            thread_id: item.thread_id,
            app: item.app,
            created_at: to_time(item.created_at),
            received_at: to_time(item.received_at),
            prompt: item.prompt,
            response: item.response,
            model: JsonModel {
                provider: model.provider,
                name: model.name,
                version: model.version,
            },
            plugins: plugins_from_proto(item.plugins),
            accessed_resources: resources_from_proto(item.accessed_resources),
            contexts: item
                .contexts
                .into_iter()
                .map(|c| JsonContext {
                    id: c.id,
                    context_type: c.r#type,
                })
                .collect(),
            safety: JsonSafety {
                jailbreak_detected: safety.jailbreak_detected,
                cross_prompt_injection_detected: safety.cross_prompt_injection_detected,
                content_filtered: safety.content_filtered,
                categories: safety.categories,
            },
            sensitivity_label: item.sensitivity_label,
            attributes: item.attributes.into_iter().collect(),
            content_sha256: Some(item.content_sha256),
            location: Some(location_name(item.location).to_string()),
            move_reason: moved.then(|| move_reason_name(item.move_reason).to_string()),
            moved_at: if moved { to_time(item.moved_at) } else { None },
            annex: item.annex.map(|annex| JsonAnnex {
                plugins: plugins_from_proto(annex.plugins),
                accessed_resources: resources_from_proto(annex.accessed_resources),
                updated_at: to_time(annex.updated_at),
                principals: annex.principals,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chitchat_line_parses() {
        let line = r#"{"mailbox_id": "a@chitchat.example", "client_key": "c#0", "thread_id": "c", "app": "Teams", "created_at": "2018-03-01T12:00:00.123Z", "prompt": "hi", "response": "hello"}"#;
        let parsed: JsonInteraction = serde_json::from_str(line).unwrap();
        let input = parsed.into_input();
        assert_eq!(input.app, "Teams");
        assert_eq!(input.created_at.unwrap().nanos, 123_000_000);
    }

    #[test]
    fn a_misspelt_field_is_an_error() {
        let error = serde_json::from_str::<JsonInteraction>(r#"{"mailbox": "x"}"#).unwrap_err();
        assert!(error.to_string().contains("mailbox"), "{error}");
    }
}
