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
    pub client: redis::Client,
    /// `scheme://[user@]host:port[/db]`: what logs call this Redis. No password.
    pub shown: String,
    /// How the link is secured and authenticated, for the startup line.
    pub details: String,
}

/// What a configured URL looks like, for errors.
const URL_FORM: &str = "redis://[[USER]:PASSWORD@]HOST:PORT[/DB] or rediss://... for TLS";

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
        client,
        shown,
        details: format!("{trust}; {password_from}"),
    })
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

pub fn explain(e: &redis::RedisError, client: &redis::Client) -> Explained {
    let tls = matches!(
        client.get_connection_info().addr(),
        redis::ConnectionAddr::TcpTls { .. }
    );
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
    let Ok(mut con) = t.client.get_connection_with_timeout(TIMEOUT) else {
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
        let r = t.client.get_connection_info().redis_settings();
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
        let r = t.client.get_connection_info().redis_settings();
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
}
