//! OTLP trace ingest: OpenTelemetry GenAI spans, read by `otlp.rs`, stored through
//! `App::ingest` like any batch (validation, idempotency by `client_key` =
//! `trace_id:span_id`, durable before the answer). Both front doors (OTLP/gRPC and
//! OTLP/HTTP) call `App::ingest_otlp`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use super::ingest::{IngestOutcome, INGESTERS};
use super::App;
use crate::auth::Principal;
use crate::config::{ConfigToken, OtlpConfig};
use crate::error::Error;
use crate::otlp::{self, Options, TraceTools};

/// Traces whose tools are remembered, and for how long.
const REMEMBERED_TRACES: usize = 10_000;
const REMEMBERED_FOR: Duration = Duration::from_secs(600);

/// The longest `error_message` of a partial success.
const MAX_ERROR_MESSAGE: usize = 2_048;

/// What an export came to: how many inference spans were refused, and why (OTLP's
/// `partial_success`). Spans that are not inference calls are neither stored nor refused.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OtlpOutcome {
    /// Inference spans stored now or before (a re-sent batch stores nothing twice).
    pub stored: usize,
    pub rejected_spans: i64,
    pub error_message: String,
}

/// The OTLP settings of the server and of each configured token.
#[derive(Debug, Default)]
pub struct OtlpSettings {
    user_attributes: Vec<String>,
    /// By principal name: the app to record, and whether spans without content are kept.
    tokens: HashMap<String, (Option<String>, bool)>,
    /// Tools and resources seen per trace: an inference span that arrives after its trace's
    /// tool spans (children end, and are exported, before their parents) gets them.
    tools: Mutex<HashMap<String, (Instant, TraceTools)>>,
}

impl OtlpSettings {
    pub fn new(config: &OtlpConfig, tokens: &[ConfigToken]) -> OtlpSettings {
        OtlpSettings {
            user_attributes: config.user_attributes.clone(),
            tokens: tokens
                .iter()
                .map(|t| (t.name.clone(), (t.otlp_app.clone(), t.otlp_metadata_only)))
                .collect(),
            tools: Mutex::default(),
        }
    }

    /// Remembers this request's tools and answers, for each trace id asked, all it knows.
    fn remember(
        &self,
        seen: HashMap<String, TraceTools>,
        wanted: impl Iterator<Item = String>,
    ) -> HashMap<String, TraceTools> {
        let now = Instant::now();
        let mut remembered = self.tools.lock().unwrap_or_else(|e| e.into_inner());
        for (trace, tools) in seen {
            if remembered.len() >= REMEMBERED_TRACES && !remembered.contains_key(&trace) {
                remembered.retain(|_, (at, _)| now.duration_since(*at) < REMEMBERED_FOR);
                if remembered.len() >= REMEMBERED_TRACES {
                    // Still full of recent traces: forget the oldest.
                    if let Some(oldest) = remembered
                        .iter()
                        .min_by_key(|(_, (at, _))| *at)
                        .map(|(trace, _)| trace.clone())
                    {
                        remembered.remove(&oldest);
                    }
                }
            }
            let entry = remembered
                .entry(trace)
                .or_insert_with(|| (now, TraceTools::default()));
            entry.0 = now;
            entry.1.merge(&tools);
        }
        wanted
            .filter_map(|trace| {
                let (at, tools) = remembered.get(&trace)?;
                (now.duration_since(*at) < REMEMBERED_FOR).then(|| (trace, tools.clone()))
            })
            .collect()
    }
}

impl App {
    /// Stores the inference spans of an OTLP trace export as interactions. Fails as a whole
    /// only when storage cannot take them (nothing of the failed part is acknowledged, and a
    /// retry stores nothing twice).
    pub async fn ingest_otlp(
        &self,
        principal: &Principal,
        request: ExportTraceServiceRequest,
    ) -> Result<OtlpOutcome, Error> {
        self.authorize(principal, "OtlpExport", INGESTERS).await?;
        let (app, metadata_only) = self
            .otlp
            .tokens
            .get(&principal.name)
            .cloned()
            .unwrap_or_default();
        let options = Options {
            user_attributes: self.otlp.user_attributes.clone(),
            app,
            metadata_only,
            max_field_bytes: self.limits.max_field_bytes,
        };
        // Reading a large export is CPU work: on the threads reserved for ingest.
        let mapped = self
            .ingest_workers
            .run(move || Ok(otlp::map_request(&request, &options)))
            .await?;
        let traces: Vec<String> = mapped
            .llm_spans
            .iter()
            .map(|span| span.trace_id.clone())
            .collect();
        let tools = self.otlp.remember(mapped.tools, traces.into_iter());

        let mut outcome = OtlpOutcome::default();
        let mut reasons = Vec::new();
        let mut items = Vec::new();
        for span in mapped.llm_spans {
            match span.content {
                Ok(mut content) => {
                    if let Some(tools) = tools.get(&span.trace_id) {
                        let max = self.limits.max_list_items;
                        content.plugins = tools.plugins.iter().take(max).cloned().collect();
                        content.accessed_resources =
                            tools.resources.iter().take(max).cloned().collect();
                    }
                    items.push(content);
                }
                Err(reason) => {
                    outcome.rejected_spans += 1;
                    reasons.push(reason);
                }
            }
        }
        while !items.is_empty() {
            let rest = items.split_off(items.len().min(self.limits.max_batch_items));
            let batch = std::mem::replace(&mut items, rest);
            let keys: Vec<String> = batch.iter().map(|item| item.client_key.clone()).collect();
            let outcomes = self
                .ingest(principal, batch.into_iter().map(Ok).collect())
                .await?;
            for (key, result) in keys.iter().zip(outcomes) {
                match result {
                    // A conflict is a span stored before (its trace's tools may have grown
                    // since): it is archived, immutable, and not refused.
                    IngestOutcome::Created(_)
                    | IngestOutcome::Duplicate(_)
                    | IngestOutcome::Conflict(_) => outcome.stored += 1,
                    IngestOutcome::Rejected(rejection) => {
                        outcome.rejected_spans += 1;
                        reasons.push(format!(
                            "span {key}: {} {}",
                            rejection.field, rejection.reason
                        ));
                    }
                }
            }
        }
        outcome.error_message = summary(&reasons);
        if outcome.rejected_spans > 0 {
            metrics::counter!("holdfast_otlp_spans_rejected_total")
                .increment(outcome.rejected_spans as u64);
        }
        Ok(outcome)
    }
}

/// OTLP's answer: a partial success only when some span was refused.
pub fn otlp_response(outcome: OtlpOutcome) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (outcome.rejected_spans > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: outcome.rejected_spans,
            error_message: outcome.error_message,
        }),
    }
}

/// OTLP exporters retry UNAVAILABLE; a full disk is a storage outage to them (they keep the
/// spans and retry), not a reason to drop the batch.
pub fn otlp_error(error: Error) -> Error {
    match error {
        Error::ResourceExhausted(reason) => Error::Unavailable(reason),
        other => other,
    }
}

/// The reasons, distinct ones first, within `MAX_ERROR_MESSAGE` bytes.
fn summary(reasons: &[String]) -> String {
    let mut message = String::new();
    for (shown, reason) in reasons.iter().enumerate() {
        let separator = if message.is_empty() { "" } else { "; " };
        if message.len() + separator.len() + reason.len() > MAX_ERROR_MESSAGE {
            message.push_str(&format!("{separator}and {} more", reasons.len() - shown));
            break;
        }
        message.push_str(separator);
        message.push_str(reason);
    }
    message
}
