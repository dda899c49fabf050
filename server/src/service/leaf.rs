//! `holdfast.cluster.v1.LeafService`: leaf searches asked for by the other nodes of a cluster
//! searching splits (`search::fanout`). The door (`gate`) admits only calls carrying the
//! cluster's node key; this handler decodes, calls `App::leaf_search` and encodes.

use std::sync::Arc;

use holdfast_proto::cluster::v1 as pb;
use holdfast_proto::cluster::v1::leaf_service_server::LeafService;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::domain::MailboxId;
use crate::error::Error;
use crate::search::fanout;

pub struct LeafApi {
    app: Arc<App>,
}

impl LeafApi {
    pub fn new(app: Arc<App>) -> Self {
        LeafApi { app }
    }
}

/// Most hits a leaf is asked for: the deepest page a root asks for.
const MAX_TOP: u32 = crate::app::search::MAX_FANNED_OUT_DEPTH as u32;

#[tonic::async_trait]
impl LeafService for LeafApi {
    async fn search_splits(
        &self,
        request: Request<pb::LeafSearchRequest>,
    ) -> Result<Response<pb::LeafSearchResponse>, Status> {
        let request = request.into_inner();
        let (ids, dead) =
            fanout::plan_of(&request).map_err(|reason| Error::invalid("splits", reason))?;
        let mailboxes = request
            .mailboxes
            .iter()
            .map(|mailbox| MailboxId::parse(mailbox))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| Error::invalid("mailboxes", reason))?;
        let sort = fanout::sort_from_wire(request.sort)
            .ok_or_else(|| Error::invalid("sort", "unknown"))?;
        if request.top > MAX_TOP {
            return Err(Error::invalid("top", format!("must be at most {MAX_TOP}")).into());
        }
        let results = self
            .app
            .leaf_search(
                ids,
                dead,
                &request.query,
                mailboxes,
                sort,
                request.top as usize,
            )
            .await?;
        Ok(Response::new(fanout::to_wire(results)))
    }
}
