//! `sufcgi-supervisor`: the privileged supervisor as a program of its own,
//! exec'd by the module in the child it forks from the server's root parent
//! (see `core::supervisor::exec`), so it does not keep the server's memory.

fn main() {
    std::process::exit(sufcgi::core::supervisor::exec::main())
}
