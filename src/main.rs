//! The `leastconn` program. Everything lives in the library; this only turns
//! the outcome into an exit status.

use std::process::ExitCode;

fn main() -> ExitCode {
    match leastconn::cli::run(std::env::args_os().skip(1)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leastconn: {e:#}");
            ExitCode::from(2)
        }
    }
}
