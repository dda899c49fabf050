//! Ingest over the HTTP/JSON front door, for comparing it with gRPC in the same run: the same
//! items, encoded as the JSON `POST /api/v1/interactions` takes.

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use holdfast_client::pb;

#[derive(Clone)]
pub struct HttpIngest {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    authorization: String,
}

impl HttpIngest {
    pub fn new(base: &str, token: &str) -> anyhow::Result<HttpIngest> {
        let uri = format!("{}/api/v1/interactions", base.trim_end_matches('/'))
            .parse()
            .context("--http-addr is not a URL")?;
        Ok(HttpIngest {
            client: Client::builder(TokioExecutor::new()).build_http(),
            uri,
            authorization: format!("Bearer {token}"),
        })
    }

    /// Sends one batch; the answer in gRPC's form, for the common bookkeeping.
    pub async fn ingest(
        &self,
        items: &[pb::InteractionInput],
    ) -> anyhow::Result<pb::IngestResponse> {
        let body = json!({ "interactions": items.iter().map(to_json).collect::<Vec<_>>() });
        let request = hyper::Request::post(self.uri.clone())
            .header("authorization", &self.authorization)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
        let response = self.client.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        }
        let answer: Value = serde_json::from_slice(&bytes)?;
        let results = answer["results"]
            .as_array()
            .context("no results in the answer")?
            .iter()
            .map(|result| pb::IngestResult {
                status: match result["status"].as_str() {
                    Some("created") => pb::IngestStatus::Created as i32,
                    Some("duplicate") => pb::IngestStatus::Duplicate as i32,
                    _ => pb::IngestStatus::Rejected as i32,
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

fn to_json(item: &pb::InteractionInput) -> Value {
    let created_at = item
        .created_at
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
        .map(|t| t.to_rfc3339());
    let model = item.model.clone().unwrap_or_default();
    json!({
        "client_key": item.client_key,
        "mailbox_id": item.mailbox_id,
        "thread_id": item.thread_id,
        "app": item.app,
        "created_at": created_at,
        "prompt": item.prompt,
        "response": item.response,
        "model": { "provider": model.provider, "name": model.name, "version": model.version },
    })
}
