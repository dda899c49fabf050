//! The export format, shared by the server (the console's bags) and the client (the CLI's
//! bags and `export verify`): an interaction's JSON form (`json`) and BagIt bags (`bag`).

pub mod bag;
pub mod json;

pub use holdfast_proto::v1 as pb;
