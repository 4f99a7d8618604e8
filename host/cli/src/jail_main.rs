//! `crownest-jail`: the sandbox jail helper alone (see
//! `crownest_sandbox::jail`). Installed next to `crownest`, which uses it
//! when present.

fn main() {
    crownest_sandbox::jail::run_if_invoked();
    eprintln!("crownest-jail is started by `crownest`, not by hand");
    std::process::exit(2);
}
