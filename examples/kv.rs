//! A protocol of your own: a key-value store shared by every connection.
//!
//! Shared state lives in the service, with no lock: the loop calls it on one thread.
//! Bytes come in chunks of any size, so each connection keeps its unfinished line
//! until its `\n` arrives. Try `cargo run --example kv tcp://127.0.0.1:7000` and `nc`.

use std::{collections::HashMap, error::Error, io::Write};

use sockloop::{Builder, Context, Service};

/// The longest line accepted, `\n` excluded: bounds what a connection keeps between reads.
const MAX_LINE: usize = 1024;

#[derive(Default)]
struct Kv {
    store: HashMap<String, String>,
}

impl Kv {
    /// Answers `SET key value`, `GET key` or `DEL key` with one line.
    fn command(&mut self, line: &str, ctx: &mut Context<'_>) {
        match line.splitn(3, ' ').collect::<Vec<_>>()[..] {
            ["SET", key, value] => {
                self.store.insert(key.into(), value.into());
                ctx.write(b"OK\n");
            }
            ["GET", key] => match self.store.get(key) {
                Some(value) => ctx.write_vectored(&[b"VALUE ", value.as_bytes(), b"\n"]),
                None => ctx.write(b"NOT_FOUND\n"),
            },
            ["DEL", key] => match self.store.remove(key) {
                Some(_) => ctx.write(b"DELETED\n"),
                None => ctx.write(b"NOT_FOUND\n"),
            },
            _ => ctx.write(b"ERR unknown command\n"),
        }
    }
}

impl Service for Kv {
    /// What the connection has sent past its last `\n`.
    type State = Vec<u8>;

    fn open(&mut self, _ctx: &mut Context<'_>) -> Vec<u8> {
        Vec::new()
    }

    fn data(&mut self, pending: &mut Vec<u8>, data: &[u8], ctx: &mut Context<'_>) {
        pending.extend_from_slice(data);
        let mut start = 0;
        // Only a `\n` within MAX_LINE bytes of the line's start ends a line we accept.
        let newline = |buf: &[u8]| buf.iter().take(MAX_LINE + 1).position(|&b| b == b'\n');
        while let Some(len) = newline(&pending[start..]) {
            let line = String::from_utf8_lossy(&pending[start..start + len]);
            self.command(line.trim_end_matches('\r'), ctx);
            start += len + 1;
        }
        pending.drain(..start);
        if pending.len() > MAX_LINE {
            ctx.write(b"ERR line too long\n");
            ctx.close(); // what was written is still sent, then the connection closes
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::init();
    let url = std::env::args().nth(1);
    let mut server = Builder::new()
        .listen(url.as_deref().unwrap_or("tcp://127.0.0.1:0").parse()?)
        .handle_signals(true) // SIGINT/SIGTERM: a graceful shutdown, then run() returns
        .build(Kv::default())?;
    for addr in server.local_addrs() {
        println!("listening {addr}");
    }
    std::io::stdout().flush()?;
    eprintln!("stats {}", server.run()?);
    Ok(())
}
