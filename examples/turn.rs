//! Driving the loop one turn at a time, beside other work on the same thread.
//!
//! `run()` hands the thread to the loop until it shuts down. A program with a loop of
//! its own (a game tick, a UI, another event source) calls `turn` instead: each call
//! polls for at most the timeout given, serves what is ready and returns, so the
//! program's own work runs at least that often and with no locks, since the server's
//! state (`stats()`, `service()`) can be read between turns on the same thread.
//!
//! Here the other work is a status line, printed when the counters change but at most
//! once a second, and a stop rule: after N connections (first argument, default 3)
//! have come and gone, the program shuts the server down and finishes the drain by
//! turning until `is_finished()`.

use std::error::Error;
use std::io::Write;
use std::time::{Duration, Instant};

use sockloop::{Builder, services::Echo};

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::init();
    let wanted: u64 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|e| format!("connection count {n:?}: {e}"))?,
        None => 3,
    };
    let mut server = Builder::new()
        .listen("tcp://127.0.0.1:0".parse()?)
        .build(Echo)?;
    for addr in server.local_addrs() {
        println!("listening {addr}");
    }
    std::io::stdout().flush()?;

    let mut shown = None;
    let mut last_status: Option<Instant> = None;
    let mut stopping = false;
    while !server.is_finished() {
        server.turn(Some(Duration::from_millis(100)))?;

        // The program's own work, between turns.
        let s = server.stats();
        let now = (s.accepted, s.active, s.closed, s.bytes_in, s.bytes_out);
        let quiet = last_status.is_some_and(|t| t.elapsed() < Duration::from_secs(1));
        if shown != Some(now) && !quiet {
            let (accepted, active, closed, bytes_in, bytes_out) = now;
            println!(
                "status accepted={accepted} active={active} closed={closed} \
                 bytes_in={bytes_in} bytes_out={bytes_out}"
            );
            shown = Some(now);
            last_status = Some(Instant::now());
        }
        if s.closed >= wanted && !stopping {
            // A graceful shutdown: it completes over the next turns.
            server.handle().shutdown()?;
            stopping = true;
        }
    }
    println!("done: served {} connections", server.stats().closed);
    Ok(())
}
