use clap::Parser;
use roulette::config::Config;

fn main() {
    roulette::logging::init();
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("roulette: {e}");
        std::process::exit(2);
    }
    std::process::exit(roulette::server::run(config));
}
