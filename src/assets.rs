//! The web client's files, embedded in the binary (see `web/`).
//!
//! Every file is included with `include_bytes!`, and its ETag (FNV-1a 64 of the
//! bytes, as 16 hex digits in quotes) is computed at compile time. All assets are
//! served with `Cache-Control: no-cache`: the browser keeps them but revalidates
//! with `If-None-Match` each time, so a new binary's page is picked up at once
//! while an unchanged one costs only a `304`. (The files are plain files with
//! no build step, so the page cannot carry hashed URLs for its modules.)

pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// Strong validator, quoted, e.g. `"3f2a9c1b"`.
    pub etag: &'static str,
    /// Value of the `Cache-Control` header.
    pub cache_control: &'static str,
}

/// FNV-1a, 64-bit.
const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const ETAG_LEN: usize = 18;

/// `"` + 16 lower-case hex digits of the body's hash + `"`.
const fn etag_bytes(body: &[u8]) -> [u8; ETAG_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = fnv1a64(body);
    let mut out = [b'"'; ETAG_LEN];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

const fn ascii_str(bytes: &'static [u8]) -> &'static str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(_) => panic!("ETag is not ASCII"),
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const REVALIDATE: &str = "no-cache";

macro_rules! asset {
    ($file:literal, $content_type:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!("../web/", $file));
        const TAG: [u8; ETAG_LEN] = etag_bytes(BODY);
        Asset {
            body: BODY,
            content_type: $content_type,
            etag: ascii_str(&TAG),
            cache_control: REVALIDATE,
        }
    }};
}

static INDEX: Asset = asset!("index.html", HTML);
static APP_JS: Asset = asset!("app.js", JS);
static NET_JS: Asset = asset!("net.js", JS);
static TAGS_JS: Asset = asset!("tags.js", JS);
static STYLE_CSS: Asset = asset!("style.css", CSS);
static FAVICON: Asset = asset!("favicon.svg", SVG);

/// Every route, with the asset it serves.
static ROUTES: [(&str, &Asset); 7] = [
    ("/", &INDEX),
    ("/index.html", &INDEX),
    ("/app.js", &APP_JS),
    ("/net.js", &NET_JS),
    ("/tags.js", &TAGS_JS),
    ("/style.css", &STYLE_CSS),
    ("/favicon.svg", &FAVICON),
];

/// The asset served at `path` (`/` is the page), if any. `path` has no query string.
pub fn lookup(path: &str) -> Option<&'static Asset> {
    ROUTES
        .iter()
        .find(|(route, _)| *route == path)
        .map(|(_, asset)| *asset)
}

/// Extra headers sent with every page asset (e.g. Content-Security-Policy), each ending in CRLF.
/// (The HTTP layer adds `X-Content-Type-Options: nosniff` itself.)
///
/// The policy allows only this origin's scripts, styles, images and connections
/// (`connect-src 'self'` covers `ws://`/`wss://` to the same host), no inline code,
/// no plugins, no framing, and Trusted Types with no policy, so the page cannot
/// assign HTML strings to `innerHTML` and the like even by mistake.
pub const PAGE_HEADERS: &str = concat!(
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; ",
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; ",
    "frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'\r\n",
    "Referrer-Policy: no-referrer\r\n",
    "X-Frame-Options: DENY\r\n",
    "Cross-Origin-Opener-Policy: same-origin\r\n",
    "Cross-Origin-Resource-Policy: same-origin\r\n",
);

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &str {
        std::str::from_utf8(asset.body).expect("asset is UTF-8")
    }

    #[test]
    fn every_route_is_found() {
        for (route, asset) in ROUTES.iter() {
            let found = lookup(route).unwrap_or_else(|| panic!("{route} not found"));
            assert!(std::ptr::eq(found, *asset), "{route}");
            assert!(!found.body.is_empty(), "{route} is empty");
        }
        assert!(std::ptr::eq(
            lookup("/").unwrap(),
            lookup("/index.html").unwrap()
        ));
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in [
            "",
            "/x",
            "/app.js/",
            "/APP.JS",
            "/web/app.js",
            "/../Cargo.toml",
            "//app.js",
            "/app.js?v=1",
            "/ws",
            "/healthz",
            "index.html",
        ] {
            assert!(lookup(path).is_none(), "{path:?} should not be found");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            lookup("/").unwrap().content_type,
            "text/html; charset=utf-8"
        );
        for js in ["/app.js", "/net.js", "/tags.js"] {
            assert_eq!(
                lookup(js).unwrap().content_type,
                "text/javascript; charset=utf-8"
            );
        }
        assert_eq!(
            lookup("/style.css").unwrap().content_type,
            "text/css; charset=utf-8"
        );
        assert_eq!(
            lookup("/favicon.svg").unwrap().content_type,
            "image/svg+xml"
        );
    }

    #[test]
    fn etags_are_quoted_hex_hashes_of_the_body() {
        for (route, asset) in ROUTES.iter() {
            let etag = asset.etag;
            assert_eq!(etag.len(), 18, "{route}: {etag}");
            assert!(
                etag.starts_with('"') && etag.ends_with('"'),
                "{route}: {etag}"
            );
            let hex = &etag[1..17];
            assert!(hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_eq!(
                u64::from_str_radix(hex, 16).unwrap(),
                fnv1a64(asset.body),
                "{route}"
            );
        }
    }

    #[test]
    fn etags_are_distinct() {
        let files = [&INDEX, &APP_JS, &NET_JS, &TAGS_JS, &STYLE_CSS, &FAVICON];
        for (i, a) in files.iter().enumerate() {
            for b in &files[i + 1..] {
                assert_ne!(a.etag, b.etag);
            }
        }
    }

    #[test]
    fn fnv1a64_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(&etag_bytes(b"a"), b"\"af63dc4c8601ec8c\"");
    }

    #[test]
    fn cache_control_revalidates() {
        for (route, asset) in ROUTES.iter() {
            assert_eq!(asset.cache_control, "no-cache", "{route}");
        }
    }

    #[test]
    fn page_headers_are_well_formed() {
        assert!(PAGE_HEADERS.ends_with("\r\n"));
        let lines: Vec<&str> = PAGE_HEADERS.split_terminator("\r\n").collect();
        assert!(lines.len() >= 2);
        for line in &lines {
            let (name, value) = line.split_once(": ").expect("Name: value");
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            );
            assert!(!value.is_empty());
            assert!(
                !line.contains('\n') && !line.contains('\r'),
                "bare CR/LF in {line:?}"
            );
        }
        let csp = lines
            .iter()
            .find_map(|l| l.strip_prefix("Content-Security-Policy: "))
            .expect("CSP header");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(
                csp.split("; ").any(|d| d == directive),
                "CSP lacks {directive}"
            );
        }
        assert!(!csp.contains("unsafe"), "CSP must not allow unsafe-*");
        assert!(lines.contains(&"Referrer-Policy: no-referrer"));
    }

    /// Everything the page loads must be routed, or it would 404.
    #[test]
    fn page_references_resolve() {
        let html = text(&INDEX);
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let url = &part[..part.find('"').unwrap()];
                if url.starts_with('#') {
                    continue;
                }
                assert!(
                    url.starts_with('/'),
                    "{url} should be an absolute path on this origin"
                );
                let path = url.split('?').next().unwrap();
                assert!(
                    lookup(path).is_some(),
                    "page references {url}, which is not routed"
                );
            }
        }
        for js in [&APP_JS, &NET_JS, &TAGS_JS] {
            for part in text(js).split("from './").skip(1) {
                let module = &part[..part.find('\'').unwrap()];
                assert!(
                    lookup(&format!("/{module}")).is_some(),
                    "import ./{module} is not routed"
                );
            }
        }
    }

    /// The CSP forbids inline code, so the page must not contain any.
    #[test]
    fn page_has_no_inline_code() {
        let html = text(&INDEX).to_ascii_lowercase();
        for part in html.split("<script").skip(1) {
            let tag = &part[..part.find('>').unwrap()];
            assert!(tag.contains("src="), "inline <script>");
            assert!(part[part.find('>').unwrap() + 1..].starts_with("</script>"));
        }
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style="), "inline style attribute");
        assert!(!html.contains("javascript:"));
        for handler in [
            " onclick=",
            " onload=",
            " onerror=",
            " oninput=",
            " onkeydown=",
            " onsubmit=",
        ] {
            assert!(!html.contains(handler), "inline handler {handler}");
        }
    }

    /// User text goes in as text only.
    #[test]
    fn scripts_never_inject_html() {
        for js in [&APP_JS, &NET_JS, &TAGS_JS] {
            let src = text(js);
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ] {
                assert!(!src.contains(sink), "script uses {sink}");
            }
        }
    }
}
