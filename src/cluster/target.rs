//! Which Redis the cluster link talks to, and how: the URL (from `--cluster` or
//! `--cluster-url-file`), the password (in the URL or from `--cluster-password-file`), TLS
//! roots (built-in WebPKI roots, or only `--cluster-ca-file`'s), plus the checks and wording
//! every Redis error goes through before an operator sees it.
//!
//! The password never leaves this module in text: everything that is logged or returned as
//! an error names the Redis by [`RedisTarget::shown`] (scheme, user, host, port, database),
//! and no error message quotes the URL.
use crate::config::Config;
use redis::IntoConnectionInfo;
use std::path::Path;

/// A resolved `--cluster` setting.
pub struct RedisTarget {
    pub endpoint: Endpoint,
    /// `scheme://[user@]host:port[/db]`: what logs call this Redis. No password.
    pub shown: String,
    /// How the link is secured and authenticated, for the startup line.
    pub details: String,
}

/// Where the Redis is.
pub enum Endpoint {
    /// One address: a standalone Redis, or a managed service that fails over behind one
    /// endpoint.
    Direct(redis::Client),
    /// A master named by Sentinels. The `redis` crate looks the master up only when it
    /// connects, so the bridge asks again on every (re)connection.
    Sentinel(SentinelSpec),
}

impl Endpoint {
    pub fn tls(&self) -> bool {
        match self {
            Endpoint::Direct(c) => matches!(
                c.get_connection_info().addr(),
                redis::ConnectionAddr::TcpTls { .. }
            ),
            Endpoint::Sentinel(s) => s.tls,
        }
    }
}

/// A `redis+sentinel://` target, kept as parts so that each thread that needs a lookup (the
/// bridge's resolver, the `+switch-master` watcher) builds a `SentinelClient` of its own: the
/// crate's client needs `&mut` for every lookup.
#[derive(Clone)]
pub struct SentinelSpec {
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    tls: bool,
    sentinel_user: Option<String>,
    sentinel_password: Option<String>,
    data_user: Option<String>,
    data_password: Option<String>,
    ca: Option<Vec<u8>>,
}

/// Bound every connection the crate's Sentinel code opens: it sets no connect or read
/// timeout of its own, and a partitioned Sentinel or master would otherwise hold a lookup for
/// the kernel's minutes of retransmissions. Unacknowledged data (or SYNs) for this long end
/// the connection. Sentinels answer only lookups, so they get a short bound; the data nodes'
/// connections carry the bridge's traffic after the lookup, where a connect storm on a busy
/// host (the 100k run in BENCHMARKS.md) can hold an acknowledgement for more than 2 s, and
/// the bridge's own 2 s read timeouts already decide when the link has failed.
pub const SENTINEL_TCP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
pub const DATA_TCP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl SentinelSpec {
    pub fn client(&self) -> redis::RedisResult<redis::sentinel::SentinelClient> {
        use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
        let addrs = self.sentinels.iter().map(|(h, p)| {
            if self.tls {
                redis::ConnectionAddr::TcpTls {
                    host: h.clone(),
                    port: *p,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                redis::ConnectionAddr::Tcp(h.clone(), *p)
            }
        });
        let tcp = |t| {
            redis::io::tcp::TcpSettings::default()
                .set_nodelay(true)
                .set_user_timeout(t)
        };
        let mut b = SentinelClientBuilder::new(addrs, &self.master, SentinelServerType::Master)?
            .set_client_to_sentinel_tcp_settings(tcp(SENTINEL_TCP_TIMEOUT))
            .set_client_to_redis_tcp_settings(tcp(DATA_TCP_TIMEOUT));
        if let Some(u) = &self.sentinel_user {
            b = b.set_client_to_sentinel_username(u);
        }
        if let Some(p) = &self.sentinel_password {
            b = b.set_client_to_sentinel_password(p);
        }
        if let Some(u) = &self.data_user {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = &self.data_password {
            b = b.set_client_to_redis_password(p);
        }
        if self.tls {
            b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
            if let Some(pem) = &self.ca {
                let certs = || redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                };
                b = b
                    .set_client_to_redis_certificates(certs())
                    .set_client_to_sentinel_certificates(certs());
            }
        }
        b.build()
    }
}

/// What a configured URL looks like, for errors.
const URL_FORM: &str = "redis://[[USER]:PASSWORD@]HOST:PORT[/DB] or rediss://... for TLS, or \
     redis+sentinel://[SENTINEL_PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME";

/// Resolve the cluster settings of `config`: `Ok(None)` when cluster mode is off. Every error
/// names the flag at fault and never quotes the URL or the password.
pub fn from_config(config: &Config) -> Result<Option<RedisTarget>, String> {
    let (url, source) = match (&config.cluster, &config.cluster_url_file) {
        (None, None) => return Ok(None),
        (Some(u), None) => (u.expose().trim().to_string(), "--cluster".to_string()),
        (None, Some(path)) => {
            let text = read_file(path, "--cluster-url-file")?;
            (
                text.trim().to_string(),
                format!("--cluster-url-file {}", path.display()),
            )
        }
        (Some(_), Some(_)) => {
            return Err("--cluster and --cluster-url-file: give the URL in one place only".into())
        }
    };
    let password_file = match &config.cluster_password_file {
        Some(path) => Some((read_file(path, "--cluster-password-file")?, path.as_path())),
        None => None,
    };
    let ca = match &config.cluster_ca_file {
        Some(path) => Some((read_file(path, "--cluster-ca-file")?, path.as_path())),
        None => None,
    };
    if url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://") {
        return resolve_sentinel(
            &url,
            &source,
            config.cluster_user.as_deref(),
            password_file,
            ca,
        )
        .map(Some);
    }
    if config.cluster_user.is_some() {
        return Err(format!(
            "--cluster-user: only for the redis+sentinel:// form; with {source} put the user \
             name in the URL"
        ));
    }
    resolve(&url, &source, password_file, ca).map(Some)
}

fn read_file(path: &Path, flag: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// The checks of [`from_config`] on values already read: `password_file` and `ca` are the
/// contents and paths of those files.
pub fn resolve(
    url: &str,
    source: &str,
    password_file: Option<(String, &Path)>,
    ca: Option<(String, &Path)>,
) -> Result<RedisTarget, String> {
    // The scheme comes before any user name or password, so it is safe to quote.
    let scheme = match url.split_once("://") {
        Some((s, _)) if s == "redis" || s == "rediss" => s,
        Some((s, _)) if s == "redis+sentinel" || s == "rediss+sentinel" => {
            return resolve_sentinel(url, source, None, password_file, ca);
        }
        Some((s, _)) if s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            return Err(format!(
                "{source}: not a redis:// URL (nor rediss:// for TLS): scheme `{s}`; expected {URL_FORM}"
            ));
        }
        _ => {
            return Err(format!(
                "{source}: not a redis:// URL (nor rediss:// for TLS); expected {URL_FORM}"
            ))
        }
    };
    let tls = scheme == "rediss";
    let parsed = redis::parse_redis_url(url).ok_or_else(|| {
        format!(
            "{source}: not a valid URL; expected {URL_FORM} (characters such as @ : / # ? % \
             in the user name or password must be %-encoded, or put the password in \
             --cluster-password-file)"
        )
    })?;
    if parsed.fragment().is_some() || parsed.query().is_some() {
        // `#insecure` would turn certificate checks off; RESP3 (`?protocol=3`) would change
        // how pub/sub replies arrive. Neither is something a deployment should opt into here.
        return Err(format!(
            "{source}: query strings and fragments (#insecure, ?protocol=...) are not supported; \
             expected {URL_FORM} (for a private CA use --cluster-ca-file; a # or ? in the \
             password must be %-encoded)"
        ));
    }
    let mut info = parsed
        .into_connection_info()
        .map_err(|e| format!("{source}: {e}; expected {URL_FORM}"))?;
    let (host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(h, p)
        | redis::ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => (h.clone(), *p),
        _ => return Err(format!("{source}: expected {URL_FORM}")),
    };
    let user = info.redis_settings().username().map(str::to_string);
    let db = info.redis_settings().db();
    let host_shown = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let shown = format!(
        "{scheme}://{}{host_shown}:{port}{}",
        user.as_deref().map(|u| format!("{u}@")).unwrap_or_default(),
        if db != 0 {
            format!("/{db}")
        } else {
            String::new()
        }
    );

    let password_from = match (password_file, info.redis_settings().password().is_some()) {
        (Some((_, path)), true) => {
            return Err(format!(
                "--cluster-password-file {}: {source} already has a password; give it in one \
                 place only (remove it from the URL)",
                path.display()
            ))
        }
        (Some((text, path)), false) => {
            let pw = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text);
            if pw.is_empty() {
                return Err(format!(
                    "--cluster-password-file {}: the file is empty",
                    path.display()
                ));
            }
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
            format!("password from {}", path.display())
        }
        (None, true) => "password from the URL".to_string(),
        (None, false) => "no password".to_string(),
    };

    let (client, trust) = match ca {
        Some((_, path)) if !tls => {
            return Err(format!(
                "--cluster-ca-file {}: only applies to TLS (rediss://), and {source} is redis://",
                path.display()
            ))
        }
        Some((pem, path)) => {
            let certs = pem.matches("-----BEGIN CERTIFICATE-----").count();
            if certs == 0 {
                return Err(format!(
                    "--cluster-ca-file {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                    path.display()
                ));
            }
            let client = redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.into_bytes()),
                },
            )
            .map_err(|e| format!("--cluster-ca-file {}: {e}", path.display()))?;
            let trust = format!(
                "TLS, trusting only the {certs} CA certificate{} of {}",
                if certs == 1 { "" } else { "s" },
                path.display()
            );
            (client, trust)
        }
        None => {
            let client = redis::Client::open(info).map_err(|e| format!("{source}: {e}"))?;
            let trust = if tls {
                "TLS, built-in WebPKI roots".to_string()
            } else {
                "no TLS".to_string()
            };
            (client, trust)
        }
    };
    Ok(RedisTarget {
        endpoint: Endpoint::Direct(client),
        shown,
        details: format!("{trust}; {password_from}"),
    })
}

/// What the Sentinel form looks like, for errors.
const SENTINEL_FORM: &str =
    "redis+sentinel://[SENTINEL_PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME (rediss+sentinel:// for TLS)";

/// The Sentinel form. The URL's password (if any) is the Sentinels'; the data nodes' user and
/// password come from `--cluster-user` and `--cluster-password-file`, since one URL cannot
/// carry two sets of credentials without inventing syntax.
pub fn resolve_sentinel(
    url: &str,
    source: &str,
    data_user: Option<&str>,
    password_file: Option<(String, &Path)>,
    ca: Option<(String, &Path)>,
) -> Result<RedisTarget, String> {
    let bad = |why: &str| format!("{source}: {why}; expected {SENTINEL_FORM}");
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("not a redis+sentinel:// URL"))?;
    let tls = match scheme {
        "redis+sentinel" => false,
        "rediss+sentinel" => true,
        _ => return Err(bad("not a redis+sentinel:// URL")),
    };
    let (authority, master) = rest
        .split_once('/')
        .ok_or_else(|| bad("no /MASTER_NAME after the Sentinel addresses"))?;
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let master_ok = !master.is_empty()
        && master.len() <= 64
        && master
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !master_ok {
        return Err(bad(
            "the master name must be letters, digits, `.`, `_` or `-` (no query string or \
             fragment), at most 64",
        ));
    }
    let (sentinel_user, sentinel_password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pw) = match u.split_once(':') {
                Some((user, pw)) => (Some(user), pw),
                None => (None, u),
            };
            let user = user
                .filter(|u| !u.is_empty())
                .map(percent_decode)
                .transpose()
                .map_err(|()| bad("bad %-escape in the Sentinel user name"))?;
            let pw =
                percent_decode(pw).map_err(|()| bad("bad %-escape in the Sentinel password"))?;
            if pw.is_empty() {
                return Err(bad("empty Sentinel password before @"));
            }
            (user, Some(pw))
        }
    };
    let mut sentinels = Vec::new();
    for hp in hosts.split(',') {
        let (h, p) = hp
            .rsplit_once(':')
            .ok_or_else(|| bad("every Sentinel needs HOST:PORT"))?;
        let h = h
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h);
        let port: u16 = p
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad("a Sentinel port is not a number from 1 to 65535"))?;
        let host_ok = !h.is_empty()
            && h != "0.0.0.0"
            && h != "::"
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
        if !host_ok {
            return Err(bad(
                "a Sentinel host is empty or not a host name or address",
            ));
        }
        sentinels.push((h.to_string(), port));
    }
    if sentinels.len() > 16 {
        return Err(bad("at most 16 Sentinels"));
    }
    let data_password = match &password_file {
        Some((text, path)) => {
            let pw = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(text);
            if pw.is_empty() {
                return Err(format!(
                    "--cluster-password-file {}: the file is empty",
                    path.display()
                ));
            }
            Some(pw.to_string())
        }
        None => None,
    };
    let ca_pem = match ca {
        Some((_, path)) if !tls => {
            return Err(format!(
                "--cluster-ca-file {}: only applies to TLS (rediss+sentinel://), and {source} \
                 is redis+sentinel://",
                path.display()
            ))
        }
        Some((pem, path)) => {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "--cluster-ca-file {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                    path.display()
                ));
            }
            Some((pem.into_bytes(), path.display().to_string()))
        }
        None => None,
    };
    let shown_hosts: Vec<String> = sentinels
        .iter()
        .map(|(h, p)| {
            if h.contains(':') {
                format!("[{h}]:{p}")
            } else {
                format!("{h}:{p}")
            }
        })
        .collect();
    let shown = format!("{scheme}://{}/{master}", shown_hosts.join(","));
    let details = format!(
        "{}; Sentinel {}; data nodes: {}{}",
        match (&ca_pem, tls) {
            (Some((_, path)), _) => format!("TLS, trusting only the CA certificates of {path}"),
            (None, true) => "TLS, built-in WebPKI roots".to_string(),
            (None, false) => "no TLS".to_string(),
        },
        if sentinel_password.is_some() {
            "password from the URL"
        } else {
            "without password"
        },
        data_user.map(|u| format!("user {u}, ")).unwrap_or_default(),
        match &password_file {
            Some((_, path)) => format!("password from {}", path.display()),
            None => "no password".to_string(),
        }
    );
    let spec = SentinelSpec {
        sentinels,
        master: master.to_string(),
        tls,
        sentinel_user,
        sentinel_password,
        data_user: data_user.map(str::to_string),
        data_password,
        ca: ca_pem.map(|(pem, _)| pem),
    };
    // Built once here so that a setting the crate refuses stops the node at start.
    spec.client().map_err(|e| format!("{source}: {e}"))?;
    Ok(RedisTarget {
        endpoint: Endpoint::Sentinel(spec),
        shown,
        details,
    })
}

/// `%XX` escapes as in a URL's user information.
fn percent_decode(s: &str) -> Result<String, ()> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(())?;
            let hex = std::str::from_utf8(hex).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// A Redis error as an operator should read it.
pub struct Explained {
    /// The Redis client's own message (which never holds the password), plus, for the usual
    /// setup mistakes, what to change.
    pub text: String,
    /// Nothing answered (refused, timed out, dropped, name not found), as opposed to a Redis
    /// (or something else) that answered but would not serve us.
    pub unreachable: bool,
}

pub fn explain(e: &redis::RedisError, tls: bool) -> Explained {
    // A timed-out read shows as EAGAIN ("Resource temporarily unavailable"): say what it is.
    let text = if e.is_timeout() {
        format!("timed out ({e})")
    } else {
        e.to_string()
    };
    let lower = text.to_ascii_lowercase();
    let hint = if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        Some(
            "the server's TLS certificate is not signed by a trusted CA: for a private CA \
             (e.g. Memorystore) give its certificate with --cluster-ca-file",
        )
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        Some(
            "the server's TLS certificate does not name this host: use the host name (or \
             address) the certificate was issued for",
        )
    } else if lower.contains("certificate") {
        Some("the server's TLS certificate was rejected")
    } else if lower.contains("wrongpass")
        || lower.contains("noauth")
        || e.kind() == redis::ErrorKind::AuthenticationFailed
    {
        Some(
            "check the user name in the URL and the password (in the URL or \
             --cluster-password-file)",
        )
    } else if tls && (lower.contains("corrupt message") || lower.contains("invalidcontenttype")) {
        Some("the server does not speak TLS on this port: use redis:// or the server's TLS port")
    } else if !tls && e.is_connection_dropped() && !e.is_connection_refusal() {
        Some(
            "the server closed the connection at once: if it expects TLS (most managed Redis \
             does), use a rediss:// URL",
        )
    } else if tls && e.is_timeout() {
        // A plain-text Redis reads a TLS hello as an unfinished command and never answers.
        return Explained {
            text: format!(
                "{text}; if this port serves plain-text Redis, use redis:// or the server's TLS \
                 port"
            ),
            unreachable: true,
        };
    } else {
        None
    };
    let unreachable = hint.is_none() && e.is_io_error();
    Explained {
        text: match hint {
            Some(h) => format!("{text}; {h}"),
            None => text,
        },
        unreachable,
    }
}

/// The problem with a Redis Cluster endpoint and what to use instead; `evidence` says how it
/// was recognised.
pub fn cluster_refusal(shown: &str, evidence: &str) -> String {
    format!(
        "{shown} is a Redis Cluster endpoint (cluster mode enabled: {evidence}). Roulette's \
         pairing scripts touch keys named at run time and its client does not follow MOVED \
         redirections, so cluster mode needs one standalone primary (replicas are fine): e.g. \
         ElastiCache with cluster mode disabled (its primary endpoint), Memorystore for Redis \
         (not Memorystore for Redis Cluster), Azure Cache for Redis Basic, Standard or Premium \
         without clustering"
    )
}

/// At start, refuse a Redis Cluster endpoint while the operator is watching. A Redis that does
/// not answer (or refuses us) is not an error here: the node then starts alone and the link
/// reports the problem, and checks again, on every attempt to connect.
pub fn check_at_start(t: &RedisTarget) -> Result<(), String> {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
    // Behind Sentinels the bridge checks every master it is given as it connects.
    let Endpoint::Direct(client) = &t.endpoint else {
        return Ok(());
    };
    let Ok(mut con) = client.get_connection_with_timeout(TIMEOUT) else {
        return Ok(());
    };
    if con.set_read_timeout(Some(TIMEOUT)).is_err() || con.set_write_timeout(Some(TIMEOUT)).is_err()
    {
        return Ok(());
    }
    match probe_kind(&mut con) {
        Ok(Kind::Cluster(evidence)) => Err(format!(
            "{}. Refusing to start: point --cluster at a standalone primary",
            cluster_refusal(&t.shown, &evidence)
        )),
        _ => Ok(()),
    }
}

/// What talking to a Redis found out about it.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Standalone,
    /// A Redis Cluster endpoint, with the evidence.
    Cluster(String),
}

/// Is this error a reply that only a Redis Cluster gives?
pub fn cluster_evidence(e: &redis::RedisError) -> Option<String> {
    use redis::ServerErrorKind as S;
    match e.kind() {
        redis::ErrorKind::Server(
            S::Moved | S::Ask | S::CrossSlot | S::ClusterDown | S::TryAgain,
        ) => Some(format!("a {} reply", e.code().unwrap_or("cluster"))),
        _ => None,
    }
}

/// Tell a standalone Redis from a Redis Cluster endpoint on a fresh connection. `INFO cluster`
/// says so directly; where the user may not run INFO (it is in ACL category @dangerous),
/// a two-key command on keys of different hash slots is refused with CROSSSLOT (or
/// CLUSTERDOWN / MOVED) by any cluster node and answered by a standalone Redis.
pub fn probe_kind(con: &mut redis::Connection) -> Result<Kind, redis::RedisError> {
    match redis::cmd("INFO").arg("cluster").query::<String>(con) {
        Ok(info) => {
            if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
                return Ok(Kind::Cluster("INFO cluster says cluster_enabled:1".into()));
            }
            Ok(Kind::Standalone)
        }
        Err(e) if cluster_evidence(&e).is_some() => {
            Ok(Kind::Cluster(cluster_evidence(&e).unwrap_or_default()))
        }
        Err(e)
            if matches!(
                e.kind(),
                redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
            ) =>
        {
            // INFO refused (NOPERM, or renamed away): ask the keyspace instead.
            match redis::cmd("EXISTS")
                .arg("rl:probe:{a}")
                .arg("rl:probe:{b}")
                .query::<u64>(con)
            {
                Ok(_) => Ok(Kind::Standalone),
                Err(e) => match cluster_evidence(&e) {
                    Some(ev) => Ok(Kind::Cluster(ev)),
                    None => Err(e),
                },
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const SECRET: &str = "s3cr3t-pw";

    fn ok(url: &str) -> RedisTarget {
        match resolve(url, "--cluster", None, None) {
            Ok(t) => t,
            Err(e) => panic!("{url}: {e}"),
        }
    }

    fn direct(t: &RedisTarget) -> &redis::Client {
        match &t.endpoint {
            Endpoint::Direct(c) => c,
            Endpoint::Sentinel(_) => panic!("{} is not a direct target", t.shown),
        }
    }

    fn err(url: &str) -> String {
        match resolve(url, "--cluster", None, None) {
            Ok(t) => panic!("{url} was accepted as {}", t.shown),
            Err(e) => e,
        }
    }

    #[test]
    fn shown_names_scheme_user_host_port_and_db_but_never_the_password() {
        let t = ok("rediss://alice:s3cr3t-pw@cache.example.org:6380/2");
        assert_eq!(t.shown, "rediss://alice@cache.example.org:6380/2");
        assert_eq!(
            t.details,
            "TLS, built-in WebPKI roots; password from the URL"
        );
        let t = ok("redis://:s3cr3t-pw@10.0.0.5:6379");
        assert_eq!(t.shown, "redis://10.0.0.5:6379");
        assert_eq!(t.details, "no TLS; password from the URL");
        assert_eq!(ok("redis://10.0.0.5").shown, "redis://10.0.0.5:6379");
        assert_eq!(ok("redis://[::1]:7000").shown, "redis://[::1]:7000");
    }

    #[test]
    fn malformed_urls_are_refused_without_quoting_them() {
        for url in [
            "http://u:s3cr3t-pw@10.0.0.5:6379",
            "s3cr3t-pw@10.0.0.5:6379",
            "rediss://u:s3cr3t-pw@10.0.0.5:notaport",
            "rediss://u:s3cr3t-pw@:6379",
            "rediss://u:s3cr3t-pw@10.0.0.5:6379/x",
            "rediss://u:s3cr3t-pw@10.0.0.5:6379/#insecure",
            "rediss://u:s3cr3t-pw@10.0.0.5:6379/?protocol=3",
            "rediss://u:s3cr3t-pw@0.0.0.0:6379",
            "unix:///tmp/s3cr3t-pw.sock",
        ] {
            let e = err(url);
            assert!(!e.contains(SECRET), "{url}: {e}");
            assert!(e.starts_with("--cluster: "), "{url}: {e}");
        }
        assert!(err("http://x:s3cr3t-pw@h:1").contains("not a redis:// URL"));
        assert!(err("http://x:s3cr3t-pw@h:1").contains("scheme `http`"));
        assert!(err("rediss://h:1/#insecure").contains("--cluster-ca-file"));
    }

    #[test]
    fn the_password_file_fills_in_the_password_once() {
        let path = PathBuf::from("/run/secrets/pw");
        let t = resolve(
            "rediss://alice@h:6380",
            "--cluster",
            Some((format!("{SECRET}\n"), &path)),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = direct(&t).get_connection_info().redis_settings();
        assert_eq!(r.username(), Some("alice"));
        assert_eq!(r.password(), Some(SECRET), "only the trailing newline goes");
        assert_eq!(t.shown, "rediss://alice@h:6380");
        assert_eq!(
            t.details,
            "TLS, built-in WebPKI roots; password from /run/secrets/pw"
        );
        // CRLF from a file edited on Windows; characters a URL would need %-encoded.
        let t = resolve(
            "redis://h",
            "--cluster",
            Some(("p@ss:w/rd #1 \r\n".into(), &path)),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = direct(&t).get_connection_info().redis_settings();
        assert_eq!(r.password(), Some("p@ss:w/rd #1 "));
        assert_eq!(r.username(), None);

        let e = resolve(
            "rediss://alice:s3cr3t-pw@h:6380",
            "--cluster",
            Some(("other\n".into(), &path)),
            None,
        )
        .err()
        .unwrap_or_default();
        assert!(e.contains("already has a password"), "{e}");
        assert!(!e.contains(SECRET), "{e}");
        let e = resolve("rediss://h", "--cluster", Some(("\n".into(), &path)), None)
            .err()
            .unwrap_or_default();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn a_ca_file_needs_tls_and_a_certificate() {
        let path = PathBuf::from("ca.pem");
        let e = resolve("redis://h", "--cluster", None, Some(("x".into(), &path)))
            .err()
            .unwrap_or_default();
        assert!(e.contains("only applies to TLS"), "{e}");
        let e = resolve(
            "rediss://h",
            "--cluster",
            None,
            Some(("junk".into(), &path)),
        )
        .err()
        .unwrap_or_default();
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn cluster_replies_are_recognised() {
        let moved = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::Moved),
            "moved",
        ));
        assert!(cluster_evidence(&moved).is_some());
        let other = redis::RedisError::from((redis::ErrorKind::Io, "io"));
        assert_eq!(cluster_evidence(&other), None);
    }

    fn sentinel(t: &RedisTarget) -> &SentinelSpec {
        match &t.endpoint {
            Endpoint::Sentinel(s) => s,
            Endpoint::Direct(_) => panic!("{} is not a Sentinel target", t.shown),
        }
    }

    #[test]
    fn sentinel_urls_name_every_sentinel_and_the_master_but_no_password() {
        let t = ok("redis+sentinel://s3cr3t-pw@10.0.0.1:26379,10.0.0.2:26380,[::1]:26381/mymaster");
        assert_eq!(
            t.shown,
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380,[::1]:26381/mymaster"
        );
        assert!(!t.details.contains(SECRET), "{}", t.details);
        assert!(
            t.details.contains("Sentinel password from the URL"),
            "{}",
            t.details
        );
        let s = sentinel(&t);
        assert_eq!(
            s.sentinels,
            vec![
                ("10.0.0.1".to_string(), 26379),
                ("10.0.0.2".to_string(), 26380),
                ("::1".to_string(), 26381)
            ]
        );
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.sentinel_password.as_deref(), Some(SECRET));
        assert_eq!(s.sentinel_user, None);
        assert!(!s.tls);

        let t = ok("redis+sentinel://sentinel-a:26379/roulette.main_1");
        let s = sentinel(&t);
        assert_eq!(s.sentinel_password, None);
        assert_eq!(s.sentinels, vec![("sentinel-a".to_string(), 26379)]);
        assert!(
            t.details.starts_with("no TLS; Sentinel without password"),
            "{}",
            t.details
        );

        // An ACL user for the Sentinels, and %-escapes in the password.
        let t = ok("rediss+sentinel://watch:p%40ss%3Aw@h:26379/m");
        let s = sentinel(&t);
        assert!(s.tls);
        assert_eq!(s.sentinel_user.as_deref(), Some("watch"));
        assert_eq!(s.sentinel_password.as_deref(), Some("p@ss:w"));
        assert_eq!(t.shown, "rediss+sentinel://h:26379/m");
        assert!(
            t.details.starts_with("TLS, built-in WebPKI roots"),
            "{}",
            t.details
        );
    }

    #[test]
    fn malformed_sentinel_urls_are_refused_without_quoting_them() {
        for url in [
            "redis+sentinel://s3cr3t-pw@10.0.0.1:26379",
            "redis+sentinel://s3cr3t-pw@10.0.0.1:26379/",
            "redis+sentinel://s3cr3t-pw@10.0.0.1/m",
            "redis+sentinel://s3cr3t-pw@10.0.0.1:0/m",
            "redis+sentinel://s3cr3t-pw@10.0.0.1:99999/m",
            "redis+sentinel://s3cr3t-pw@10.0.0.1:26379,/m",
            "redis+sentinel://s3cr3t-pw@:26379/m",
            "redis+sentinel://s3cr3t-pw@0.0.0.0:26379/m",
            "redis+sentinel://s3cr3t-pw@10.0.0.1:26379/m/x",
            "redis+sentinel://s3cr3t-pw@10.0.0.1:26379/m?x=1",
            "redis+sentinel://s3cr3t-pw@10.0.0.1:26379/m#insecure",
            "redis+sentinel://s3cr3t-pw%zz@10.0.0.1:26379/m",
            "redis+sentinel://s3cr3t-pw%@10.0.0.1:26379/m",
            "redis+sentinel://user:@10.0.0.1:26379/m",
            "redis+sentinel://s3cr3t-pw@h st:26379/m",
        ] {
            let e = err(url);
            assert!(!e.contains(SECRET), "{url}: {e}");
            assert!(e.starts_with("--cluster: "), "{url}: {e}");
            assert!(
                e.contains("redis+sentinel://[SENTINEL_PASSWORD@]"),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn sentinel_data_node_credentials_and_ca_come_from_the_flags() {
        let path = PathBuf::from("/run/secrets/pw");
        let t = resolve_sentinel(
            "redis+sentinel://h:26379/m",
            "--cluster",
            Some("roulette"),
            Some((format!("{SECRET}\r\n"), &path)),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = sentinel(&t);
        assert_eq!(s.data_user.as_deref(), Some("roulette"));
        assert_eq!(s.data_password.as_deref(), Some(SECRET));
        assert_eq!(
            t.details,
            "no TLS; Sentinel without password; data nodes: user roulette, password from /run/secrets/pw"
        );
        let ca = PathBuf::from("ca.pem");
        let e = resolve_sentinel(
            "redis+sentinel://h:26379/m",
            "--cluster",
            None,
            None,
            Some(("x".into(), &ca)),
        )
        .err()
        .unwrap_or_default();
        assert!(e.contains("only applies to TLS"), "{e}");
        let e = resolve_sentinel(
            "redis+sentinel://h:26379/m",
            "--cluster",
            None,
            Some(("\n".into(), &path)),
            None,
        )
        .err()
        .unwrap_or_default();
        assert!(e.contains("empty"), "{e}");
    }
}
