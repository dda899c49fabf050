//! A builder for `InteractionInput`, so backends need not fill prost structs by hand.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::pb;

/// Builds one interaction to ingest. `mailbox_id`, `client_key`, `app`, `prompt` and
/// `created_at` are required by the server; `created_at` defaults to now.
#[derive(Debug, Clone)]
pub struct InteractionBuilder {
    input: pb::InteractionInput,
}

pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

impl InteractionBuilder {
    pub fn new(mailbox_id: impl Into<String>, client_key: impl Into<String>) -> Self {
        InteractionBuilder {
            input: pb::InteractionInput {
                mailbox_id: mailbox_id.into(),
                client_key: client_key.into(),
                created_at: Some(timestamp(Utc::now())),
                ..Default::default()
            },
        }
    }

    pub fn thread(mut self, thread_id: impl Into<String>) -> Self {
        self.input.thread_id = thread_id.into();
        self
    }

    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.input.app = app.into();
        self
    }

    pub fn created_at(mut self, created_at: DateTime<Utc>) -> Self {
        self.input.created_at = Some(timestamp(created_at));
        self
    }

    pub fn prompt(mut self, prompt: impl Into<String>) -> Self {
        self.input.prompt = prompt.into();
        self
    }

    pub fn response(mut self, response: impl Into<String>) -> Self {
        self.input.response = response.into();
        self
    }

    pub fn model(
        mut self,
        provider: impl Into<String>,
        name: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        self.input.model = Some(pb::Model {
            provider: provider.into(),
            name: name.into(),
            version: version.into(),
        });
        self
    }

    pub fn plugin(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        self.input.plugins.push(pb::Plugin {
            id: id.into(),
            name: name.into(),
            version: version.into(),
        });
        self
    }

    pub fn accessed_resource(mut self, resource: pb::AccessedResource) -> Self {
        self.input.accessed_resources.push(resource);
        self
    }

    pub fn context(mut self, id: impl Into<String>, context_type: impl Into<String>) -> Self {
        self.input.contexts.push(pb::Context {
            id: id.into(),
            r#type: context_type.into(),
        });
        self
    }

    pub fn safety(mut self, safety: pb::Safety) -> Self {
        self.input.safety = Some(safety);
        self
    }

    pub fn sensitivity_label(mut self, label: impl Into<String>) -> Self {
        self.input.sensitivity_label = label.into();
        self
    }

    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.input.attributes.insert(key.into(), value.into());
        self
    }

    pub fn attributes(mut self, attributes: HashMap<String, String>) -> Self {
        self.input.attributes.extend(attributes);
        self
    }

    pub fn build(self) -> pb::InteractionInput {
        self.input
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_fills_every_field() {
        let input = InteractionBuilder::new("alice@contoso.com", "req-1")
            .thread("t1")
            .app("Word")
            .prompt("p")
            .response("r")
            .model("openai", "gpt", "4")
            .plugin("BingWebSearch", "Bing", "1")
            .context("https://contoso/doc", "document")
            .sensitivity_label("General")
            .attribute("k", "v")
            .build();
        assert_eq!(input.mailbox_id, "alice@contoso.com");
        assert_eq!(input.client_key, "req-1");
        assert_eq!(input.thread_id, "t1");
        assert_eq!(input.model.unwrap().name, "gpt");
        assert_eq!(input.plugins.len(), 1);
        assert_eq!(input.contexts[0].r#type, "document");
        assert_eq!(input.attributes["k"], "v");
        assert!(input.created_at.is_some());
    }
}
