//! eDiscovery search: text analysis shared by index and queries, the keyword query language
//! (KQL), the tantivy index derived from the store, and query execution.

pub mod analysis;
pub mod fanout;
pub mod id_pages;
pub mod index;
pub mod kql;
pub mod query;
pub mod schema;
pub mod searcher;
pub mod splits;
#[cfg(test)]
mod tests;
