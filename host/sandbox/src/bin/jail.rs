//! A stand-alone jail helper for this crate's own tests; in production the
//! `crownest` binary is the helper (see `crownest_sandbox::jail`).

fn main() {
    crownest_sandbox::jail::run_if_invoked();
    eprintln!("usage: crownest-sandbox-jail {} [options] -- <bwrap> <args>", crownest_sandbox::jail::ARG);
    std::process::exit(2);
}
