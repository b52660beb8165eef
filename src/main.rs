use clap::Parser;
use dialgate::cli::{self, Cli};

fn main() {
    // Argon2id takes 19 MiB per hash. glibc's dynamic mmap threshold would soon serve
    // such blocks from thread arenas, where small allocations made between hashes pin
    // them: RSS grew by ~10 MiB per login under concurrency. A fixed threshold keeps
    // large blocks in mmap, returned to the system when freed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    // clap exits 2 on a bad argument; dialgate keeps 2 for system errors and 1 for
    // mistakes the user can fix.
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(if e.use_stderr() { 1 } else { 0 });
    });
    // Rust ignores SIGPIPE, so `println!` to a closed pipe (`dialgate accounts list | head
    // -1`) panics. Commands that print and end take the default action instead, as any Unix
    // filter does; the servers keep ignoring it, so a vanished log reader cannot kill them
    // (their sockets send with MSG_NOSIGNAL either way).
    if !matches!(cli.command, cli::Command::Serve(_) | cli::Command::Demo(_)) {
        #[cfg(unix)]
        // SAFETY: resets one signal's disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DIALGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    // On a worker rather than the main thread: tasks the accept loops spawn then go to
    // that worker's own queue instead of waking another thread through the global one.
    match runtime.block_on(runtime.spawn(cli::run(cli))) {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => {
            eprintln!("error: {:#}", failure.error());
            std::process::exit(failure.exit_code());
        }
        Err(panicked) => {
            eprintln!("error: dialgate failed: {panicked}");
            std::process::exit(2);
        }
    }
}
