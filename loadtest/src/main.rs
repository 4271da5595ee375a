fn main() { eprintln!("loadtest: not yet implemented"); }
