//! The web console: static files embedded at build time (see `build.rs`), gzip-compressed,
//! each with a strong ETag from the SHA-256 of its content.

use std::io::Read;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Relative to `assets/`, with `/` separators: `console/index.html`.
    pub path: &'static str,
    pub content_type: &'static str,
    /// A quoted strong entity tag.
    pub etag: &'static str,
    /// Uncompressed length.
    pub len: usize,
    pub gzip: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Finds an embedded file by its path under `assets/`.
#[must_use]
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS
        .binary_search_by(|a| a.path.cmp(path))
        .ok()
        .map(|i| &ASSETS[i])
}

impl Asset {
    /// The original bytes, for clients that do not accept gzip.
    ///
    /// # Panics
    /// Never: the build script wrote valid gzip.
    #[must_use]
    pub fn decompressed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        flate2::read::GzDecoder::new(self.gzip)
            .read_to_end(&mut out)
            .expect("embedded gzip is valid");
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn assets_are_sorted_and_decompress() {
        assert!(super::ASSETS.windows(2).all(|w| w[0].path < w[1].path));
        let index = super::asset("console/index.html").expect("console index is embedded");
        assert_eq!(index.decompressed().len(), index.len);
        assert!(index.etag.starts_with('"') && index.etag.ends_with('"'));
        assert!(super::asset("console/missing.html").is_none());
    }
}
