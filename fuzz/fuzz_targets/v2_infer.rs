//! The KServe V2 inference codec (JSON header, typed tensor data, Triton's binary tail)
//! accepts any bytes without panicking, and what it decodes always encodes back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into the JSON header and the binary tail, as
    // `Inference-Header-Content-Length` does.
    let Some((&split, rest)) = data.split_first() else { return };
    let at = usize::from(split).min(rest.len());
    let (json, binary) = rest.split_at(rest.len() - at);
    cairn::http::handlers::v2::codec::fuzz_round_trip(json, binary);
});
