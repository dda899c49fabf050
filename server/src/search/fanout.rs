//! Searches fanned out over the nodes of a cluster (`search = "splits"`). The node a search
//! reaches (the root) reads the splits of the custodians' partitions from the catalog
//! (`SplitSearch::plan`), gives each partition's splits to the node rendezvous hashing ranks
//! first for that partition (the node that indexes the partition, so its splits are in that
//! node's cache already), sends each node one leaf search (`holdfast.cluster.v1`), searches
//! its own share meanwhile, and merges the answers: the best hits, exact totals, counts.
//!
//! A node that does not answer in time, or answers an error, costs the search nothing but
//! time: the root searches that node's splits itself (every split is in the bucket). The
//! partition's splits are searched together, as one view, on whichever node: scores and the
//! order of ties do not depend on which node searched them, so the pages of a pinned split
//! set follow one order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_proto::cluster::v1 as pb;
use pb::leaf_service_client::LeafServiceClient;
use tonic::transport::{Channel, Endpoint};

use super::index::IndexError;
use super::kql;
use super::searcher::{merge, Hit, Results, Sort};
use super::splits::{rendezvous_owner, Plan, SplitSearch};
use crate::domain::{InteractionId, MailboxId};

/// The metadata a node presents the cluster's node key in.
pub const NODE_KEY_HEADER: &str = "x-holdfast-node-key";
/// What the node key is derived for (`PageTokens::derive_secret`).
pub const NODE_KEY_PURPOSE: &str = "holdfast cluster node key v1";
/// How long the root waits for a leaf before searching its splits itself.
const LEAF_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the list of live nodes is reused.
const NODES_REFRESH: Duration = Duration::from_secs(2);
/// The largest leaf answer read (hits are ~100 bytes each).
const MAX_LEAF_ANSWER: usize = 256 << 20;

type Nodes = Arc<Vec<(String, Option<String>)>>;
/// (partition, item, sequence).
type Tombstones = Vec<(i16, InteractionId, u64)>;

/// This node's side of fanned-out searches: the root's planning and merging, and the key
/// its leaf service checks.
pub struct FanOut {
    search: Arc<SplitSearch>,
    holder: String,
    key: String,
    runtime: tokio::runtime::Handle,
    clients: Mutex<HashMap<String, LeafServiceClient<Channel>>>,
    nodes: Mutex<Option<(Instant, Nodes)>>,
}

impl FanOut {
    /// `holder`: this node's lease holder; `key`: the cluster's node key.
    pub fn new(
        search: Arc<SplitSearch>,
        holder: &str,
        key: String,
        runtime: tokio::runtime::Handle,
    ) -> FanOut {
        FanOut {
            search,
            holder: holder.to_string(),
            key,
            runtime,
            clients: Mutex::new(HashMap::new()),
            nodes: Mutex::new(None),
        }
    }

    pub fn splits(&self) -> &Arc<SplitSearch> {
        &self.search
    }

    /// Whether `presented` is the cluster's node key (compared in constant time).
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let key = self.key.as_bytes();
        presented.len() == key.len()
            && presented
                .iter()
                .zip(key)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }

    fn nodes(&self) -> Result<Nodes, IndexError> {
        if let Some((at, nodes)) = self
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if at.elapsed() < NODES_REFRESH {
                return Ok(Arc::clone(nodes));
            }
        }
        // Not under the lock: searches never queue behind one slow query.
        let nodes = Arc::new(self.search.store().live_search_nodes()?);
        *self.nodes.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), Arc::clone(&nodes)));
        Ok(nodes)
    }

    fn client(&self, address: &str) -> Result<LeafServiceClient<Channel>, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|error| error.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        let client = LeafServiceClient::new(channel).max_decoding_message_size(MAX_LEAF_ANSWER);
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// Page `[offset, offset + limit)` of `query` over `mailboxes` in `splits` (a plan),
    /// from the leaves. Runs on a blocking thread (it waits for the leaves there).
    #[allow(clippy::too_many_arguments)]
    pub fn search(
        &self,
        plan: &Plan,
        query_text: &str,
        query: &kql::Query,
        mailboxes: &[MailboxId],
        sort: Sort,
        offset: usize,
        limit: usize,
    ) -> Result<Results, IndexError> {
        let top = offset.saturating_add(limit);
        let nodes = self.nodes()?;
        // Nodes that can be asked: those that said where; this node in any case.
        let mut live: Vec<String> = nodes
            .iter()
            .filter(|(holder, address)| address.is_some() || *holder == self.holder)
            .map(|(holder, _)| holder.clone())
            .collect();
        if !live.contains(&self.holder) {
            live.push(self.holder.clone());
        }
        let mut owned: BTreeMap<String, HashSet<i16>> = BTreeMap::new();
        for split in &plan.splits {
            let owner = rendezvous_owner(split.partition, &live).unwrap_or(&self.holder);
            owned
                .entry(owner.to_string())
                .or_default()
                .insert(split.partition);
        }
        let mut groups: BTreeMap<String, Plan> = owned
            .into_iter()
            .map(|(owner, partitions)| (owner, plan.of_partitions(&partitions)))
            .collect();
        let local = groups.remove(&self.holder);
        let mut pending = Vec::new();
        for (holder, share) in groups {
            let address = nodes
                .iter()
                .find(|(node, _)| *node == holder)
                .and_then(|(_, address)| address.clone())
                .unwrap_or_default();
            let request = leaf_request(&share, query_text, mailboxes, sort, top);
            let task = match self.client(&address) {
                Ok(client) => Some(self.runtime.spawn(ask(client, self.key.clone(), request))),
                Err(error) => {
                    tracing::warn!(node = %holder, %error, "a node's address is not valid");
                    None
                }
            };
            pending.push((holder, share, task));
        }
        let mut parts = Vec::with_capacity(pending.len() + 1);
        if let Some(local) = local {
            parts.push(self.search.leaf(&local, query, mailboxes, sort, top)?);
        }
        for (holder, share, task) in pending {
            let answer = match task {
                Some(task) => self
                    .runtime
                    .block_on(task)
                    .map_err(|error| error.to_string())
                    .and_then(|answer| answer),
                None => Err("no address".to_string()),
            };
            match answer.and_then(results_of) {
                Ok(results) => {
                    metrics::counter!("holdfast_split_leaf_answers_total", "from" => "node")
                        .increment(1);
                    parts.push(results);
                }
                Err(error) => {
                    tracing::warn!(
                        node = %holder,
                        %error,
                        "a leaf search failed; searching its splits here"
                    );
                    metrics::counter!("holdfast_split_leaf_answers_total", "from" => "fallback")
                        .increment(1);
                    parts.push(self.search.leaf(&share, query, mailboxes, sort, top)?);
                }
            }
        }
        Ok(merge(parts, sort, offset, limit))
    }
}

async fn ask(
    mut client: LeafServiceClient<Channel>,
    key: String,
    request: pb::LeafSearchRequest,
) -> Result<pb::LeafSearchResponse, String> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(LEAF_TIMEOUT);
    let value = key
        .parse()
        .map_err(|_| "the node key is not valid metadata".to_string())?;
    request.metadata_mut().insert(NODE_KEY_HEADER, value);
    match tokio::time::timeout(LEAF_TIMEOUT, client.search_splits(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        // The code only: a refusal's message may quote the query.
        Ok(Err(status)) => Err(format!("the node answered {:?}", status.code())),
        Err(_) => Err(format!("no answer in {LEAF_TIMEOUT:?}")),
    }
}

fn sort_to_wire(sort: Sort) -> pb::LeafSort {
    match sort {
        Sort::Relevance => pb::LeafSort::Relevance,
        Sort::Newest => pb::LeafSort::Newest,
        Sort::Oldest => pb::LeafSort::Oldest,
    }
}

pub fn sort_from_wire(sort: i32) -> Option<Sort> {
    match pb::LeafSort::try_from(sort).ok()? {
        pb::LeafSort::Relevance => Some(Sort::Relevance),
        pb::LeafSort::Newest => Some(Sort::Newest),
        pb::LeafSort::Oldest => Some(Sort::Oldest),
    }
}

fn leaf_request(
    plan: &Plan,
    query_text: &str,
    mailboxes: &[MailboxId],
    sort: Sort,
    top: usize,
) -> pb::LeafSearchRequest {
    pb::LeafSearchRequest {
        query: query_text.to_string(),
        mailboxes: mailboxes.iter().map(|m| m.as_str().to_string()).collect(),
        sort: sort_to_wire(sort) as i32,
        top: u32::try_from(top).unwrap_or(u32::MAX),
        splits: plan
            .splits
            .iter()
            .map(|split| pb::SplitRef {
                id: split.id.clone(),
            })
            .collect(),
        dead: plan
            .dead
            .iter()
            .map(|(partition, id, sequence)| pb::Tombstone {
                partition: i32::from(*partition),
                id: id.to_string(),
                sequence: *sequence,
            })
            .collect(),
    }
}

/// The split ids and the tombstones a leaf request names.
pub fn plan_of(request: &pb::LeafSearchRequest) -> Result<(Vec<String>, Tombstones), String> {
    let ids = request
        .splits
        .iter()
        .map(|split| split.id.clone())
        .collect();
    let dead = request
        .dead
        .iter()
        .map(|tombstone| {
            let partition = i16::try_from(tombstone.partition)
                .ok()
                .filter(|p| (0..crate::domain::SEARCH_PARTITIONS as i16).contains(p))
                .ok_or_else(|| "a tombstone has no valid partition".to_string())?;
            let id = tombstone
                .id
                .parse()
                .map_err(|_| "a tombstone has no valid item id".to_string())?;
            Ok((partition, id, tombstone.sequence))
        })
        .collect::<Result<_, String>>()?;
    Ok((ids, dead))
}

/// A leaf's results on the wire.
pub fn to_wire(results: Results) -> pb::LeafSearchResponse {
    pb::LeafSearchResponse {
        total: results.total,
        hits: results
            .hits
            .into_iter()
            .map(|hit| pb::LeafHit {
                id: hit.id.to_string(),
                score: hit.score,
                created_us: hit.created_us,
                tie_split: hit.tie.0,
                tie_place: hit.tie.1,
            })
            .collect(),
        by_mailbox: results.by_mailbox.into_iter().collect(),
        by_app: results.by_app.into_iter().collect(),
        by_location: results.by_location.into_iter().collect(),
    }
}

fn results_of(answer: pb::LeafSearchResponse) -> Result<Results, String> {
    let hits = answer
        .hits
        .into_iter()
        .map(|hit| {
            Ok(Hit {
                id: hit
                    .id
                    .parse()
                    .map_err(|_| "a leaf answered a hit without a valid id".to_string())?,
                score: hit.score,
                created_us: hit.created_us,
                tie: (hit.tie_split, hit.tie_place),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Results {
        total: answer.total,
        hits,
        by_mailbox: answer.by_mailbox.into_iter().collect(),
        by_app: answer.by_app.into_iter().collect(),
        by_location: answer.by_location.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(partition: i32, id: &str) -> pb::LeafSearchRequest {
        pb::LeafSearchRequest {
            splits: vec![pb::SplitRef {
                id: "01m8yfexwa2w4a0bczvp0w4wxz".into(),
            }],
            dead: vec![pb::Tombstone {
                partition,
                id: id.into(),
                sequence: 7,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_leaf_request_with_a_bad_tombstone_or_sort_is_refused() {
        let item = InteractionId(ulid::Ulid::new()).to_string();
        let (ids, dead) = plan_of(&request(3, &item)).unwrap();
        assert_eq!(ids, ["01m8yfexwa2w4a0bczvp0w4wxz"]);
        assert_eq!(dead, [(3, item.parse().unwrap(), 7)]);
        for partition in [-1, SEARCH_PARTITIONS_WIRE, 1 << 20] {
            let refused = plan_of(&request(partition, &item)).unwrap_err();
            assert!(refused.contains("partition"), "{refused}");
        }
        let refused = plan_of(&request(3, "not-an-id")).unwrap_err();
        assert!(refused.contains("item id"), "{refused}");
        assert_eq!(sort_from_wire(1), Some(Sort::Newest));
        assert_eq!(sort_from_wire(7), None);
    }

    const SEARCH_PARTITIONS_WIRE: i32 = crate::domain::SEARCH_PARTITIONS as i32;
}
