//! dc_snoop: placeholder until its issue lands. It does not pretend to work.

fn main() {
    eprintln!("dc_snoop: not implemented yet in this build of distcache-rs");
    std::process::exit(2);
}
