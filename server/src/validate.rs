//! Validation of what callers send, whatever front door it came through: mailbox ids, short
//! text fields, lists, and a whole interaction against the data model's rules and the
//! configured limits.

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::Limits;
use crate::domain::{InteractionContent, MailboxId};
use crate::error::Error;

/// An interaction as a front door decoded it, not yet validated: the mailbox id is the
/// caller's text. `interaction_content` turns it into the stored form.
pub type UnvalidatedContent = holdfast_content::InteractionContent<String>;

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

/// Validates one incoming interaction against the data model and the configured limits.
pub fn interaction_content(
    input: UnvalidatedContent,
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

    let created_at = input.created_at;
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
    // chrono represents a leap second as nanos past 1e9, which a protobuf Timestamp (and so
    // every answer and export) cannot carry.
    if created_at.timestamp_subsec_nanos() >= 1_000_000_000 {
        return Err(Error::invalid("created_at", "is a leap second (:60)"));
    }

    check_text("prompt", &input.prompt, limits.max_prompt_bytes, false)?;
    check_text(
        "response",
        &input.response,
        limits.max_response_bytes,
        false,
    )?;

    let model = &input.model;
    for (field, value) in [
        ("model.provider", &model.provider),
        ("model.name", &model.name),
        ("model.version", &model.version),
    ] {
        check_text(field, value, field_limit, true)?;
    }

    check_list("plugins", &input.plugins, limits)?;
    for plugin in &input.plugins {
        for (field, value) in [
            ("plugins.id", &plugin.id),
            ("plugins.name", &plugin.name),
            ("plugins.version", &plugin.version),
        ] {
            check_text(field, value, field_limit, true)?;
        }
    }

    check_list("accessed_resources", &input.accessed_resources, limits)?;
    for resource in &input.accessed_resources {
        for (field, value) in [
            ("accessed_resources.id", &resource.id),
            ("accessed_resources.name", &resource.name),
            ("accessed_resources.type", &resource.resource_type),
            ("accessed_resources.url", &resource.url),
            ("accessed_resources.action", &resource.action),
            (
                "accessed_resources.sensitivity_label",
                &resource.sensitivity_label,
            ),
        ] {
            check_text(field, value, field_limit, true)?;
        }
    }

    check_list("contexts", &input.contexts, limits)?;
    for context in &input.contexts {
        check_text("contexts.id", &context.id, field_limit, true)?;
        check_text("contexts.type", &context.context_type, field_limit, true)?;
    }

    check_list("safety.categories", &input.safety.categories, limits)?;
    for category in &input.safety.categories {
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
        model: input.model,
        plugins: input.plugins,
        accessed_resources: input.accessed_resources,
        contexts: input.contexts,
        safety: input.safety,
        sensitivity_label: input.sensitivity_label,
        attributes: input.attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> UnvalidatedContent {
        UnvalidatedContent {
            client_key: "req-1".into(),
            mailbox_id: "Alice@Contoso.com".into(),
            thread_id: String::new(),
            app: "Word".into(),
            created_at: Utc::now(),
            prompt: "hello".into(),
            response: String::new(),
            model: Default::default(),
            plugins: Vec::new(),
            accessed_resources: Vec::new(),
            contexts: Vec::new(),
            safety: Default::default(),
            sensitivity_label: String::new(),
            attributes: Default::default(),
        }
    }

    fn rejects(field: &str, change: impl FnOnce(&mut UnvalidatedContent)) {
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
        rejects("created_at", |i| {
            i.created_at = Utc::now() + TimeDelta::minutes(6)
        });
        rejects("created_at", |i| {
            i.created_at = DateTime::UNIX_EPOCH - TimeDelta::seconds(1)
        });
        rejects("created_at", |i| {
            i.created_at = DateTime::parse_from_rfc3339("2016-12-31T23:59:60Z")
                .unwrap()
                .with_timezone(&Utc)
        });
        rejects("prompt", |i| i.prompt = "x".repeat((1 << 20) + 1));
        rejects("response", |i| i.response = "x".repeat((1 << 20) + 1));
        rejects("attributes", |i| {
            i.attributes = (0..65).map(|n| (n.to_string(), String::new())).collect()
        });
        rejects("thread_id", |i| i.thread_id = "x".repeat(9000));
        rejects("plugins.name", |i| {
            i.plugins = vec![holdfast_content::Plugin {
                name: "x".repeat(9000),
                ..Default::default()
            }]
        });
        rejects("accessed_resources.type", |i| {
            i.accessed_resources = vec![holdfast_content::AccessedResource {
                resource_type: "a\u{7}".into(),
                ..Default::default()
            }]
        });
    }

    #[test]
    fn a_little_clock_skew_is_allowed_and_backfills_are_fine() {
        let mut input = valid();
        input.created_at = Utc::now() + TimeDelta::minutes(4);
        assert!(interaction_content(input, &Limits::default(), Utc::now()).is_ok());
        let mut input = valid();
        input.created_at = DateTime::from_timestamp(1_500_000_000, 0).unwrap();
        assert!(interaction_content(input, &Limits::default(), Utc::now()).is_ok());
    }
}
