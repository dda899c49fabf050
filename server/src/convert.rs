//! The one place where wire types (prost) become validated domain types and back.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use holdfast_proto::v1 as pb;
use holdfast_retention::{ItemLocation, MoveReason};

use crate::auth::Role;
use crate::config::Limits;
use crate::domain::{
    AccessedResource, Context, InteractionContent, MailboxId, Model, Plugin, Safety,
    StoredInteraction,
};
use crate::error::Error;

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

pub fn parse_mailbox(field: &str, raw: &str) -> Result<MailboxId, Error> {
    MailboxId::parse(raw).map_err(|reason| Error::invalid(field, reason))
}

/// Checks a short text field: length and no control characters (when `plain`).
fn check_text(field: &str, value: &str, max_bytes: usize, plain: bool) -> Result<(), Error> {
    if value.len() > max_bytes {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes, more than the limit of {max_bytes}",
                value.len()
            ),
        ));
    }
    if plain && value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains a control character"));
    }
    Ok(())
}

pub fn check_thread_id(field: &str, value: &str, limits: &Limits) -> Result<(), Error> {
    check_text(field, value, limits.max_field_bytes, true)
}

fn check_list<T>(field: &str, items: &[T], limits: &Limits) -> Result<(), Error> {
    if items.len() > limits.max_list_items {
        return Err(Error::invalid(
            field,
            format!(
                "has {} entries, more than the limit of {}",
                items.len(),
                limits.max_list_items
            ),
        ));
    }
    Ok(())
}

/// Validates one incoming interaction against SPEC §2 and the configured limits.
pub fn interaction_content(
    input: pb::InteractionInput,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<InteractionContent, Error> {
    let field_limit = limits.max_field_bytes;
    let mailbox_id = parse_mailbox("mailbox_id", &input.mailbox_id)?;
    if input.client_key.is_empty() {
        return Err(Error::invalid("client_key", "must not be empty"));
    }
    check_text("client_key", &input.client_key, field_limit, true)?;
    check_thread_id("thread_id", &input.thread_id, limits)?;
    if input.app.is_empty() {
        return Err(Error::invalid("app", "must not be empty"));
    }
    check_text("app", &input.app, field_limit, true)?;

    let created_at = match &input.created_at {
        None => return Err(Error::invalid("created_at", "is required")),
        Some(timestamp) => timestamp_to_time("created_at", timestamp)?,
    };
    if created_at > now + TimeDelta::seconds(limits.max_future_skew_seconds) {
        return Err(Error::invalid(
            "created_at",
            format!(
                "is more than {} seconds in the future",
                limits.max_future_skew_seconds
            ),
        ));
    }
    if created_at < DateTime::UNIX_EPOCH {
        return Err(Error::invalid("created_at", "is before 1970-01-01"));
    }

    check_text("prompt", &input.prompt, limits.max_prompt_bytes, false)?;
    check_text(
        "response",
        &input.response,
        limits.max_response_bytes,
        false,
    )?;

    let model = input.model.unwrap_or_default();
    for (field, value) in [
        ("model.provider", &model.provider),
        ("model.name", &model.name),
        ("model.version", &model.version),
    ] {
        check_text(field, value, field_limit, true)?;
    }

    check_list("plugins", &input.plugins, limits)?;
    let mut plugins = Vec::with_capacity(input.plugins.len());
    for plugin in input.plugins {
        for (field, value) in [
            ("plugins.id", &plugin.id),
            ("plugins.name", &plugin.name),
            ("plugins.version", &plugin.version),
        ] {
            check_text(field, value, field_limit, true)?;
        }
        plugins.push(Plugin {
            id: plugin.id,
            name: plugin.name,
            version: plugin.version,
        });
    }

    check_list("accessed_resources", &input.accessed_resources, limits)?;
    let mut accessed_resources = Vec::with_capacity(input.accessed_resources.len());
    for resource in input.accessed_resources {
        for (field, value) in [
            ("accessed_resources.id", &resource.id),
            ("accessed_resources.name", &resource.name),
            ("accessed_resources.type", &resource.r#type),
            ("accessed_resources.url", &resource.url),
            ("accessed_resources.action", &resource.action),
            (
                "accessed_resources.sensitivity_label",
                &resource.sensitivity_label,
            ),
        ] {
            check_text(field, value, field_limit, true)?;
        }
        accessed_resources.push(AccessedResource {
            id: resource.id,
            name: resource.name,
            resource_type: resource.r#type,
            url: resource.url,
            action: resource.action,
            sensitivity_label: resource.sensitivity_label,
        });
    }

    check_list("contexts", &input.contexts, limits)?;
    let mut contexts = Vec::with_capacity(input.contexts.len());
    for context in input.contexts {
        check_text("contexts.id", &context.id, field_limit, true)?;
        check_text("contexts.type", &context.r#type, field_limit, true)?;
        contexts.push(Context {
            id: context.id,
            context_type: context.r#type,
        });
    }

    let safety = input.safety.unwrap_or_default();
    check_list("safety.categories", &safety.categories, limits)?;
    for category in &safety.categories {
        check_text("safety.categories", category, field_limit, true)?;
    }

    check_text(
        "sensitivity_label",
        &input.sensitivity_label,
        field_limit,
        true,
    )?;

    if input.attributes.len() > limits.max_attributes {
        return Err(Error::invalid(
            "attributes",
            format!(
                "has {} entries, more than the limit of {}",
                input.attributes.len(),
                limits.max_attributes
            ),
        ));
    }
    for (key, value) in &input.attributes {
        if key.is_empty() {
            return Err(Error::invalid("attributes", "a key is empty"));
        }
        check_text("attributes key", key, field_limit, true)?;
        check_text("attributes value", value, field_limit, false)?;
    }

    Ok(InteractionContent {
        client_key: input.client_key,
        mailbox_id,
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
        plugins,
        accessed_resources,
        contexts,
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
        plugins: content
            .plugins
            .into_iter()
            .map(|p| pb::Plugin {
                id: p.id,
                name: p.name,
                version: p.version,
            })
            .collect(),
        accessed_resources: content
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
    }
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

    fn valid() -> pb::InteractionInput {
        pb::InteractionInput {
            client_key: "req-1".into(),
            mailbox_id: "Alice@Contoso.com".into(),
            app: "Word".into(),
            created_at: Some(time_to_timestamp(Utc::now())),
            prompt: "hello".into(),
            ..Default::default()
        }
    }

    fn rejects(field: &str, change: impl FnOnce(&mut pb::InteractionInput)) {
        let mut input = valid();
        change(&mut input);
        match interaction_content(input, &Limits::default(), Utc::now()) {
            Err(Error::InvalidArgument { field: got, .. }) => assert_eq!(got, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_interaction_is_accepted_and_lower_cased() {
        let content = interaction_content(valid(), &Limits::default(), Utc::now()).unwrap();
        assert_eq!(content.mailbox_id.as_str(), "alice@contoso.com");
    }

    #[test]
    fn each_rule_rejects_with_its_field() {
        rejects("mailbox_id", |i| i.mailbox_id.clear());
        rejects("mailbox_id", |i| i.mailbox_id = "a\nb".into());
        rejects("client_key", |i| i.client_key.clear());
        rejects("app", |i| i.app.clear());
        rejects("created_at", |i| i.created_at = None);
        rejects("created_at", |i| {
            i.created_at = Some(time_to_timestamp(Utc::now() + TimeDelta::minutes(6)))
        });
        rejects("created_at", |i| {
            i.created_at = Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            })
        });
        rejects("prompt", |i| i.prompt = "x".repeat((1 << 20) + 1));
        rejects("response", |i| i.response = "x".repeat((1 << 20) + 1));
        rejects("attributes", |i| {
            i.attributes = (0..65).map(|n| (n.to_string(), String::new())).collect()
        });
        rejects("thread_id", |i| i.thread_id = "x".repeat(9000));
        rejects("plugins.name", |i| {
            i.plugins = vec![pb::Plugin {
                name: "x".repeat(9000),
                ..Default::default()
            }]
        });
    }

    #[test]
    fn a_little_clock_skew_is_allowed_and_backfills_are_fine() {
        let mut input = valid();
        input.created_at = Some(time_to_timestamp(Utc::now() + TimeDelta::minutes(4)));
        assert!(interaction_content(input, &Limits::default(), Utc::now()).is_ok());
        let mut input = valid();
        input.created_at = Some(prost_types::Timestamp {
            seconds: 1_500_000_000,
            nanos: 0,
        });
        assert!(interaction_content(input, &Limits::default(), Utc::now()).is_ok());
    }
}
