//! A stalled server: a TCP listener on 127.0.0.1 that accepts every connection and never sends a
//! byte (nor closes). What a hung PostgreSQL, a frozen VM or a half-dead load balancer looks like to
//! a client: the connect succeeds, then nothing. Used to prove that drctl gives up within its
//! configured timeouts and says so.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

pub struct Blackhole {
    pub addr: SocketAddr,
    /// The accepted connections, held open until the blackhole is dropped.
    held: Arc<Mutex<Vec<TcpStream>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a blackhole port");
        let addr = listener.local_addr().unwrap();
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let keep = held.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    // read nothing, write nothing: the client's first request is never answered
                    Ok(c) => keep.lock().unwrap().push(c),
                    Err(_) => return,
                }
            }
        });
        Blackhole { addr, held, _thread: thread }
    }

    /// How many connections it has swallowed so far.
    pub fn accepted(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// A `postgres://` URL pointing at the blackhole.
    pub fn postgres_url(&self, db: &str) -> String {
        format!("postgres://postgres@{}/{db}", self.addr)
    }
}
