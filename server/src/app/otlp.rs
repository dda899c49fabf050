//! OTLP trace ingest: OpenTelemetry GenAI spans, read by `otlp.rs`, stored through
//! `App::ingest` like any batch (validation, idempotency by `client_key` =
//! `trace_id:span_id`, durable before the answer). Both front doors (OTLP/gRPC and
//! OTLP/HTTP) call `App::ingest_otlp`.
//!
//! Tool, retrieval and MCP spans are not interactions: the tools and resources they name are
//! attached to their trace's interactions as an annex (`domain::Annex`), outside the content
//! and its digest, so that the order in which spans arrive changes neither what is stored nor
//! what a re-sent span is compared with. What is known of each trace is kept in the store for
//! `TRACE_MEMORY`, so tools that arrive in a later export, after a restart, still attach.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde::{Deserialize, Serialize};

use super::ingest::{IngestOutcome, CONFLICT_REASON, INGESTERS};
use super::{blocking, now, App};
use crate::auth::Principal;
use crate::config::{ConfigToken, OtlpConfig};
use crate::domain::{AccessedResource, Annex, InteractionId, Plugin};
use crate::error::Error;
use crate::otlp::{self, Options, TraceTools};
use crate::store::TraceStateWrite;

/// How long what is known of a trace (its stored inference spans and the tools its other
/// spans named) is kept after its last span arrived: tool spans that arrive later than that
/// are not attached.
const TRACE_MEMORY: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// The most inference spans remembered per trace (a longer trace's later ones get no tools
/// that arrive after them).
const MAX_TRACE_INFERENCES: usize = 1_000;

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
    /// Interactions whose annex grew: tools attached.
    pub annexed: usize,
}

/// The OTLP settings of the server and of each configured token.
#[derive(Debug, Default)]
pub struct OtlpSettings {
    user_attributes: Vec<String>,
    /// By principal name: the app to record, and whether spans without content are kept.
    tokens: HashMap<String, (Option<String>, bool)>,
    /// Held, per principal, across each read-modify-write of its trace states (on the
    /// blocking thread that does it, so that a cancelled call cannot let two overlap).
    traces: std::sync::Mutex<HashMap<String, Arc<std::sync::Mutex<()>>>>,
}

impl OtlpSettings {
    /// The lock of a principal's trace states (principals are the configured and stored
    /// tokens: few).
    fn lock_of(&self, principal: &str) -> Arc<std::sync::Mutex<()>> {
        let mut locks = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(principal.to_string()).or_default().clone()
    }

    pub fn new(config: &OtlpConfig, tokens: &[ConfigToken]) -> OtlpSettings {
        OtlpSettings {
            user_attributes: config.user_attributes.clone(),
            tokens: tokens
                .iter()
                .map(|t| (t.name.clone(), (t.otlp_app.clone(), t.otlp_metadata_only)))
                .collect(),
            traces: std::sync::Mutex::default(),
        }
    }
}

/// What is known of one trace of one principal (a principal's traces are its own: another
/// caller cannot attach tools to them), kept in the store for `TRACE_MEMORY`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TraceState {
    /// Its stored inference spans: the interaction, and when the span ended.
    inferences: Vec<(InteractionId, u64)>,
    /// The tools and resources its other spans named, each with when its span ended.
    plugins: Vec<(u64, Plugin)>,
    resources: Vec<(u64, AccessedResource)>,
}

/// The store key of a principal's trace: the principal's length, the principal, the trace.
fn trace_key(principal: &str, trace: &str) -> Vec<u8> {
    let length = u16::try_from(principal.len()).unwrap_or(u16::MAX);
    [
        &length.to_be_bytes()[..],
        principal.as_bytes(),
        trace.as_bytes(),
    ]
    .concat()
}

/// Attaching tools to the interactions of the traces an export touched: the trace states
/// merged with what the export brought, and what each interaction gains. An inference gets
/// the tools and resources of its trace's spans that ended by the time it ended (what it can
/// have used), whichever export brought either.
fn attach(
    known: Option<TraceState>,
    stored: &[(InteractionId, u64)],
    tools: Option<&TraceTools>,
    principal: &str,
    max: usize,
    annexes: &mut Vec<(InteractionId, Annex)>,
) -> TraceState {
    let known = known.unwrap_or_default();
    let before = TraceTools::from_entries(known.plugins, known.resources);
    let mut all = before.clone();
    if let Some(tools) = tools {
        all.merge(tools);
    }
    let new_tools = all.since(&before);
    let mut inferences = known.inferences;
    let mut annex = |id: InteractionId, tools: &TraceTools, end: u64| {
        let (plugins, accessed_resources) = tools.ended_by(end, max);
        if !plugins.is_empty() || !accessed_resources.is_empty() {
            annexes.push((
                id,
                Annex {
                    plugins,
                    accessed_resources,
                    updated_at: DateTime::<Utc>::UNIX_EPOCH,
                    principals: vec![principal.to_string()],
                },
            ));
        }
    };
    // Known inferences gain only the tools new to the trace (they have the others).
    if !new_tools.is_empty() {
        for (id, end) in &inferences {
            annex(*id, &new_tools, *end);
        }
    }
    for (id, end) in stored {
        if inferences.iter().any(|(known, _)| known == id) {
            // A re-sent span: what it gained is attached already (or is being, above).
            continue;
        }
        annex(*id, &all, *end);
        if inferences.len() < MAX_TRACE_INFERENCES {
            inferences.push((*id, *end));
        }
    }
    TraceState {
        inferences,
        plugins: all.plugins,
        resources: all.resources,
    }
}

impl App {
    /// Stores the inference spans of an OTLP trace export as interactions, and attaches the
    /// tools its other spans name (see `attach`). Fails as a whole only when storage cannot
    /// take them (nothing of the failed part is acknowledged, and a retry stores nothing
    /// twice).
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
        // Stored inference spans by trace: the interaction, and when the span ended.
        let mut stored: HashMap<String, Vec<(InteractionId, u64)>> = HashMap::new();
        let batch_size = self.limits.max_batch_items.max(1);
        let mut spans = spans.into_iter().peekable();
        while spans.peek().is_some() {
            let mut traces = Vec::with_capacity(batch_size);
            let batch: Vec<_> = spans
                .by_ref()
                .take(batch_size)
                .map(|(content, trace, end)| {
                    traces.push((content.client_key.clone(), trace, end));
                    Ok(content)
                })
                .collect();
            let outcomes = self.ingest(principal, batch).await?;
            for ((key, trace, end), result) in traces.into_iter().zip(outcomes) {
                match result {
                    IngestOutcome::Created(id) | IngestOutcome::Duplicate(id) => {
                        outcome.stored += 1;
                        stored.entry(trace).or_default().push((id, end));
                    }
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
        outcome.annexed = self
            .remember_traces(&principal.name, stored, mapped.tools)
            .await?;
        outcome.error_message = reasons.message();
        if outcome.rejected_spans > 0 {
            metrics::counter!("holdfast_otlp_spans_rejected_total")
                .increment(outcome.rejected_spans as u64);
        }
        if outcome.annexed > 0 {
            metrics::counter!("holdfast_otlp_annexed_total").increment(outcome.annexed as u64);
        }
        Ok(outcome)
    }

    /// Records what an export brought to each trace it touched and attaches tools to the
    /// interactions that gain some, in one durable write; answers how many gained.
    async fn remember_traces(
        &self,
        principal: &str,
        stored: HashMap<String, Vec<(InteractionId, u64)>>,
        tools: HashMap<String, TraceTools>,
    ) -> Result<usize, Error> {
        let traces: HashSet<&String> = stored.keys().chain(tools.keys()).collect();
        if traces.is_empty() {
            return Ok(0);
        }
        let mut traces: Vec<String> = traces.into_iter().cloned().collect();
        traces.sort_unstable();
        let max = self.limits.max_list_items;
        let principal = principal.to_string();
        let store = self.store.clone();
        let lock = self.otlp.lock_of(&principal);
        blocking(move || {
            let _writing = lock.lock().unwrap_or_else(|e| e.into_inner());
            let now = now();
            let keys: Vec<Vec<u8>> = traces.iter().map(|t| trace_key(&principal, t)).collect();
            let known = store.get_trace_states(&keys, now)?;
            let mut annexes = Vec::new();
            let mut states = Vec::with_capacity(keys.len());
            for ((trace, key), known) in traces.iter().zip(keys).zip(known) {
                // A damaged state is as good as none: its trace's earlier spans get no tools.
                let known = known.and_then(|bytes| serde_json::from_slice(&bytes).ok());
                let state = attach(
                    known,
                    stored.get(trace).map_or(&[], Vec::as_slice),
                    tools.get(trace),
                    &principal,
                    max,
                    &mut annexes,
                );
                states.push((key, serde_json::to_vec(&state).expect("states serialise")));
            }
            let grown = store.write_trace_states(&TraceStateWrite {
                states,
                forget_at: now + TRACE_MEMORY,
                annexes,
                max_entries: max,
                now,
            })?;
            Ok(grown.len())
        })
        .await
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
        Error::Store(crate::store::StoreError::NoSpace(reason)) => Error::Unavailable(format!(
            "no space left on the data volume; nothing was written: {reason}"
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(entries: &[(u64, &str)]) -> TraceTools {
        TraceTools::from_entries(
            entries
                .iter()
                .map(|(ended, name)| {
                    (
                        *ended,
                        Plugin {
                            name: name.to_string(),
                            ..Plugin::default()
                        },
                    )
                })
                .collect(),
            Vec::new(),
        )
    }

    fn names(annexes: &[(InteractionId, Annex)]) -> Vec<(InteractionId, Vec<String>)> {
        annexes
            .iter()
            .map(|(id, annex)| (*id, annex.plugins.iter().map(|p| p.name.clone()).collect()))
            .collect()
    }

    /// Whichever export brings a tool span or an inference span, each inference ends up with
    /// the tools that ended by the time it ended; a re-sent inference gains nothing again.
    #[test]
    fn tools_attach_whatever_order_the_spans_arrive_in() {
        let (a, b) = (
            InteractionId(ulid::Ulid::new()),
            InteractionId(ulid::Ulid::new()),
        );
        let mut annexes = Vec::new();
        // Inference a (ended at 100) arrives with a tool that ended at 50.
        let state = attach(
            None,
            &[(a, 100)],
            Some(&tools(&[(50, "early")])),
            "p",
            10,
            &mut annexes,
        );
        assert_eq!(names(&annexes), vec![(a, vec!["early".to_string()])]);
        // Later: tools that ended at 150 and 250, then inference b (ended at 300).
        annexes.clear();
        let state = attach(
            Some(state),
            &[],
            Some(&tools(&[(50, "early"), (150, "middle"), (250, "late")])),
            "p",
            10,
            &mut annexes,
        );
        assert!(annexes.is_empty(), "a ended before both: {annexes:?}");
        let state = attach(Some(state), &[(b, 300)], None, "p", 10, &mut annexes);
        assert_eq!(
            names(&annexes),
            vec![(b, vec!["early".into(), "middle".into(), "late".into()])]
        );
        // A tool that ended at 90 arrives last: a and b both gain it; a re-sent a gains
        // nothing more.
        annexes.clear();
        let state = attach(
            Some(state),
            &[(a, 100)],
            Some(&tools(&[(90, "x")])),
            "p",
            10,
            &mut annexes,
        );
        assert_eq!(
            names(&annexes),
            vec![(a, vec!["x".to_string()]), (b, vec!["x".to_string()])]
        );
        assert_eq!(state.inferences, vec![(a, 100), (b, 300)]);
        // A second call of a known tool that ended earlier: it counts from then.
        annexes.clear();
        let state = attach(
            Some(state),
            &[],
            Some(&tools(&[(95, "late")])),
            "p",
            10,
            &mut annexes,
        );
        assert_eq!(
            names(&annexes),
            vec![(a, vec!["late".to_string()]), (b, vec!["late".to_string()])]
        );
        // The state survives its stored form.
        let stored: TraceState =
            serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(stored.plugins.len(), 4);
    }

    #[test]
    fn one_principal_cannot_name_another_principals_trace() {
        assert_ne!(trace_key("ab", "c"), trace_key("a", "bc"));
        assert_ne!(trace_key("backend", "t1"), trace_key("other", "t1"));
    }
}
