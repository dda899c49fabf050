//! OTLP trace ingest: OpenTelemetry GenAI spans, read by `otlp.rs`, stored through
//! `App::ingest` like any batch (validation, idempotency by `client_key` =
//! `trace_id:span_id`, durable before the answer). Both front doors (OTLP/gRPC and
//! OTLP/HTTP) call `App::ingest_otlp`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use super::ingest::{IngestOutcome, CONFLICT_REASON, INGESTERS};
use super::App;
use crate::auth::Principal;
use crate::config::{ConfigToken, OtlpConfig};
use crate::error::Error;
use crate::otlp::{self, Options, TraceTools};

/// Traces whose tools are remembered (each within 16 KiB), and for how long.
const REMEMBERED_TRACES: usize = 2_000;
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
    tools: Mutex<Remembered>,
}

/// Tools by (principal, trace), forgotten first in first out past `REMEMBERED_TRACES`, and
/// after `REMEMBERED_FOR`.
#[derive(Debug, Default)]
struct Remembered {
    by_trace: HashMap<String, (Instant, TraceTools)>,
    order: VecDeque<String>,
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

    /// Remembers this request's tools (a principal's traces are its own: another caller
    /// cannot add tools to them) and answers what is known of each trace in `wanted`.
    fn remember(
        &self,
        principal: &str,
        seen: HashMap<String, TraceTools>,
        wanted: HashSet<String>,
    ) -> HashMap<String, TraceTools> {
        let key = |trace: &str| format!("{principal}\u{0}{trace}");
        let now = Instant::now();
        let mut remembered = self.tools.lock().unwrap_or_else(|e| e.into_inner());
        for (trace, tools) in seen {
            let key = key(&trace);
            if !remembered.by_trace.contains_key(&key) {
                remembered.order.push_back(key.clone());
                while remembered.order.len() > REMEMBERED_TRACES {
                    if let Some(oldest) = remembered.order.pop_front() {
                        remembered.by_trace.remove(&oldest);
                    }
                }
            }
            let entry = remembered
                .by_trace
                .entry(key)
                .or_insert_with(|| (now, TraceTools::default()));
            entry.0 = now;
            entry.1.merge(&tools);
        }
        wanted
            .into_iter()
            .filter_map(|trace| {
                let (at, tools) = remembered.by_trace.get(&key(&trace))?;
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
            max_spans: self.limits.max_batch_items.saturating_mul(10),
        };
        // Reading a large export is CPU work: on the threads reserved for ingest.
        let mapped = self
            .ingest_workers
            .run(move || {
                otlp::map_request(&request, &options)
                    .map_err(|reason| Error::invalid("body", reason))
            })
            .await?;
        let wanted: HashSet<String> = mapped
            .llm_spans
            .iter()
            .map(|span| span.trace_id.clone())
            .collect();
        let tools = self.otlp.remember(&principal.name, mapped.tools, wanted);

        let mut outcome = OtlpOutcome::default();
        let mut reasons = Reasons::default();
        let mut spans = Vec::new();
        for span in mapped.llm_spans {
            match span.content {
                Ok(content) => spans.push((content, span.trace_id, span.end)),
                Err(reason) => {
                    outcome.rejected_spans += 1;
                    reasons.push(reason);
                }
            }
        }
        let max_list = self.limits.max_list_items;
        let batch_size = self.limits.max_batch_items.max(1);
        let mut spans = spans.into_iter().peekable();
        while spans.peek().is_some() {
            // Tools are attached per batch, so at most one batch of copies exists at once.
            let batch: Vec<_> = spans
                .by_ref()
                .take(batch_size)
                .map(|(mut content, trace, end)| {
                    if let Some(tools) = tools.get(&trace) {
                        (content.plugins, content.accessed_resources) =
                            tools.ended_by(end, max_list);
                    }
                    content
                })
                .collect();
            let keys: Vec<String> = batch.iter().map(|item| item.client_key.clone()).collect();
            let outcomes = self
                .ingest(principal, batch.into_iter().map(Ok).collect())
                .await?;
            for (key, result) in keys.iter().zip(outcomes) {
                match result {
                    IngestOutcome::Created(_) | IngestOutcome::Duplicate(_) => outcome.stored += 1,
                    // The same span id stored before with other content: as for Ingest,
                    // refused (stored interactions are immutable), and said.
                    IngestOutcome::Conflict(_) => {
                        outcome.rejected_spans += 1;
                        reasons.push(format!("span {key}: {CONFLICT_REASON}"));
                    }
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
        outcome.error_message = reasons.message();
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

/// The reasons for refused spans, kept within `MAX_ERROR_MESSAGE` bytes (then only counted).
#[derive(Default)]
struct Reasons {
    message: String,
    more: usize,
}

impl Reasons {
    fn push(&mut self, reason: String) {
        let separator = if self.message.is_empty() { "" } else { "; " };
        if self.more > 0 || self.message.len() + separator.len() + reason.len() > MAX_ERROR_MESSAGE
        {
            self.more += 1;
            return;
        }
        self.message.push_str(separator);
        self.message.push_str(&reason);
    }

    fn message(self) -> String {
        match self.more {
            0 => self.message,
            more => format!("{}; and {more} more", self.message),
        }
    }
}
