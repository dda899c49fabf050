//! The retention-facts decoder: any bytes decode or are refused, never a panic; what decodes
//! encodes back to the same bytes.
#![no_main]

use holdfast_server::store::ItemFacts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(facts) = ItemFacts::decode(data) {
        assert_eq!(facts.encode(), data);
        assert_eq!(ItemFacts::decode(&facts.encode()), Ok(facts));
    }
});
