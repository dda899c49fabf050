//! OTLP/gRPC `opentelemetry.proto.collector.trace.v1.TraceService/Export` on the gRPC port:
//! GenAI spans stored as interactions (`App::ingest_otlp`).

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

use super::authenticate;
use crate::app::otlp::{otlp_error, otlp_response};
use crate::app::App;

pub struct OtlpTraceApi {
    app: Arc<App>,
}

impl OtlpTraceApi {
    pub fn new(app: Arc<App>) -> Self {
        OtlpTraceApi { app }
    }
}

#[tonic::async_trait]
impl TraceService for OtlpTraceApi {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let principal = authenticate(&self.app, &request, "OtlpExport")?;
        let outcome = self
            .app
            .ingest_otlp(&principal, request.into_inner())
            .await
            .map_err(otlp_error)?;
        Ok(Response::new(otlp_response(outcome)))
    }
}
