//! The retention-facts decoder: any bytes decode or are refused, never a panic; what decodes
//! encodes back to the same bytes.

use holdfast_server::store::ItemFacts;

/// One input of the target (the fuzz binary and the corpus replay test call this).
pub fn run(data: &[u8]) {
    if let Ok(facts) = ItemFacts::decode(data) {
        assert_eq!(facts.encode(), data);
        assert_eq!(ItemFacts::decode(&facts.encode()), Ok(facts));
    }
}
