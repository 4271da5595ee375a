use clap::Parser;
use roulette::config::{Command, Config};

fn main() {
    // The one TLS crypto provider of the process (for rediss://), chosen here rather than
    // left to rustls's feature detection, which panics if a dependency ever enables a
    // second one. An error means one is installed already, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::parse();
    if let Some(Command::Healthcheck { addr, timeout }) = config.command {
        let addr = addr.unwrap_or_else(|| roulette::probe::probe_addr(config.listen));
        match roulette::probe::healthcheck(addr, timeout) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("roulette healthcheck: {e}");
                std::process::exit(1);
            }
        }
    }
    roulette::logging::init();
    if let Err(e) = config.validate() {
        eprintln!("roulette: {e}");
        std::process::exit(2);
    }
    std::process::exit(roulette::server::run(config));
}
