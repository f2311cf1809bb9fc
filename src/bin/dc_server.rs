//! dc_server: placeholder until its issue lands. It does not pretend to work.

fn main() {
    eprintln!("dc_server: not implemented yet in this build of distcache-rs");
    std::process::exit(2);
}
