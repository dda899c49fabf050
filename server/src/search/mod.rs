//! eDiscovery search: text analysis shared by index and queries, and the keyword query
//! language (KQL). The tantivy index and the search service build on these.

pub mod analysis;
pub mod kql;
