//! The one place where wire types (prost) become domain types and back (validation is in
//! `validate`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use holdfast_proto::v1 as pb;
use holdfast_retention::{ItemLocation, MoveReason};

use crate::app::ingest::{IngestOutcome, CONFLICT_REASON};
use crate::auth::Role;
use crate::domain::{AccessedResource, Context, Model, Plugin, Safety, StoredInteraction};
use crate::error::Error;
use crate::ingest::Rejection;
use crate::validate::UnvalidatedContent;

pub fn timestamp_to_time(
    field: &str,
    timestamp: &prost_types::Timestamp,
) -> Result<DateTime<Utc>, Error> {
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        return Err(Error::invalid(field, "nanos must be within 0..1e9"));
    }
    DateTime::from_timestamp(timestamp.seconds, timestamp.nanos as u32)
        .ok_or_else(|| Error::invalid(field, "timestamp out of range"))
}

pub fn optional_time(
    field: &str,
    timestamp: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, Error> {
    timestamp.map(|t| timestamp_to_time(field, t)).transpose()
}

pub fn time_to_timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// An interaction as gRPC's `Ingest` carries it, decoded but not yet validated (see
/// `validate::interaction_content`). Only a missing or impossible `created_at` is refused here.
pub fn unvalidated_content(input: pb::InteractionInput) -> Result<UnvalidatedContent, Error> {
    let created_at = match &input.created_at {
        None => return Err(Error::invalid("created_at", "is required")),
        Some(timestamp) => timestamp_to_time("created_at", timestamp)?,
    };
    let model = input.model.unwrap_or_default();
    let safety = input.safety.unwrap_or_default();
    Ok(UnvalidatedContent {
        client_key: input.client_key,
        mailbox_id: input.mailbox_id,
        thread_id: input.thread_id,
        app: input.app,
        created_at,
        prompt: input.prompt,
        response: input.response,
        model: Model {
            provider: model.provider,
            name: model.name,
            version: model.version,
        },
        plugins: input
            .plugins
            .into_iter()
            .map(|plugin| Plugin {
                id: plugin.id,
                name: plugin.name,
                version: plugin.version,
            })
            .collect(),
        accessed_resources: input
            .accessed_resources
            .into_iter()
            .map(|resource| AccessedResource {
                id: resource.id,
                name: resource.name,
                resource_type: resource.r#type,
                url: resource.url,
                action: resource.action,
                sensitivity_label: resource.sensitivity_label,
            })
            .collect(),
        contexts: input
            .contexts
            .into_iter()
            .map(|context| Context {
                id: context.id,
                context_type: context.r#type,
            })
            .collect(),
        safety: Safety {
            jailbreak_detected: safety.jailbreak_detected,
            cross_prompt_injection_detected: safety.cross_prompt_injection_detected,
            content_filtered: safety.content_filtered,
            categories: safety.categories,
        },
        sensitivity_label: input.sensitivity_label,
        attributes: input.attributes.into_iter().collect::<BTreeMap<_, _>>(),
    })
}

/// One item's outcome of an ingest batch, at its position `index` in the request.
pub fn ingest_result_to_proto(index: usize, outcome: IngestOutcome) -> pb::IngestResult {
    let mut result = pb::IngestResult {
        index: index as u32,
        ..Default::default()
    };
    match outcome {
        IngestOutcome::Created(id) => {
            result.status = pb::IngestStatus::Created as i32;
            result.id = id.to_string();
        }
        IngestOutcome::Duplicate(id) => {
            result.status = pb::IngestStatus::Duplicate as i32;
            result.id = id.to_string();
        }
        IngestOutcome::Conflict(id) => {
            result.status = pb::IngestStatus::Rejected as i32;
            result.code = pb::RejectCode::AlreadyExists as i32;
            result.id = id.to_string();
            result.field = "client_key".into();
            result.reason = CONFLICT_REASON.into();
        }
        IngestOutcome::Rejected(Rejection { field, reason }) => {
            result.status = pb::IngestStatus::Rejected as i32;
            result.code = pb::RejectCode::InvalidArgument as i32;
            result.field = field;
            result.reason = reason;
        }
    }
    result
}

pub fn move_reason_to_proto(reason: MoveReason) -> pb::MoveReason {
    match reason {
        MoveReason::Expired => pb::MoveReason::Expired,
        MoveReason::UserDeleted => pb::MoveReason::UserDeleted,
        MoveReason::PurgeRequested => pb::MoveReason::PurgeRequested,
    }
}

pub fn interaction_to_proto(item: StoredInteraction) -> pb::Interaction {
    let content = item.content;
    let (location, move_reason, moved_at) = match item.location {
        ItemLocation::Active => (pb::Location::Active, pb::MoveReason::Unspecified, None),
        ItemLocation::HoldsArea { reason, moved_at } => (
            pb::Location::HoldsArea,
            move_reason_to_proto(reason),
            Some(time_to_timestamp(moved_at)),
        ),
    };
    pb::Interaction {
        id: item.id.to_string(),
        client_key: content.client_key,
        mailbox_id: content.mailbox_id.to_string(),
        thread_id: content.thread_id,
        app: content.app,
        created_at: Some(time_to_timestamp(content.created_at)),
        received_at: Some(time_to_timestamp(item.received_at)),
        prompt: content.prompt,
        response: content.response,
        model: Some(pb::Model {
            provider: content.model.provider,
            name: content.model.name,
            version: content.model.version,
        }),
        plugins: plugins_to_proto(content.plugins),
        accessed_resources: resources_to_proto(content.accessed_resources),
        contexts: content
            .contexts
            .into_iter()
            .map(|c| pb::Context {
                id: c.id,
                r#type: c.context_type,
            })
            .collect(),
        safety: Some(pb::Safety {
            jailbreak_detected: content.safety.jailbreak_detected,
            cross_prompt_injection_detected: content.safety.cross_prompt_injection_detected,
            content_filtered: content.safety.content_filtered,
            categories: content.safety.categories,
        }),
        sensitivity_label: content.sensitivity_label,
        attributes: content.attributes.into_iter().collect(),
        content_sha256: hex::encode(item.content_sha256),
        location: location as i32,
        move_reason: move_reason as i32,
        moved_at,
        annex: item.annex.map(|annex| pb::Annex {
            plugins: plugins_to_proto(annex.plugins),
            accessed_resources: resources_to_proto(annex.accessed_resources),
            updated_at: Some(time_to_timestamp(annex.updated_at)),
            principals: annex.principals,
        }),
    }
}

fn plugins_to_proto(plugins: Vec<Plugin>) -> Vec<pb::Plugin> {
    plugins
        .into_iter()
        .map(|p| pb::Plugin {
            id: p.id,
            name: p.name,
            version: p.version,
        })
        .collect()
}

fn resources_to_proto(resources: Vec<AccessedResource>) -> Vec<pb::AccessedResource> {
    resources
        .into_iter()
        .map(|r| pb::AccessedResource {
            id: r.id,
            name: r.name,
            r#type: r.resource_type,
            url: r.url,
            action: r.action,
            sensitivity_label: r.sensitivity_label,
        })
        .collect()
}

pub fn role_from_proto(value: i32) -> Result<Role, Error> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Ingest) => Ok(Role::Ingest),
        Ok(pb::Role::Ediscovery) => Ok(Role::Ediscovery),
        Ok(pb::Role::EdiscoveryAdmin) => Ok(Role::EdiscoveryAdmin),
        Ok(pb::Role::RetentionAdmin) => Ok(Role::RetentionAdmin),
        Ok(pb::Role::Purge) => Ok(Role::Purge),
        Ok(pb::Role::Auditor) => Ok(Role::Auditor),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Unspecified) | Err(_) => {
            Err(Error::invalid("roles", format!("unknown role {value}")))
        }
    }
}

pub fn role_to_proto(role: Role) -> pb::Role {
    match role {
        Role::Ingest => pb::Role::Ingest,
        Role::Ediscovery => pb::Role::Ediscovery,
        Role::EdiscoveryAdmin => pb::Role::EdiscoveryAdmin,
        Role::RetentionAdmin => pb::Role::RetentionAdmin,
        Role::Purge => pb::Role::Purge,
        Role::Auditor => pb::Role::Auditor,
        Role::Admin => pb::Role::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_is_required_and_must_be_a_real_time() {
        let mut input = pb::InteractionInput::default();
        let missing = unvalidated_content(input.clone());
        assert!(
            matches!(&missing, Err(Error::InvalidArgument { field, .. }) if field == "created_at"),
            "{missing:?}"
        );
        input.created_at = Some(prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        });
        let impossible = unvalidated_content(input.clone());
        assert!(
            matches!(&impossible, Err(Error::InvalidArgument { field, .. }) if field == "created_at"),
            "{impossible:?}"
        );
        input.created_at = Some(time_to_timestamp(Utc::now()));
        input.attributes = [("z".to_string(), "1".to_string()), ("a".into(), "2".into())].into();
        let decoded = unvalidated_content(input).unwrap();
        assert_eq!(decoded.attributes.keys().collect::<Vec<_>>(), ["a", "z"]);
    }
}
