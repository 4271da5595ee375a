//! Target URLs and pair tags.
//!
//! `--url` takes one or several `ws://` URLs (repeated, or comma-separated), e.g. one per node
//! of a cluster. Client `i` (its index over the whole run, across threads and child
//! processes) connects to URL `i mod N`.
//!
//! With `--pair-tags` (idle, relay, churn, pairing), clients `2k` and `2k+1` form pair `k`: both send
//! `find` with the single interest `lt<k>-<run>`, where `<run>` is random per run (shared by
//! every child process), so the server pairs exactly those two (a shared interest comes before
//! any stranger). With two URLs every pair then has one client on each URL.
use std::net::{SocketAddr, ToSocketAddrs};

/// Which WebSocket endpoint a URL path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`: the chat protocol (idle, relay, churn, pairing).
    Chat,
    /// `/echo` (server started with `--enable-echo`).
    Echo,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/ws",
            Endpoint::Echo => "/echo",
        }
    }
    /// The endpoint of a request path (query ignored): the last segment is `ws` or `echo`,
    /// so that a prefix added by a proxy (`/roulette/ws`) is fine.
    pub fn of_path(path: &str) -> Option<Endpoint> {
        let p = path.split('?').next().unwrap_or(path);
        if p == "/ws" || p.ends_with("/ws") {
            Some(Endpoint::Chat)
        } else if p == "/echo" || p.ends_with("/echo") {
            Some(Endpoint::Echo)
        } else {
            None
        }
    }
}

/// A `ws://` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// As given.
    pub url: String,
    /// The Host header: the authority as written.
    pub host: String,
    /// `host:port` to resolve (port 80 when none is given).
    pub host_port: String,
    /// Path and query of the request line (`/` when empty).
    pub path: String,
}

impl WsUrl {
    pub fn endpoint(&self) -> Option<Endpoint> {
        Endpoint::of_path(&self.path)
    }
    /// Resolve to the first address (DNS for host names).
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        self.host_port
            .to_socket_addrs()
            .map_err(|e| {
                format!(
                    "bad --url {:?}: cannot resolve {}: {e}",
                    self.url, self.host_port
                )
            })?
            .next()
            .ok_or_else(|| {
                format!(
                    "bad --url {:?}: {} has no address",
                    self.url, self.host_port
                )
            })
    }
}

/// Parse `ws://host[:port][/path][?query]` (no resolution).
pub fn parse(url: &str) -> Result<WsUrl, String> {
    let bad = |why: &str| Err(format!("bad --url {url:?}: {why}"));
    if url.is_empty() {
        return bad("empty");
    }
    let lower = url.to_ascii_lowercase();
    let rest = if lower.starts_with("ws://") {
        url.get(5..).unwrap_or("")
    } else if lower.starts_with("wss://") {
        return bad(
            "wss:// (TLS) is not supported; point --url at the nodes' plain ws:// listeners",
        );
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        return bad("the scheme must be ws://, not http(s)://");
    } else if url.contains("://") {
        return bad("only ws:// URLs are supported");
    } else {
        return bad("no scheme; expected ws://HOST:PORT/PATH");
    };
    if rest.contains('#') {
        return bad("a WebSocket URL cannot have a #fragment");
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains white space");
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return bad("no host");
    }
    if authority.contains('@') {
        return bad("user information (user@host) is not supported");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some(close) = v6.find(']') else {
            return bad("unclosed [ in an IPv6 address");
        };
        let (addr, after) = v6.split_at(close);
        let after = after.get(1..).unwrap_or("");
        if addr.is_empty() {
            return bad("empty IPv6 address");
        }
        match after.strip_prefix(':') {
            Some(p) => (&authority[..close + 2], Some(p)),
            None if after.is_empty() => (authority, None),
            None => return bad("junk after the IPv6 address"),
        }
    } else {
        match authority.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return bad("an IPv6 address needs brackets, e.g. ws://[::1]:8080/ws");
            }
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return bad("no host");
    }
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return bad(&format!("bad port {p:?} (want 1-65535)")),
        },
    };
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(WsUrl {
        url: url.to_string(),
        host: authority.to_string(),
        host_port: format!("{host}:{port}"),
        path,
    })
}

/// The `--url` values (each maybe a comma-separated list) as one list of URLs, or `default`
/// when none was given.
pub fn split_list(args: &[String], default: &str) -> Result<Vec<String>, String> {
    if args.is_empty() {
        return Ok(vec![default.to_string()]);
    }
    let mut out = Vec::new();
    for a in args {
        for u in a.split(',') {
            let u = u.trim();
            if u.is_empty() {
                return Err(format!(
                    "--url {a:?}: empty URL in the list (a stray comma?)"
                ));
            }
            out.push(u.to_string());
        }
    }
    if out.is_empty() {
        return Err("--url: no URL given".into());
    }
    Ok(out)
}

/// Parse every URL and check that all name the endpoint the scenario needs.
pub fn parse_all(urls: &[String], want: Endpoint, scenario: &str) -> Result<Vec<WsUrl>, String> {
    let parsed = urls
        .iter()
        .map(|u| parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let mut first: Option<(&WsUrl, Endpoint)> = None;
    for u in &parsed {
        let Some(kind) = u.endpoint() else {
            return Err(format!(
                "bad --url {:?}: the path {:?} is neither a chat endpoint (/ws) nor an echo \
                 endpoint (/echo)",
                u.url, u.path
            ));
        };
        match first {
            None => first = Some((u, kind)),
            Some((f, k)) if k != kind => {
                return Err(format!(
                    "--url: all URLs must name the same endpoint, but {:?} is {} and {:?} is {}",
                    f.url,
                    k.path(),
                    u.url,
                    kind.path()
                ));
            }
            Some(_) => {}
        }
    }
    if let Some((f, k)) = first {
        if k != want {
            return Err(format!(
                "bad --url {:?}: `{scenario}` needs the {} endpoint, not {}",
                f.url,
                want.path(),
                k.path()
            ));
        }
    }
    Ok(parsed)
}

/// The URL (index into the list of `n`) of client `i`.
pub fn url_index(i: usize, n: usize) -> usize {
    i % n.max(1)
}

/// The pair of client `i`: clients `2k` and `2k+1` form pair `k`.
pub fn pair_index(i: usize) -> usize {
    i / 2
}

/// The partner of client `i` under `--pair-tags`.
pub fn partner(i: usize) -> usize {
    i ^ 1
}

/// The interest client `i` sends under `--pair-tags`: `lt<pair>-<run>` (at most 31
/// characters with an 8-character run id; the protocol allows 32).
pub fn pair_tag(run: &str, i: usize) -> String {
    format!("lt{}-{run}", pair_index(i))
}

/// A run id for pair tags: 8 lower-case hex digits.
pub fn run_id(seed: u64) -> String {
    format!("{:08x}", (seed ^ (seed >> 32)) as u32)
}

/// Whether client `i` and its partner (`--pair-tags`) are on different URLs (of `n`).
pub fn crosses(i: usize, n: usize) -> bool {
    url_index(i, n) != url_index(partner(i), n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_urls() {
        let u = parse("ws://127.0.0.1:9000/ws").expect("ok");
        assert_eq!(
            (u.host.as_str(), u.host_port.as_str(), u.path.as_str()),
            ("127.0.0.1:9000", "127.0.0.1:9000", "/ws")
        );
        assert_eq!(u.resolve().expect("resolves").port(), 9000);
        let u = parse("ws://127.0.0.1").expect("ok");
        assert_eq!(
            (u.host_port.as_str(), u.path.as_str()),
            ("127.0.0.1:80", "/")
        );
        let u = parse("ws://[::1]:81/echo").expect("ok");
        assert_eq!(
            (u.host.as_str(), u.host_port.as_str()),
            ("[::1]:81", "[::1]:81")
        );
        assert_eq!(u.resolve().expect("resolves").port(), 81);
        assert_eq!(parse("ws://[::1]/ws").expect("ok").host_port, "[::1]:80");
        let u = parse("WS://h:1?x=1").expect("ok");
        assert_eq!((u.host.as_str(), u.path.as_str()), ("h:1", "/?x=1"));
        assert_eq!(parse("ws://h/a/ws?x").expect("ok").path, "/a/ws?x");
    }

    #[test]
    fn rejects_bad_urls() {
        for (url, why) in [
            ("", "empty"),
            ("wss://x/ws", "wss://"),
            ("http://x/ws", "not http"),
            ("ftp://x/ws", "only ws://"),
            ("127.0.0.1:8080/ws", "no scheme"),
            ("ws:///ws", "no host"),
            ("ws://:80/ws", "no host"),
            ("ws://h:/ws", "bad port"),
            ("ws://h:0/ws", "bad port"),
            ("ws://h:70000/ws", "bad port"),
            ("ws://h:+80/ws", "bad port"),
            ("ws://h:8o/ws", "bad port"),
            ("ws://::1/ws", "brackets"),
            ("ws://[::1/ws", "unclosed"),
            ("ws://[::1]x/ws", "junk"),
            ("ws://u@h/ws", "user"),
            ("ws://h/ws#f", "fragment"),
            ("ws://h/w s", "white space"),
        ] {
            let e = parse(url).expect_err(url);
            assert!(e.contains(why), "{url}: {e}");
            assert!(e.contains("bad --url"), "{url}: {e}");
        }
    }

    #[test]
    fn splits_url_lists() {
        assert_eq!(split_list(&[], "ws://d/ws").expect("ok"), s(&["ws://d/ws"]));
        assert_eq!(
            split_list(&s(&["ws://a/ws"]), "ws://d/ws").expect("ok"),
            s(&["ws://a/ws"])
        );
        assert_eq!(
            split_list(&s(&["ws://a/ws,ws://b/ws", " ws://c/ws "]), "x").expect("ok"),
            s(&["ws://a/ws", "ws://b/ws", "ws://c/ws"])
        );
        // The same URL twice is allowed (two halves of a run on one node).
        assert_eq!(
            split_list(&s(&["ws://a/ws,ws://a/ws"]), "x")
                .expect("ok")
                .len(),
            2
        );
        assert!(split_list(&s(&["ws://a/ws,"]), "x").is_err());
        assert!(split_list(&s(&["ws://a/ws,,ws://b/ws"]), "x").is_err());
        assert!(split_list(&s(&[""]), "x").is_err());
    }

    #[test]
    fn endpoints_must_agree() {
        let chat = s(&["ws://a:1/ws", "ws://b:2/proxy/ws"]);
        assert_eq!(
            parse_all(&chat, Endpoint::Chat, "relay").expect("ok").len(),
            2
        );
        let e = parse_all(&chat, Endpoint::Echo, "echo").expect_err("wrong kind");
        assert!(e.contains("`echo` needs the /echo endpoint"), "{e}");
        let mixed = s(&["ws://a:1/ws", "ws://b:2/echo"]);
        let e = parse_all(&mixed, Endpoint::Chat, "relay").expect_err("mixed");
        assert!(e.contains("same endpoint"), "{e}");
        let e = parse_all(&s(&["ws://a:1/"]), Endpoint::Chat, "idle").expect_err("no kind");
        assert!(e.contains("neither"), "{e}");
        let e =
            parse_all(&s(&["ws://a:1/ws", "wss://b/ws"]), Endpoint::Chat, "idle").expect_err("tls");
        assert!(e.contains("wss://"), "{e}");
        assert_eq!(Endpoint::of_path("/echo?x=/ws"), Some(Endpoint::Echo));
        assert_eq!(Endpoint::of_path("/wss"), None);
    }

    #[test]
    fn round_robin_and_tags() {
        // Two URLs: even clients on the first, odd on the second, so every pair crosses.
        assert_eq!(
            (0..6).map(|i| url_index(i, 2)).collect::<Vec<_>>(),
            [0, 1, 0, 1, 0, 1]
        );
        assert_eq!(
            (0..6).map(|i| url_index(i, 3)).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2]
        );
        assert!((0..5).all(|i| url_index(i, 1) == 0));
        assert!((0..1000).all(|i| crosses(i, 2) && crosses(i, 3)));
        assert!((0..1000).all(|i| !crosses(i, 1)));
        // Four URLs: pair k uses URLs (2k mod 4, 2k+1 mod 4) = (0, 1) or (2, 3).
        assert_eq!(
            (0..4)
                .map(|i| (url_index(2 * i, 4), url_index(2 * i + 1, 4)))
                .collect::<Vec<_>>(),
            [(0, 1), (2, 3), (0, 1), (2, 3)]
        );
        // Pair k = clients 2k and 2k+1, same tag; neighbouring pairs differ.
        let run = run_id(0x1234_5678_9abc_def0);
        assert_eq!(run.len(), 8);
        assert!(run
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(pair_tag(&run, 0), format!("lt0-{run}"));
        assert_eq!(pair_tag(&run, 0), pair_tag(&run, 1));
        assert_eq!(pair_tag(&run, 6), pair_tag(&run, 7));
        assert_ne!(pair_tag(&run, 1), pair_tag(&run, 2));
        assert_eq!(pair_tag(&run, 2001), format!("lt1000-{run}"));
        assert_eq!((partner(4), partner(5)), (5, 4));
        assert_eq!(pair_index(partner(9)), pair_index(9));
        // Within the protocol's 32-character limit for any index.
        assert!(pair_tag(&run, usize::MAX).chars().count() <= 32);
        assert_ne!(run_id(1), run_id(2));
    }
}
