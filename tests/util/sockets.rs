//! Sockets beyond a plain connect: abrupt resets and chosen source addresses for fault
//! injection, and a free port for a process to listen on.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

/// Set `SO_LINGER {on, 0}`: closing the socket then sends a TCP reset instead of a FIN.
pub fn set_linger_zero(s: &TcpStream) {
    use std::os::unix::io::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        r,
        0,
        "setsockopt(SO_LINGER): {}",
        io::Error::last_os_error()
    );
}

/// Abort the connection: `SO_LINGER 0`, then close (the peer gets a RST, not a FIN).
pub fn reset(s: TcpStream) {
    set_linger_zero(&s);
    drop(s);
}

/// Connect to `dst` from the source address `src` (any 127.0.0.0/8 address works on
/// loopback without setup), so that many connections do not exhaust one address's ports.
/// The port is chosen at connect time (`IP_BIND_ADDRESS_NO_PORT`), as for a plain connect.
pub fn connect_from(src: std::net::Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    connect_from_with_rcvbuf(src, dst, None)
}

/// As `connect_from`, with `SO_RCVBUF` set before the connect (so the window the socket
/// offers is small from the start) when `rcvbuf` is given.
pub fn connect_from_with_rcvbuf(
    src: std::net::Ipv4Addr,
    dst: SocketAddr,
    rcvbuf: Option<libc::c_int>,
) -> io::Result<TcpStream> {
    use std::os::unix::io::FromRawFd;
    let SocketAddr::V4(dst) = dst else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "IPv4 only"));
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket syscalls on a descriptor we own; the TcpStream takes ownership
    // of it (and closes it on every error path via drop).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        roulette::sys::set_int(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
        if let Some(bytes) = rcvbuf {
            roulette::sys::set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)?;
        }
        let local = sin(src, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sin(*dst.ip(), dst.port());
        loop {
            if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(s)
    }
}

/// A loopback port nobody listens on now (for a process to bind, or to be refused at).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
