//! Embedding the loop in a program that has other things to do.
//!
//! The loop owns its thread while it runs, so the program gives it one and keeps a
//! [`Handle`](sockloop::Handle): the only thing other threads need to stop it. Here
//! `main` plays the client of its own echo server, then stops the server gracefully and
//! reads back the counters `run` returns, so the program can report what was served.

use std::error::Error;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use sockloop::{Builder, services::Echo};

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::init();
    let mut server = Builder::new()
        .listen("tcp://127.0.0.1:0".parse()?)
        .build(Echo)?;
    let endpoint = server.local_addrs().remove(0);
    println!("listening {endpoint}");
    std::io::stdout().flush()?;
    let addr = endpoint
        .host_port()
        .ok_or("not an internet address")?
        .resolve()?[0];
    let handle = server.handle();
    let server_thread = thread::spawn(move || server.run());

    // Whatever the client makes of it, stop the server before reporting.
    let talked = talk(addr);
    handle.shutdown()?;
    let stats = server_thread
        .join()
        .map_err(|_| "the server thread panicked")??;
    talked?;
    println!("stats {stats}");
    Ok(())
}

/// Sends a few messages on one connection and checks that each comes back unchanged.
fn talk(addr: SocketAddr) -> Result<(), Box<dyn Error>> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    for msg in ["hello\n", "a message without a newline", "bye\n"] {
        conn.write_all(msg.as_bytes())?;
        let mut echo = vec![0; msg.len()];
        conn.read_exact(&mut echo)?;
        if echo != msg.as_bytes() {
            return Err(format!("sent {msg:?}, got {:?}", String::from_utf8_lossy(&echo)).into());
        }
        println!("echoed {msg:?}");
    }
    Ok(())
}
