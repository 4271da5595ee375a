//! The web client's files, embedded in the binary (see `web/`).

pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// Strong validator, quoted, e.g. `"3f2a9c1b"`.
    pub etag: &'static str,
    /// Value of the `Cache-Control` header.
    pub cache_control: &'static str,
}

/// The asset served at `path` (`/` is the page), if any.
pub fn lookup(path: &str) -> Option<&'static Asset> {
    static INDEX: Asset = Asset {
        body: b"<!doctype html><title>roulette</title><p>roulette</p>\n",
        content_type: "text/html; charset=utf-8",
        etag: "\"placeholder\"",
        cache_control: "no-cache",
    };
    match path {
        "/" | "/index.html" => Some(&INDEX),
        _ => None,
    }
}

/// Extra headers sent with every page asset (e.g. Content-Security-Policy), each ending in CRLF.
pub const PAGE_HEADERS: &str = "";
