//! Ingest as OTLP trace exports (`--mode otlp`), for comparing it with native `Ingest` in the
//! same run: each item becomes one GenAI `chat` span (current conventions) on the gRPC port's
//! `TraceService/Export`, 1 span per interaction, `-b` spans per request.

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::json;
use tonic::transport::Channel;

use holdfast_client::pb;

#[derive(Clone)]
pub struct OtlpIngest {
    client: TraceServiceClient<Channel>,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl OtlpIngest {
    pub async fn connect(addr: &str, token: &str) -> anyhow::Result<OtlpIngest> {
        let channel = Channel::from_shared(addr.to_string())
            .context("--addr is not a URL")?
            .connect()
            .await
            .context("cannot connect for OTLP")?;
        Ok(OtlpIngest {
            client: TraceServiceClient::new(channel).max_encoding_message_size(32 << 20),
            authorization: format!("Bearer {token}").parse()?,
        })
    }

    /// Sends one batch as spans; the answer in gRPC `Ingest`'s form (every span stored
    /// unless the partial success says how many were refused).
    pub async fn ingest(
        &self,
        items: &[pb::InteractionInput],
    ) -> anyhow::Result<pb::IngestResponse> {
        let spans = items.iter().map(to_span).collect();
        let mut request = tonic::Request::new(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "BizChat")],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        });
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let answer = self.client.clone().export(request).await?.into_inner();
        let rejected = answer
            .partial_success
            .map_or(0, |p| p.rejected_spans.max(0) as usize);
        let results = (0..items.len())
            .map(|index| pb::IngestResult {
                status: if index < items.len() - rejected {
                    pb::IngestStatus::Created as i32
                } else {
                    pb::IngestStatus::Rejected as i32
                },
                ..Default::default()
            })
            .collect();
        Ok(pb::IngestResponse {
            results,
            sequence: 0,
        })
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// Distinct ids from the item's client key (FNV-1a, twice).
fn ids(key: &str) -> (Vec<u8>, Vec<u8>) {
    let hash = |seed: u64| {
        key.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let (a, b) = (hash(0xcbf2_9ce4_8422_2325), hash(0x8422_2325_cbf2_9ce4));
    let trace = [a.to_be_bytes(), b.to_be_bytes()].concat();
    (trace, (a ^ b.rotate_left(17)).to_be_bytes().to_vec())
}

fn to_span(item: &pb::InteractionInput) -> Span {
    let (trace_id, span_id) = ids(&item.client_key);
    let start = item
        .created_at
        .as_ref()
        .map_or(0, |t| t.seconds as u64 * 1_000_000_000 + t.nanos as u64);
    let message = |role: &str, text: &str| {
        json!([{ "role": role, "parts": [{ "type": "text", "content": text }] }]).to_string()
    };
    Span {
        trace_id,
        span_id,
        name: "chat model".into(),
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        attributes: vec![
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.provider.name", "bench"),
            kv("gen_ai.request.model", "model"),
            kv("user.id", &item.mailbox_id),
            kv("gen_ai.conversation.id", &item.thread_id),
            kv("gen_ai.input.messages", &message("user", &item.prompt)),
            kv(
                "gen_ai.output.messages",
                &message("assistant", &item.response),
            ),
        ],
        ..Span::default()
    }
}
