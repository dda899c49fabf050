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
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::index::IndexError;
use super::kql;
use super::searcher::{merge, Hit, Results, Sort};
use super::splits::{rendezvous_owner, IdPage, Plan, SplitSearch};
use crate::domain::{InteractionId, MailboxId};

/// The metadata a node presents the cluster's node key in.
pub const NODE_KEY_HEADER: &str = "x-holdfast-node-key";
/// What the node key is derived for (`PageTokens::derive_secret`).
pub const NODE_KEY_PURPOSE: &str = "holdfast cluster node key v1";
/// How long the root waits for a leaf before searching its splits itself.
pub const LEAF_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the list of live nodes is reused.
const NODES_REFRESH: Duration = Duration::from_secs(2);
/// Most ids a case hold is evaluated for in one leaf call.
const AMONG_AT_ONCE: usize = 4_096;
/// How long the sweeper waits for a leaf before reading its splits itself: it renews its
/// lease between chunks, so a node that hangs must not hold a chunk long.
const SWEEP_LEAF_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest leaf answer read (hits are ~100 bytes each).
const MAX_LEAF_ANSWER: usize = 256 << 20;

type Nodes = Arc<Vec<(String, Option<String>)>>;

/// A query as the leaves are sent it (each parses it again): its KQL text, and for a case
/// hold the hold's created range (microseconds; either end open).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryText {
    pub text: String,
    pub case_hold: Option<(Option<i64>, Option<i64>)>,
}
/// (partition, item, sequence).
type Tombstones = Vec<(i16, InteractionId, u64)>;

/// This node's side of fanned-out searches: the root's planning and merging, and the key
/// its leaf service checks.
pub struct FanOut {
    search: Arc<SplitSearch>,
    holder: String,
    key: String,
    tls: Option<LeafTls>,
    /// Whether nodes registered without TLS may be called (not by a node with TLS).
    plaintext: bool,
    runtime: tokio::runtime::Handle,
    clients: Mutex<HashMap<String, LeafServiceClient<Channel>>>,
    nodes: Mutex<Option<(Instant, Nodes)>>,
}

/// How this node reaches nodes registered at `https://` addresses.
#[derive(Clone)]
pub struct LeafTls {
    /// PEM CA bundle the other nodes' server certificates are checked against.
    pub ca: Certificate,
    /// This node's certificate and key, presented when a node asks for a client certificate.
    pub identity: Option<Identity>,
    /// The name certificates are checked for; by default each address's host.
    pub domain: Option<String>,
}

impl FanOut {
    /// `holder`: this node's lease holder; `key`: the cluster's node key; `tls`: how to
    /// reach nodes that answer over TLS; `plaintext`: whether nodes without TLS may be
    /// called (false on a node with TLS: what its front door protects never travels in plain
    /// text between nodes).
    pub fn new(
        search: Arc<SplitSearch>,
        holder: &str,
        key: String,
        tls: Option<LeafTls>,
        plaintext: bool,
        runtime: tokio::runtime::Handle,
    ) -> FanOut {
        FanOut {
            search,
            holder: holder.to_string(),
            key,
            tls,
            plaintext,
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

    /// Whether this node calls a node registered at `address`: over TLS when it has a CA
    /// to check it, in plain text only when this node has no TLS itself.
    fn callable(&self, address: &str) -> bool {
        if address.starts_with("https://") {
            self.tls.is_some()
        } else {
            self.plaintext
        }
    }

    fn client(&self, address: &str) -> Result<LeafServiceClient<Channel>, String> {
        if !self.callable(address) {
            return Err("this node does not call that node (TLS on one side only)".into());
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        // A node with TLS registers `https://host:port`; one without, `host:port`.
        let endpoint = match address.strip_prefix("https://") {
            Some(host_port) => {
                let tls = self.tls.as_ref().ok_or("no cluster.node_ca_file")?;
                let mut config = ClientTlsConfig::new().ca_certificate(tls.ca.clone());
                if let Some(identity) = &tls.identity {
                    config = config.identity(identity.clone());
                }
                if let Some(domain) = &tls.domain {
                    config = config.domain_name(domain.clone());
                }
                Endpoint::from_shared(format!("https://{host_port}"))
                    .map_err(|error| error.to_string())?
                    .tls_config(config)
                    .map_err(|error| error.to_string())?
            }
            None => Endpoint::from_shared(format!("http://{address}"))
                .map_err(|error| error.to_string())?,
        };
        let channel = endpoint
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
        let parts = self.gather(
            plan,
            "search",
            |share| self.search.leaf(share, query, mailboxes, sort, top),
            |mut client, share| {
                let request = leaf_request(share, query_text, mailboxes, sort, top);
                let key = self.key.clone();
                async move {
                    let call = client.search_splits(keyed(&key, request, LEAF_TIMEOUT)?);
                    results_of(answered(LEAF_TIMEOUT, call).await?)
                }
            },
        )?;
        Ok(merge(parts, sort, offset, limit))
    }

    /// The `limit` smallest ids of `query` over `mailboxes` in the plan's splits greater
    /// than `after` (and among `among`, when given), in order, and (with `count`) how many
    /// match after `after`: one page of an export, a purge or a case hold's count, from the
    /// leaves, each given `timeout`. With `among`, also which of those are in the splits at
    /// all. Runs on a blocking thread.
    #[allow(clippy::too_many_arguments)]
    pub fn ids(
        &self,
        plan: &Plan,
        query_text: &QueryText,
        query: &kql::Query,
        mailboxes: &[MailboxId],
        among: Option<&[InteractionId]>,
        after: Option<InteractionId>,
        limit: usize,
        count: bool,
        timeout: Duration,
    ) -> Result<IdPage, IndexError> {
        // No id to look among: nothing (on the wire, an empty list means every id).
        if among.is_some_and(|among| among.is_empty()) {
            return Ok(IdPage::default());
        }
        let parts = self.gather(
            plan,
            "ids",
            |share| {
                self.search
                    .leaf_ids(share, query, mailboxes, among, after, limit, count)
            },
            |mut client, share| {
                let (case_hold, (created_from_us, created_to_us)) = match query_text.case_hold {
                    Some(range) => (true, range),
                    None => (false, (None, None)),
                };
                let request = pb::LeafIdsRequest {
                    query: query_text.text.clone(),
                    case_hold,
                    created_from_us,
                    created_to_us,
                    among: among
                        .unwrap_or_default()
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    mailboxes: mailboxes.iter().map(|m| m.as_str().to_string()).collect(),
                    splits: split_refs(share),
                    dead: tombstones(share),
                    after: after.map(|id| id.to_string()).unwrap_or_default(),
                    limit: u32::try_from(limit).unwrap_or(u32::MAX),
                    count,
                };
                let key = self.key.clone();
                let among: Option<HashSet<InteractionId>> =
                    among.map(|among| among.iter().copied().collect());
                async move {
                    let call = client.matching_ids(keyed(&key, request, timeout)?);
                    let answer = answered(timeout, call).await?;
                    ids_of(answer, after, limit, among.as_ref())
                }
            },
        )?;
        let mut page = IdPage::default();
        for part in parts {
            page.ids.extend(part.ids);
            page.present.extend(part.present);
            page.count = page.count.saturating_add(part.count);
        }
        // Each node's share is its own partitions: the smallest overall are among its own.
        page.ids.sort();
        page.ids.dedup();
        page.ids.truncate(limit);
        page.present.sort();
        page.present.dedup();
        Ok(page)
    }

    /// Saves `plan`, pinned by a search's first page as `id`, so that any node can answer
    /// the later pages (`pinned`). Plans live `max_age`, and an owner keeps its newest
    /// `max_per_owner`.
    pub fn pin(
        &self,
        id: u64,
        owner: &str,
        plan: &Plan,
        max_age: Duration,
        max_per_owner: usize,
    ) -> Result<(), IndexError> {
        let encoded = prost::Message::encode_to_vec(&pb::PinnedPlan {
            splits: split_refs(plan),
            dead: tombstones(plan),
        });
        self.search.store().pin_search_plan(
            id,
            owner,
            &encoded,
            max_age.as_secs_f64(),
            i64::try_from(max_per_owner).unwrap_or(i64::MAX),
        )?;
        Ok(())
    }

    /// The plan another node pinned as `id` (`pin`), if it is younger than `max_age`. Its
    /// splits are read from the catalog: a split deleted since (merged away two minutes
    /// before) fails the plan with `SplitGone`.
    pub fn pinned(&self, id: u64, max_age: Duration) -> Result<Option<Plan>, IndexError> {
        let Some(encoded) = self.search.store().search_plan(id, max_age.as_secs_f64())? else {
            return Ok(None);
        };
        let decoded: pb::PinnedPlan = prost::Message::decode(encoded.as_slice())
            .map_err(|_| IndexError::Splits("a pinned plan cannot be decoded".into()))?;
        let (ids, dead) = plan_of(&decoded.splits, &decoded.dead).map_err(IndexError::Splits)?;
        let splits = self.search.named_splits(&ids)?;
        Ok(Some(Plan { splits, dead }))
    }

    /// Which of `ids` (items of `mailboxes`) are in the splits at all, and which of those
    /// match `query`: a case hold evaluated for the items a sweep looks at, from the leaves
    /// (`searcher::present_and_matching` on one index). Runs on a blocking thread.
    pub fn present_and_matching(
        &self,
        query_text: &QueryText,
        query: &kql::Query,
        mailboxes: &[MailboxId],
        ids: &[InteractionId],
    ) -> Result<(HashSet<InteractionId>, HashSet<InteractionId>), IndexError> {
        let mut present = HashSet::new();
        let mut matching = HashSet::new();
        for chunk in ids.chunks(AMONG_AT_ONCE) {
            // One call per node for both answers, planned again when a merge retired a
            // planned split. The plan is pruned by the hold's created range, which every
            // item asked about is within (an item not found counts as held anyway).
            let mut attempts = 0;
            let page = loop {
                let plan = self.search.plan(mailboxes, query)?;
                match self.ids(
                    &plan,
                    query_text,
                    query,
                    mailboxes,
                    Some(chunk),
                    None,
                    chunk.len(),
                    false,
                    SWEEP_LEAF_TIMEOUT,
                ) {
                    Err(IndexError::SplitGone(_)) if attempts < 3 => attempts += 1,
                    answer => break answer?,
                }
            };
            present.extend(page.present);
            matching.extend(page.ids);
        }
        // Matching and not present cannot be (one view answers both); kept safe anyway: an
        // id not present counts as held.
        matching.retain(|id| present.contains(id));
        Ok((present, matching))
    }

    /// Runs `local` on this node's share of the plan and `remote` on each other node's (one
    /// call per node, all at once), and answers every share's result. A node that cannot be
    /// reached or answers an error has its share run here.
    fn gather<T, Fut>(
        &self,
        plan: &Plan,
        what: &'static str,
        local: impl Fn(&Plan) -> Result<T, IndexError>,
        remote: impl Fn(LeafServiceClient<Channel>, &Plan) -> Fut,
    ) -> Result<Vec<T>, IndexError>
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
    {
        let nodes = self.nodes()?;
        // Nodes that can be asked: those that said where, over a transport this node uses
        // (TLS, or plain gRPC when this node has no TLS); this node in any case.
        let mut live: Vec<String> = nodes
            .iter()
            .filter(|(holder, address)| {
                *holder == self.holder || address.as_deref().is_some_and(|a| self.callable(a))
            })
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
        let own = groups.remove(&self.holder);
        let mut pending = Vec::new();
        for (holder, share) in groups {
            let address = nodes
                .iter()
                .find(|(node, _)| *node == holder)
                .and_then(|(_, address)| address.clone())
                .unwrap_or_default();
            let task = match self.client(&address) {
                Ok(client) => Some(self.runtime.spawn(remote(client, &share))),
                Err(error) => {
                    tracing::warn!(node = %holder, %error, "cannot call a node");
                    None
                }
            };
            pending.push((holder, share, task));
        }
        let mut parts = Vec::with_capacity(pending.len() + 1);
        if let Some(own) = own {
            parts.push(local(&own)?);
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
            match answer {
                Ok(part) => {
                    metrics::counter!(
                        "holdfast_split_leaf_answers_total",
                        "from" => "node",
                        "call" => what
                    )
                    .increment(1);
                    parts.push(part);
                }
                Err(error) => {
                    tracing::warn!(
                        node = %holder,
                        %error,
                        call = what,
                        "a leaf call failed; reading its splits here"
                    );
                    metrics::counter!(
                        "holdfast_split_leaf_answers_total",
                        "from" => "fallback",
                        "call" => what
                    )
                    .increment(1);
                    parts.push(local(&share)?);
                }
            }
        }
        Ok(parts)
    }
}

/// A request carrying the cluster's node key.
fn keyed<R>(key: &str, message: R, timeout: Duration) -> Result<tonic::Request<R>, String> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    let value = key
        .parse()
        .map_err(|_| "the node key is not valid metadata".to_string())?;
    request.metadata_mut().insert(NODE_KEY_HEADER, value);
    Ok(request)
}

/// A leaf's answer, within `timeout`.
async fn answered<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        // The code only: a refusal's message may quote the query.
        Ok(Err(status)) => Err(format!("the node answered {:?}", status.code())),
        Err(_) => Err(format!("no answer in {timeout:?}")),
    }
}

fn split_refs(plan: &Plan) -> Vec<pb::SplitRef> {
    plan.splits
        .iter()
        .map(|split| pb::SplitRef {
            id: split.id.clone(),
        })
        .collect()
}

fn tombstones(plan: &Plan) -> Vec<pb::Tombstone> {
    plan.dead
        .iter()
        .map(|(partition, id, sequence)| pb::Tombstone {
            partition: i32::from(*partition),
            id: id.to_string(),
            sequence: *sequence,
        })
        .collect()
}

/// A leaf's page of ids, checked: valid, in order, after `after`, at most `limit`, and
/// (with `among`) only ids asked about.
fn ids_of(
    answer: pb::LeafIdsResponse,
    after: Option<InteractionId>,
    limit: usize,
    among: Option<&HashSet<InteractionId>>,
) -> Result<IdPage, String> {
    if answer.ids.len() > limit {
        return Err("a leaf answered more ids than asked for".into());
    }
    let parse = |ids: &[String]| {
        ids.iter()
            .map(|id| {
                id.parse::<InteractionId>()
                    .map_err(|_| "a leaf answered an invalid id".to_string())
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let ids = parse(&answer.ids)?;
    let present = parse(&answer.present)?;
    let ordered = ids.windows(2).all(|pair| pair[0] < pair[1])
        && ids
            .first()
            .is_none_or(|first| after.is_none_or(|after| *first > after));
    if !ordered {
        return Err("a leaf answered ids out of order".into());
    }
    let asked = |id: &InteractionId| among.is_none_or(|among| among.contains(id));
    if !ids.iter().chain(&present).all(asked) || (among.is_none() && !present.is_empty()) {
        return Err("a leaf answered ids it was not asked about".into());
    }
    Ok(IdPage {
        ids,
        count: answer.count,
        present,
    })
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
        splits: split_refs(plan),
        dead: tombstones(plan),
    }
}

/// The split ids and the tombstones a leaf request names.
pub fn plan_of(
    splits: &[pb::SplitRef],
    dead: &[pb::Tombstone],
) -> Result<(Vec<String>, Tombstones), String> {
    let ids = splits.iter().map(|split| split.id.clone()).collect();
    let dead = dead
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
        let plan = |r: pb::LeafSearchRequest| plan_of(&r.splits, &r.dead);
        let (ids, dead) = plan(request(3, &item)).unwrap();
        assert_eq!(ids, ["01m8yfexwa2w4a0bczvp0w4wxz"]);
        assert_eq!(dead, [(3, item.parse().unwrap(), 7)]);
        for partition in [-1, SEARCH_PARTITIONS_WIRE, 1 << 20] {
            let refused = plan(request(partition, &item)).unwrap_err();
            assert!(refused.contains("partition"), "{refused}");
        }
        let refused = plan(request(3, "not-an-id")).unwrap_err();
        assert!(refused.contains("item id"), "{refused}");
        assert_eq!(sort_from_wire(1), Some(Sort::Newest));
        assert_eq!(sort_from_wire(7), None);
    }

    #[test]
    fn a_leaf_page_of_ids_is_checked_before_it_is_merged() {
        let ids: Vec<InteractionId> = (0..4).map(|_| InteractionId(ulid::Ulid::new())).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        let answer = |ids: &[InteractionId]| pb::LeafIdsResponse {
            ids: ids.iter().map(ToString::to_string).collect(),
            count: 9,
            ..Default::default()
        };
        let page = ids_of(answer(&sorted), None, 4, None).unwrap();
        assert_eq!((page.ids, page.count), (sorted.clone(), 9));
        // More than asked for, out of order, repeated, not after `after`, or not ids.
        let refused = ids_of(answer(&sorted), None, 3, None).unwrap_err();
        assert!(refused.contains("more ids"), "{refused}");
        let mut reversed = sorted.clone();
        reversed.reverse();
        assert!(ids_of(answer(&reversed), None, 4, None).is_err());
        assert!(ids_of(answer(&[sorted[0], sorted[0]]), None, 4, None).is_err());
        assert!(ids_of(answer(&sorted[1..]), Some(sorted[1]), 4, None).is_err());
        assert!(ids_of(answer(&sorted[2..]), Some(sorted[1]), 4, None).is_ok());
        let bad = pb::LeafIdsResponse {
            ids: vec!["nope".into()],
            ..Default::default()
        };
        assert!(ids_of(bad, None, 4, None)
            .unwrap_err()
            .contains("invalid id"));
        // Among some ids: only those may come back, as matching or as present.
        let asked: HashSet<InteractionId> = sorted[..2].iter().copied().collect();
        assert!(ids_of(answer(&sorted[..2]), None, 4, Some(&asked)).is_ok());
        let refused = ids_of(answer(&sorted[1..3]), None, 4, Some(&asked)).unwrap_err();
        assert!(refused.contains("not asked"), "{refused}");
        let stray = pb::LeafIdsResponse {
            present: vec![sorted[3].to_string()],
            ..Default::default()
        };
        assert!(ids_of(stray.clone(), None, 4, Some(&asked)).is_err());
        assert!(ids_of(stray, None, 4, None).is_err());
    }

    const SEARCH_PARTITIONS_WIRE: i32 = crate::domain::SEARCH_PARTITIONS as i32;
}
