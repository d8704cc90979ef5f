//! The `leastconn` program. Everything lives in the library; this only turns
//! the outcome into an exit status, in one place for every command.

use std::io;
use std::process::ExitCode;

fn main() -> ExitCode {
    match leastconn::cli::run(std::env::args_os().skip(1)) {
        Ok(code) => code,
        // The reader went away (`leastconn ... | head -1`): nothing more can
        // be said to anyone, and nothing went wrong.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leastconn: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether a closed standard output (or any closed pipe) caused the error.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
