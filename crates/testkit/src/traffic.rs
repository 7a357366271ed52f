//! Real TCP and UDP traffic for the kernel tests: servers that say who they are and whom they
//! saw, and clients that tell "refused" apart from "dropped".
//!
//! Rulesets are only worth what packets experience, and the experience has three outcomes a
//! test must distinguish: an answer (from which endpoint? with which source address did the
//! endpoint see the client?), a fast refusal (REJECT: ICMP port unreachable) and silence (DROP:
//! a timeout). Servers and clients are threads of the test process inside a namespace
//! ([`NetNs::spawn`], [`NetNs::exec`]), so the tests depend on no helper program.
//!
//! Protocol: a client connects (TCP) or sends one datagram (UDP); the server answers one line,
//! `<server name> <client address as the server saw it>`, and closes.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};

use crate::NetNs;

/// How long clients wait for a connection or an answer unless told otherwise: long enough for
/// a loaded CI machine, short next to the suite's budget.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often an idle server checks whether its test has ended.
const STOP_POLL: Duration = Duration::from_millis(50);

/// UDP clients take their source ports from this range, below Linux's ephemeral ports, each
/// port once (until the range wraps): see [`udp`].
const UDP_CLIENT_PORTS: std::ops::Range<u16> = 20000..32000;

static UDP_CLIENTS: AtomicUsize = AtomicUsize::new(0);

fn next_udp_port() -> u16 {
    let n = UDP_CLIENTS.fetch_add(1, Ordering::Relaxed);
    let span = usize::from(UDP_CLIENT_PORTS.end - UDP_CLIENT_PORTS.start);
    UDP_CLIENT_PORTS.start + u16::try_from(n % span).expect("the span fits in u16")
}

/// What a server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The server's name (the pod's name in a [`crate::topology::Topology`]).
    pub server: String,
    /// The client's address as the server saw it: the client's own address unless the packet
    /// was masqueraded on the way.
    pub source: IpAddr,
}

/// Why no answer came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Refused: a TCP RST or an ICMP port unreachable (what nftables' `reject` sends).
    Refused,
    /// Nothing came back in time (what `drop` looks like).
    TimedOut,
    /// Anything else, with the error.
    Other(String),
}

impl Failure {
    fn from_io(error: &std::io::Error) -> Failure {
        match error.kind() {
            ErrorKind::ConnectionRefused => Failure::Refused,
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Failure::TimedOut,
            _ => Failure::Other(format!("{:?}: {error}", error.kind())),
        }
    }
}

/// The outcome of one connection or datagram.
pub type Outcome = Result<Reply, Failure>;

/// A TCP and UDP server on a set of ports, answering on every address of its namespace (both
/// families). Stops, and lets its namespace go, when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Starts serving TCP and UDP on each port inside `ns`, answering as `name`. Returns once
    /// every socket is bound, so clients may connect immediately.
    pub fn start(ns: &NetNs, name: &str, ports: &[u16]) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::new();
        for &port in ports {
            for udp in [false, true] {
                let (stop, ready, name) = (Arc::clone(&stop), ready_tx.clone(), name.to_string());
                threads.push(ns.spawn(move || {
                    let bound = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
                    if udp {
                        serve_udp(bound, &name, &stop, &ready);
                    } else {
                        serve_tcp(bound, &name, &stop, &ready);
                    }
                }));
            }
        }
        drop(ready_tx);
        let server = Server { stop, threads };
        for _ in 0..ports.len() * 2 {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("server {name} in {}: {e}", ns.name()),
                Err(_) => panic!("server {name} in {}: a thread died", ns.name()),
            }
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            // A thread that panicked has already reported it; the test fails elsewhere.
            let _ = thread.join();
        }
    }
}

/// `[::]:port` with `IPV6_V6ONLY` off (Linux's default) also accepts IPv4, as mapped
/// addresses, which [`IpAddr::to_canonical`] turns back into IPv4.
fn serve_tcp(
    bound: SocketAddr,
    name: &str,
    stop: &AtomicBool,
    ready: &mpsc::Sender<Result<(), String>>,
) {
    let listener = match TcpListener::bind(bound).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    }) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(format!("binding TCP {bound}: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let timeout = u16::try_from(STOP_POLL.as_millis()).unwrap_or(u16::MAX);
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if !matches!(nix::poll::poll(&mut fds, timeout), Ok(n) if n > 0) {
            continue;
        }
        while let Ok((mut stream, peer)) = listener.accept() {
            let answer = format!("{name} {}\n", peer.ip().to_canonical());
            // The client may already have given up; that is its problem, not the server's.
            let _ = stream
                .set_nonblocking(false)
                .and_then(|()| stream.write_all(answer.as_bytes()));
        }
    }
}

fn serve_udp(
    bound: SocketAddr,
    name: &str,
    stop: &AtomicBool,
    ready: &mpsc::Sender<Result<(), String>>,
) {
    let socket = match UdpSocket::bind(bound).and_then(|s| {
        s.set_read_timeout(Some(STOP_POLL))?;
        Ok(s)
    }) {
        Ok(socket) => socket,
        Err(e) => {
            let _ = ready.send(Err(format!("binding UDP {bound}: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut buffer = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, peer)) = socket.recv_from(&mut buffer) {
            let answer = format!("{name} {}\n", peer.ip().to_canonical());
            let _ = socket.send_to(answer.as_bytes(), peer);
        }
    }
}

fn parse(answer: &str) -> Outcome {
    let mut words = answer.split_whitespace();
    match (words.next(), words.next().map(str::parse::<IpAddr>)) {
        (Some(server), Some(Ok(source))) => Ok(Reply {
            server: server.to_string(),
            source,
        }),
        _ => Err(Failure::Other(format!("unexpected answer {answer:?}"))),
    }
}

/// Connects over TCP from the calling thread's namespace and reads the answer.
pub fn tcp(to: SocketAddr, timeout: Duration) -> Outcome {
    let mut stream = TcpStream::connect_timeout(&to, timeout).map_err(|e| Failure::from_io(&e))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| Failure::from_io(&e))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| Failure::from_io(&e))?;
    parse(&answer)
}

/// Sends one datagram from the calling thread's namespace and waits for the answer.
///
/// The source port is one this process has not used before, so every call is a new conntrack
/// flow: an ephemeral port could repeat an earlier flow's 5-tuple, whose conntrack entry would
/// still lead to the endpoint chosen back then (tests that mean to reuse a flow keep a socket).
pub fn udp(to: SocketAddr, timeout: Duration) -> Outcome {
    let any: IpAddr = match to {
        SocketAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
        SocketAddr::V6(_) => IpAddr::from(Ipv6Addr::UNSPECIFIED),
    };
    let socket = (0..16)
        .map(|_| UdpSocket::bind((any, next_udp_port())))
        .find_map(Result::ok)
        .ok_or_else(|| Failure::Other("no free UDP client port".to_string()))?;
    socket.connect(to).map_err(|e| Failure::from_io(&e))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| Failure::from_io(&e))?;
    socket.send(b"who\n").map_err(|e| Failure::from_io(&e))?;
    let mut buffer = [0u8; 512];
    let n = socket.recv(&mut buffer).map_err(|e| Failure::from_io(&e))?;
    parse(&String::from_utf8_lossy(&buffer[..n]))
}

/// A UDP socket kept open, connected to one address: every datagram it sends belongs to the
/// same conntrack flow, as a long-lived UDP client's (a DNS resolver's) do.
pub struct UdpFlow {
    socket: UdpSocket,
}

impl UdpFlow {
    /// Opens the socket inside `ns` (it stays in that namespace whichever thread uses it).
    pub fn open(ns: &NetNs, to: SocketAddr) -> Result<UdpFlow, Failure> {
        ns.exec(|| {
            let any: IpAddr = match to {
                SocketAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
                SocketAddr::V6(_) => IpAddr::from(Ipv6Addr::UNSPECIFIED),
            };
            let socket = (0..16)
                .map(|_| UdpSocket::bind((any, next_udp_port())))
                .find_map(Result::ok)
                .ok_or_else(|| Failure::Other("no free UDP client port".to_string()))?;
            socket.connect(to).map_err(|e| Failure::from_io(&e))?;
            Ok(UdpFlow { socket })
        })
    }

    /// Sends one datagram on the flow and waits at most `timeout` for the answer.
    pub fn ask(&self, timeout: Duration) -> Outcome {
        self.socket
            .set_read_timeout(Some(timeout))
            .map_err(|e| Failure::from_io(&e))?;
        self.socket
            .send(b"who\n")
            .map_err(|e| Failure::from_io(&e))?;
        let mut buffer = [0u8; 512];
        let n = self
            .socket
            .recv(&mut buffer)
            .map_err(|e| Failure::from_io(&e))?;
        parse(&String::from_utf8_lossy(&buffer[..n]))
    }
}

/// How a series of connections went: answers per server, and every failure.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Number of answers from each server.
    pub servers: BTreeMap<String, usize>,
    /// Every source address the servers saw.
    pub sources: Vec<IpAddr>,
    /// Every failure, in order.
    pub failures: Vec<Failure>,
}

impl Tally {
    /// Counts a series of outcomes.
    pub fn of(outcomes: &[Outcome]) -> Tally {
        let mut tally = Tally::default();
        for outcome in outcomes {
            match outcome {
                Ok(reply) => {
                    *tally.servers.entry(reply.server.clone()).or_default() += 1;
                    if !tally.sources.contains(&reply.source) {
                        tally.sources.push(reply.source);
                    }
                }
                Err(failure) => tally.failures.push(failure.clone()),
            }
        }
        tally
    }

    /// The names of the servers that answered, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.servers.keys().map(String::as_str).collect()
    }
}
