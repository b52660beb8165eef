//! `loadtest baseline-server` (hidden): the protocol ceiling, a FastAGI responder that
//! parses nothing and answers one canned line.

use std::{net::SocketAddr, time::Duration};

use anyhow::anyhow;
use clap::Args;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::Failure;

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4599")]
    pub listen: SocketAddr,
}

/// The canned-reply responder.
pub(super) async fn run(args: BaselineArgs) -> Result<(), Failure> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::System(anyhow!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::System(e.into()))?;
    eprintln!("baseline FastAGI responder listening on {addr}");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(baseline_call(stream));
                }
                // Out of descriptors and the like: back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            _ = crate::cli::serve::shutdown_signal() => return Ok(()),
        }
    }
}

async fn baseline_call(mut stream: TcpStream) {
    stream.set_nodelay(true).ok();
    let mut buf = [0u8; 1024];
    // Read to the blank line that ends the environment (`\n\n`).
    let mut previous_newline = false;
    let mut leftover = 0..0;
    'env: loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' {
                if previous_newline {
                    leftover = i + 1..n;
                    break 'env;
                }
                previous_newline = true;
            } else if b != b'\r' {
                previous_newline = false;
            }
        }
    }
    if stream
        .write_all(b"SET VARIABLE DIALGATE_RESULT pong\n")
        .await
        .is_err()
    {
        return;
    }
    // One reply line (it may have arrived with the environment).
    if buf[leftover].contains(&b'\n') {
        return;
    }
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if buf[..n].contains(&b'\n') => return,
            Ok(_) => {}
        }
    }
}
