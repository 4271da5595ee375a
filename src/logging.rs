//! Logging through `log` + `env_logger` (RUST_LOG, default `info`). Under systemd (journald
//! stream on stderr) lines carry a `<N>` priority prefix and no timestamp, which journald
//! turns into the message priority.
use std::io::Write;

pub fn init() {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        b.format(|buf, record| {
            let prio = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{prio}>{}", record.args())
        });
    }
    let _ = b.try_init();
}
