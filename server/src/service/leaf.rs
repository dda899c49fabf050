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
        let (ids, dead) = fanout::plan_of(&request.splits, &request.dead)
            .map_err(|reason| Error::invalid("splits", reason))?;
        let mailboxes = mailboxes_of(&request.mailboxes)?;
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

    async fn matching_ids(
        &self,
        request: Request<pb::LeafIdsRequest>,
    ) -> Result<Response<pb::LeafIdsResponse>, Status> {
        let request = request.into_inner();
        let (splits, dead) = fanout::plan_of(&request.splits, &request.dead)
            .map_err(|reason| Error::invalid("splits", reason))?;
        let mailboxes = mailboxes_of(&request.mailboxes)?;
        let after = match request.after.as_str() {
            "" => None,
            text => Some(
                text.parse()
                    .map_err(|reason: String| Error::invalid("after", reason))?,
            ),
        };
        if request.among.len() > MAX_ID_PAGE as usize {
            return Err(
                Error::invalid("among", format!("at most {MAX_ID_PAGE} ids at once")).into(),
            );
        }
        let among = match request.among.is_empty() {
            true => None,
            false => Some(
                request
                    .among
                    .iter()
                    .map(|id| id.parse())
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(|reason| Error::invalid("among", reason))?,
            ),
        };
        if request.limit > MAX_ID_PAGE {
            return Err(Error::invalid("limit", format!("must be at most {MAX_ID_PAGE}")).into());
        }
        let query = fanout::QueryText {
            text: request.query,
            case_hold: request
                .case_hold
                .then_some((request.created_from_us, request.created_to_us)),
        };
        let page = self
            .app
            .leaf_ids(
                splits,
                dead,
                &query,
                mailboxes,
                among,
                after,
                request.limit as usize,
                request.count,
            )
            .await?;
        Ok(Response::new(pb::LeafIdsResponse {
            ids: page.ids.iter().map(ToString::to_string).collect(),
            count: page.count,
            present: page.present.iter().map(ToString::to_string).collect(),
        }))
    }
}

/// Most ids a leaf is asked for at once: an export's or a purge's page.
const MAX_ID_PAGE: u32 = crate::app::export::ID_PAGE as u32;

fn mailboxes_of(mailboxes: &[String]) -> Result<Vec<MailboxId>, Error> {
    mailboxes
        .iter()
        .map(|mailbox| MailboxId::parse(mailbox))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| Error::invalid("mailboxes", reason))
}
