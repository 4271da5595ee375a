//! Cluster mode against managed-Redis setups, with real `redis-server`s on free loopback
//! ports: a TLS-only Redis (certificates made here by `openssl`: a private CA and a server
//! certificate for 127.0.0.1) with an ACL user, as ElastiCache, Memorystore and Azure Cache
//! for Redis offer it; a Redis Cluster endpoint, which must be refused; and the promise that
//! the Redis password shows up nowhere: not in logs (even at debug), --help, metrics or
//! errors.
mod util;

use std::ffi::OsStr;
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use util::*;

/// The ACL user's password; distinctive, so a leak cannot hide behind a common word.
const SECRET: &str = "s3cr3t-pw-7f2a91";
/// Long enough for two reconnect attempts (backoff 0.25 s, then 0.5 s) and a start check.
const LINK_WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Files, certificates and Redis processes
// ---------------------------------------------------------------------------------------------

/// Run `openssl` in `dir` with these whitespace-separated arguments (no value has a space).
fn openssl(dir: &TempDir, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir.root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): scripts/test.sh installs it"));
    assert!(
        out.status.success(),
        "openssl {args} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`), a server certificate it signed for 127.0.0.1 and localhost
/// (`server.pem`, `server.key`), and an unrelated CA (`other-ca.pem`). P-256 keys: quick to
/// make.
fn make_pki(dir: &TempDir) {
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for name in ["ca", "other-ca"] {
        openssl(
            dir,
            &format!(
                "req -x509 {key} -keyout {name}.key -out {name}.pem -days 2 -subj /CN={name} \
                 -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign"
            ),
        );
    }
    openssl(
        dir,
        &format!("req -new {key} -keyout server.key -out server.csr -subj /CN=localhost"),
    );
    dir.write(
        "server.ext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
         -days 2 -extfile server.ext",
    );
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// A `redis-server` started with these arguments (persistence off, killed with the test).
struct RedisProc {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl RedisProc {
    fn start(port: u16, args: &[String], dir: &TempDir, log_name: &str) -> RedisProc {
        let log = dir.path(log_name);
        let logging = [
            OsStr::new("--loglevel"),
            OsStr::new("notice"),
            OsStr::new("--dir"),
            dir.root().as_os_str(),
            OsStr::new("--logfile"),
            log.as_os_str(),
        ];
        let child = spawn_redis(logging.into_iter().chain(args.iter().map(OsStr::new)));
        let mut r = RedisProc {
            child: Some(child),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Some(status)) = r.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                panic!("redis-server exited ({status}); log:\n{}", r.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}; log:\n{}",
                r.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// TLS only (no plain-text port), the server certificate of `make_pki`, no client
    /// certificates; the default user off and an ACL user `roulette` limited the way a
    /// managed service's user would be: its own keys and channels, no dangerous commands
    /// except INFO.
    fn tls(dir: &TempDir) -> RedisProc {
        let port = free_port();
        let mut args = words(&format!(
            "--port 0 --tls-port {port} --tls-auth-clients no --user default off \
             --user roulette on >{SECRET} ~rl:* &rl:* +@all -@dangerous +info"
        ));
        for (flag, file) in [
            ("--tls-cert-file", "server.pem"),
            ("--tls-key-file", "server.key"),
            ("--tls-ca-cert-file", "ca.pem"),
        ] {
            args.push(flag.to_string());
            args.push(dir.s(file));
        }
        RedisProc::start(port, &args, dir, "redis-tls.log")
    }

    /// A Redis Cluster node (cluster mode enabled, no slots assigned: a single-node cluster
    /// that answers `cluster_enabled:1`), plain text; besides the default user, `noinfo`
    /// may not run INFO, so only the cluster's replies give it away.
    fn cluster_node(dir: &TempDir, port: u16) -> RedisProc {
        let mut args = words(&format!(
            "--port {port} --cluster-enabled yes --user noinfo on >pw ~* &* +@all -info"
        ));
        args.push("--cluster-config-file".into());
        args.push(dir.s(&format!("nodes-{port}.conf")));
        RedisProc::start(port, &args, dir, &format!("redis-cluster-{port}.log"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        stop_child(&mut self.child);
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

fn wait_log(server: &Server, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let log = server.log_text();
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?} within {within:?}; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cluster node with this Redis setting (flags), two shards, no rate limit.
fn node(name: &str, cluster_args: &[&str]) -> Server {
    let mut args = vec![
        "--shards",
        "2",
        "--rate-limit-per-sec",
        "0",
        "--node-name",
        name,
    ];
    args.extend_from_slice(cluster_args);
    Server::start_with_env(&args, &[("RUST_LOG", "info,roulette::cluster=debug")])
}

/// The node's Redis link failed (`needles` all in the one error line, logged once), stays
/// down through further attempts, and two users of this node still pair and chat.
fn assert_link_refused_and_local_chat_works(n: &mut Server, needles: &[&str]) -> String {
    let line = wait_log(n, "cluster: cannot use Redis at", LINK_WAIT);
    for needle in needles {
        assert!(
            line.to_ascii_lowercase()
                .contains(&needle.to_ascii_lowercase()),
            "the error does not say {needle:?}: {line}"
        );
    }
    let tried = n
        .metric("roulette_cluster_redis_connects_total")
        .unwrap_or(0.0);
    n.wait_metric_at_least(
        "roulette_cluster_redis_connects_total",
        tried + 2.0,
        LINK_WAIT,
    );
    assert_eq!(n.metric("roulette_cluster_redis_up"), Some(0.0));
    assert_eq!(
        n.log_text().matches("cluster: cannot use Redis at").count(),
        1,
        "logged once, not once per attempt:\n{}",
        n.log_text()
    );
    let (mut a, mut b) = pair(n.addr);
    exchange(&mut a, &mut b, 20, "local");
    n.assert_running();
    line
}

/// Run the binary, which is expected to exit by itself within 20 s (killed and reported
/// otherwise); stdout and stderr kept.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = TempDir::new("run");
    let (out_path, err_path) = (dir.path("stdout"), dir.path("stderr"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roulette"));
    cmd.args(args);
    clean_env(&mut cmd);
    cmd.env("RUST_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let file = |p: &PathBuf| std::fs::File::create(p).expect("create an output file");
    cmd.stdin(Stdio::null())
        .stdout(file(&out_path))
        .stderr(file(&err_path));
    let mut child = cmd.spawn().expect("run the roulette binary");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &PathBuf| std::fs::read(p).unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout: read(&out_path),
            stderr: read(&err_path),
        },
        None => panic!(
            "roulette {args:?} did not exit within 20 s; output:\n{}{}",
            String::from_utf8_lossy(&read(&out_path)),
            String::from_utf8_lossy(&read(&err_path))
        ),
    }
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn two_nodes_pair_and_relay_through_a_tls_redis_as_an_acl_user() {
    let _g = serial();
    let _w = watchdog(90);
    let dir = TempDir::new("tls-pair");
    make_pki(&dir);
    let redis = RedisProc::tls(&dir);
    let url = format!("rediss://roulette@127.0.0.1:{}", redis.port);
    let pw = dir.write("password", &format!("{SECRET}\n"));
    let pw = pw.to_string_lossy().into_owned();
    let ca = dir.s("ca.pem");
    let flags = [
        "--cluster",
        &url,
        "--cluster-password-file",
        &pw,
        "--cluster-ca-file",
        &ca,
    ];
    let mut n1 = node("n1", &flags);
    let mut n2 = node("n2", &flags);
    for n in [&n1, &n2] {
        let line = wait_log(n, "cluster: connected to Redis", LINK_WAIT);
        assert!(line.contains(&format!("at {url} ")), "{line}");
        let start = wait_log(n, "cluster mode: node", SOON);
        assert!(
            start.contains(&format!(
                "using {url} (TLS, trusting only the 1 CA certificate of {ca}; password from {pw})"
            )),
            "{start}"
        );
    }

    let (mut a, mut b) = pair_tagged(n1.addr, n2.addr, "tls");
    exchange(&mut a, &mut b, 200, "over tls");
    // And the other way round: a user of n2 waits, one of n1 finds.
    let (mut c, mut d) = pair_tagged(n2.addr, n1.addr, "tls-too");
    exchange(&mut c, &mut d, 50, "again");
    for n in [&n1, &n2] {
        assert_eq!(n.metric("roulette_cluster_redis_up"), Some(1.0));
        assert!(
            n.metric("roulette_cluster_records_received_total")
                .unwrap_or(0.0)
                >= 250.0
        );
    }
    n1.assert_running();
    n2.assert_running();
}

#[test]
fn a_wrong_ca_password_or_scheme_keeps_the_link_down_says_why_and_local_chat_works() {
    let _g = serial();
    let _w = watchdog(150);
    let dir = TempDir::new("tls-fail");
    make_pki(&dir);
    let redis = RedisProc::tls(&dir);
    let port = redis.port.to_string();
    let url = format!("rediss://roulette@127.0.0.1:{port}");
    let good_pw = dir.write("password", &format!("{SECRET}\n"));
    let good_pw = good_pw.to_string_lossy().into_owned();
    let bad_pw = dir.write("wrong-password", "not-the-password\n");
    let bad_pw = bad_pw.to_string_lossy().into_owned();
    let (ca, other_ca) = (dir.s("ca.pem"), dir.s("other-ca.pem"));
    let plain = format!("redis://roulette@127.0.0.1:{port}");

    let mut lines = Vec::new();
    // Trusting only a CA that did not sign the server's certificate.
    let mut n = node(
        "wrong-ca",
        &[
            "--cluster",
            &url,
            "--cluster-password-file",
            &good_pw,
            "--cluster-ca-file",
            &other_ca,
        ],
    );
    lines.push(assert_link_refused_and_local_chat_works(
        &mut n,
        &[
            "invalid peer certificate",
            "UnknownIssuer",
            "--cluster-ca-file",
        ],
    ));
    drop(n);
    // A private CA but no --cluster-ca-file: the built-in WebPKI roots do not know it.
    let mut n = node(
        "no-ca",
        &["--cluster", &url, "--cluster-password-file", &good_pw],
    );
    lines.push(assert_link_refused_and_local_chat_works(
        &mut n,
        &[
            "UnknownIssuer",
            "give its certificate with --cluster-ca-file",
        ],
    ));
    drop(n);
    // The right TLS setup, the wrong password.
    let mut n = node(
        "wrong-pw",
        &[
            "--cluster",
            &url,
            "--cluster-password-file",
            &bad_pw,
            "--cluster-ca-file",
            &ca,
        ],
    );
    lines.push(assert_link_refused_and_local_chat_works(
        &mut n,
        &["authentication failed", "--cluster-password-file"],
    ));
    drop(n);
    // Plain text against the TLS port.
    let mut n = node(
        "plain",
        &["--cluster", &plain, "--cluster-password-file", &good_pw],
    );
    lines.push(assert_link_refused_and_local_chat_works(
        &mut n,
        &["if it expects TLS", "use a rediss:// URL"],
    ));
    drop(n);
    for l in &lines {
        eprintln!("{l}");
    }
}

#[test]
fn a_redis_cluster_endpoint_is_refused_at_start_and_when_found_later() {
    let _g = serial();
    let _w = watchdog(120);
    let dir = TempDir::new("rcluster");
    let port = free_port();
    let mut rc = RedisProc::cluster_node(&dir, port);

    // Found at start, by INFO: exit 2 with the reason and the fix.
    let url = format!("redis://127.0.0.1:{port}");
    let out = run_to_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--cluster",
            &url,
        ],
        &[],
    );
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for needle in [
        "is a Redis Cluster endpoint",
        "cluster_enabled:1",
        "does not follow MOVED",
        "standalone primary",
        "ElastiCache with cluster mode disabled",
        "Memorystore for Redis (not Memorystore for Redis Cluster)",
        "Azure Cache for Redis Basic, Standard or Premium",
    ] {
        assert!(text.contains(needle), "missing {needle:?}:\n{text}");
    }
    assert!(!text.contains("roulette listening on"), "{text}");
    eprintln!(
        "{}",
        text.lines().find(|l| l.contains("ERROR")).unwrap_or("")
    );

    // A user that may not run INFO: the cluster's own replies give it away.
    let url = format!("redis://noinfo:pw@127.0.0.1:{port}");
    let out = run_to_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--cluster",
            &url,
        ],
        &[],
    );
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("is a Redis Cluster endpoint"), "{text}");
    assert!(
        text.contains("a CLUSTERDOWN reply") || text.contains("a CROSSSLOT reply"),
        "{text}"
    );
    rc.stop();

    // Unreachable at start: the node starts alone; a cluster endpoint that appears later is
    // an error logged once, and the node keeps pairing its own clients.
    let mut n = node(
        "later",
        &["--cluster", &format!("redis://127.0.0.1:{port}")],
    );
    wait_log(&n, "cluster: Redis unreachable at", LINK_WAIT);
    let _rc = RedisProc::cluster_node(&dir, port);
    let line = wait_log(&n, "is a Redis Cluster endpoint", LINK_WAIT);
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("keeps retrying"), "{line}");
    let tried = n
        .metric("roulette_cluster_redis_connects_total")
        .unwrap_or(0.0);
    n.wait_metric_at_least(
        "roulette_cluster_redis_connects_total",
        tried + 2.0,
        LINK_WAIT,
    );
    assert_eq!(n.metric("roulette_cluster_redis_up"), Some(0.0));
    assert_eq!(
        n.log_text().matches("is a Redis Cluster endpoint").count(),
        1,
        "logged once:\n{}",
        n.log_text()
    );
    let (mut a, mut b) = pair(n.addr);
    exchange(&mut a, &mut b, 20, "alone");
    n.assert_running();
}

#[test]
fn the_redis_password_appears_in_no_log_help_text_metric_or_error() {
    let _g = serial();
    let _w = watchdog(150);
    let dir = TempDir::new("secrets");
    make_pki(&dir);
    let mut redis = RedisProc::tls(&dir);
    let port = redis.port;
    let ca = dir.s("ca.pem");
    let pw_file = dir.write("password", &format!("{SECRET}\n"));
    let pw_file = pw_file.to_string_lossy().into_owned();
    let in_url_wrong_user = format!("rediss://user:{SECRET}@127.0.0.1:{port}");
    let in_url = format!("rediss://roulette:{SECRET}@127.0.0.1:{port}");
    let url_file = dir.write("url", &format!("{in_url}\n"));
    let url_file = url_file.to_string_lossy().into_owned();
    let unreachable = format!("rediss://user:{SECRET}@127.0.0.1:{}", free_port());
    let mut checked = Vec::new();
    let mut check = |what: &str, text: &str| {
        assert!(
            !text.contains(SECRET),
            "the password appears in {what}:\n{text}"
        );
        checked.push(format!("{what}: {} bytes", text.len()));
    };

    // Nodes at debug level, stdout folded into the captured stderr.
    let wrap = ["sh", "-c", "exec \"$0\" \"$@\" 1>&2"];
    let start = |env: &[(&str, &str)], args: &[&str]| {
        let mut e = vec![("RUST_LOG", "debug")];
        e.extend_from_slice(env);
        let mut a = vec!["--shards", "1"];
        a.extend_from_slice(args);
        Server::start_wrapped(&wrap, &a, &e)
    };
    // 1. In the URL, through the environment; the user does not exist: WRONGPASS.
    let mut wrong_user = start(
        &[
            ("ROULETTE_CLUSTER", in_url_wrong_user.as_str()),
            ("ROULETTE_CLUSTER_CA_FILE", ca.as_str()),
        ],
        &[],
    );
    wait_log(&wrong_user, "authentication failed", LINK_WAIT);
    // 2. From the password file, for the ACL user: connects.
    let mut from_file = start(
        &[(
            "ROULETTE_CLUSTER",
            format!("rediss://roulette@127.0.0.1:{port}").as_str(),
        )],
        &[
            "--cluster-password-file",
            &pw_file,
            "--cluster-ca-file",
            &ca,
        ],
    );
    // 3. The whole URL, password included, from a file: connects.
    let mut via_url_file = start(
        &[
            ("ROULETTE_CLUSTER_URL_FILE", url_file.as_str()),
            ("ROULETTE_CLUSTER_CA_FILE", ca.as_str()),
        ],
        &[],
    );
    // 4. Nothing listens there.
    let mut nowhere = start(&[("ROULETTE_CLUSTER", unreachable.as_str())], &[]);
    wait_log(&nowhere, "cluster: Redis unreachable at", LINK_WAIT);
    for n in [&from_file, &via_url_file] {
        wait_log(n, "cluster: connected to Redis", LINK_WAIT);
        // Through the Redis path: a user alone is queued cluster-wide (debug logs of it).
        let mut u = chat(n.addr);
        u.send_text(&find_msg(&[]));
        u.expect_json(WAITING);
        n.wait_metric_at_least("roulette_cluster_queued_total", 1.0, SOON);
    }
    for (what, n) in [
        ("wrong user", &wrong_user),
        ("password file", &from_file),
        ("URL file", &via_url_file),
        ("unreachable", &nowhere),
    ] {
        let r = get(n.metrics_addr, "/metrics");
        check(&format!("{what}: metrics"), &r.body_str());
    }
    // 5. Redis goes away under the connected nodes: link-loss errors.
    redis.stop();
    for n in [&from_file, &via_url_file] {
        n.wait_metric_at_least("roulette_cluster_redis_link_losses_total", 1.0, LINK_WAIT);
        let tried = n
            .metric("roulette_cluster_redis_connects_total")
            .unwrap_or(0.0);
        n.wait_metric_at_least(
            "roulette_cluster_redis_connects_total",
            tried + 1.0,
            LINK_WAIT,
        );
    }
    for (what, n) in [
        ("wrong user", &mut wrong_user),
        ("password file", &mut from_file),
        ("URL file", &mut via_url_file),
        ("unreachable", &mut nowhere),
    ] {
        n.assert_running();
        // SIGTERM, so the shutdown lines are in the log too.
        n.signal(libc::SIGTERM);
        assert!(n.wait_exit(Duration::from_secs(15)).is_some());
        let log = n.log_text();
        assert!(log.contains("cluster mode: node"), "{log}");
        check(&format!("{what}: log"), &log);
    }
    // The start line names the Redis without the password.
    assert!(
        wrong_user.log_text().contains(&format!(
            "using rediss://user@127.0.0.1:{port} (TLS, trusting only"
        )),
        "{}",
        wrong_user.log_text()
    );

    // --help with the variable set (clap would print it as [env: ROULETTE_CLUSTER=...]).
    let out = run_to_exit(&["--help"], &[("ROULETTE_CLUSTER", &in_url)]);
    assert!(out.status.success());
    assert!(text_of(&out).contains("[env: ROULETTE_CLUSTER]"));
    check("--help", &text_of(&out));
    // Errors at start: each exits 2 with a message that does not quote the URL.
    let listen = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
    let malformed = [
        format!("rediss://user:{SECRET}@127.0.0.1:notaport"),
        format!("rediss://user:{SECRET}@127.0.0.1:6379/#insecure"),
        format!("rediss://user:{SECRET}@127.0.0.1:6379/db"),
        format!("http://user:{SECRET}@127.0.0.1:6379"),
        format!("user:{SECRET}@127.0.0.1:6379"),
    ];
    for url in &malformed {
        let out = run_to_exit(&listen, &[("ROULETTE_CLUSTER", url)]);
        assert_eq!(out.status.code(), Some(2), "{}", text_of(&out));
        assert!(text_of(&out).contains("--cluster: "), "{}", text_of(&out));
        check("a malformed URL's error", &text_of(&out));
        let f = dir.write("bad-url", url);
        let out = run_to_exit(&["--cluster-url-file", &f.to_string_lossy()], &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text_of(&out));
        check("a malformed URL file's error", &text_of(&out));
    }
    // A password in the URL and a password file.
    let mut a = listen.to_vec();
    a.extend_from_slice(&["--cluster-password-file", &pw_file]);
    let out = run_to_exit(&a, &[("ROULETTE_CLUSTER", &in_url)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text_of(&out).contains("already has a password; give it in one place only"),
        "{}",
        text_of(&out)
    );
    check("the two-passwords error", &text_of(&out));
    // The URL twice (variable and file): clap's conflict error.
    let out = run_to_exit(
        &["--cluster-url-file", &url_file],
        &[("ROULETTE_CLUSTER", &in_url)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text_of(&out).contains("cannot be used with"),
        "{}",
        text_of(&out)
    );
    check("the conflict error", &text_of(&out));
    eprintln!("checked for the password: {}", checked.join("; "));
}

/// `--pin-cores false` starts without pinning and without the warning about it.
#[test]
fn pin_cores_false_runs_unpinned_without_a_warning() {
    let _g = serial();
    let _w = watchdog(30);
    let mut s = Server::start(&["--shards", "2", "--pin-cores", "false"]);
    let (mut a, mut b) = pair(s.addr);
    exchange(&mut a, &mut b, 5, "unpinned");
    assert!(!s.log_contains("not pinned"), "{}", s.log_text());
    // Each shard thread may run on every CPU the process may use.
    let allowed = std::fs::read_to_string(format!("/proc/{}/status", s.pid()))
        .ok()
        .and_then(|st| {
            st.lines().find_map(|l| {
                l.strip_prefix("Cpus_allowed_list:")
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_default();
    for entry in std::fs::read_dir(format!("/proc/{}/task", s.pid())).expect("tasks") {
        let task = entry.expect("task").path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.starts_with("shard-") {
            let mut status = String::new();
            std::fs::File::open(task.join("status"))
                .and_then(|mut f| f.read_to_string(&mut status))
                .expect("task status");
            let mine = status
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Cpus_allowed_list:")
                        .map(|v| v.trim().to_string())
                })
                .unwrap_or_default();
            assert_eq!(mine, allowed, "{} is pinned", comm.trim());
        }
    }
    s.assert_running();
}
