fn main() {
    eprintln!("loadtest: not yet implemented (see issue 3)");
    std::process::exit(2)
}
