//! Configuration text never panics the loader: it parses or says why not.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = cairn::config::from_text(text, &BTreeMap::new(), &cairn::config::Overrides::default());
    // The same bytes as an environment value of every key.
    for key in cairn::config::KEYS {
        let env = BTreeMap::from([(key.env_name(), text.to_owned())]);
        let _ = cairn::config::from_text("", &env, &cairn::config::Overrides::default());
    }
});
