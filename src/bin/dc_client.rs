//! dc_client: placeholder until its issue lands. It does not pretend to work.

fn main() {
    eprintln!("dc_client: not implemented yet in this build of distcache-rs");
    std::process::exit(2);
}
