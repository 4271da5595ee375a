//! The few socket options std does not offer, as safe functions over a raw descriptor. Each
//! `unsafe` block passes a pointer to a local value of the size the call expects.
use std::io;
use std::os::fd::RawFd;

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set an integer socket option.
pub fn set_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(r)
}

/// Clamp the kernel's send buffer (SO_SNDBUF; Linux doubles the value for its bookkeeping and
/// stops autotuning it), so unsent bytes beyond it stay in our own, capped queue.
pub fn set_send_buffer(fd: RawFd, bytes: u32) -> io::Result<()> {
    set_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX),
    )
}

/// Clamp the kernel's receive buffer (SO_RCVBUF), as `set_send_buffer` does the send buffer.
pub fn set_recv_buffer(fd: RawFd, bytes: u32) -> io::Result<()> {
    set_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX),
    )
}

/// Listen again on a listening socket: Linux then only changes its backlog.
pub fn set_listen_backlog(fd: RawFd, backlog: libc::c_int) -> io::Result<()> {
    // SAFETY: listen takes no pointer; a bad descriptor is an error return.
    #[allow(unsafe_code)]
    let r = unsafe { libc::listen(fd, backlog) };
    check(r)
}

/// Hand free heap pages back to the system when at least `min_free` bytes of the heap are
/// free. glibc's malloc returns only the top of an arena on its own: after a wave of
/// connections with large queues, the freed middle stays resident, and the next wave
/// allocates beside it instead of reusing it, so RSS ratchets up wave after wave. Returns
/// whether it trimmed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_heap(min_free: usize) -> bool {
    // SAFETY: mallinfo2 and malloc_trim take no pointers; both lock the arenas themselves.
    #[allow(unsafe_code)]
    let free = unsafe { libc::mallinfo2() }.fordblks;
    if free < min_free {
        return false;
    }
    // SAFETY: as above.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
    true
}

/// Other allocators return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_heap(_min_free: usize) -> bool {
    false
}

/// Make the next close reset the connection (SO_LINGER on, 0 s): the kernel frees the
/// socket's buffers at once instead of keeping unsent data for a peer that does not read.
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a live local.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    check(r)
}

/// Bytes in the socket's send queue that the peer has not acknowledged yet (SIOCOUTQ):
/// written by us, not yet read (or at least not yet acknowledged) by the client.
pub fn unsent_bytes(fd: RawFd) -> io::Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: ioctl(SIOCOUTQ) writes one c_int into the live local.
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    check(r)?;
    Ok(u32::try_from(n).unwrap_or(0))
}

/// Set an option on the listening socket that every accepted socket inherits (Linux copies
/// `SO_SNDBUF`, `SO_RCVBUF` and `TCP_NODELAY` to the new socket): one system call at start
/// instead of one per connection.
pub fn set_listener_defaults(fd: RawFd, send_buffer: u32, recv_buffer: u32) -> io::Result<()> {
    set_send_buffer(fd, send_buffer)?;
    set_recv_buffer(fd, recv_buffer)?;
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Accept one connection from a blocking listener, already non-blocking and close-on-exec
/// (`accept4`: one system call where `accept` plus `fcntl` would be two).
pub fn accept_nonblocking(
    listener: RawFd,
) -> io::Result<(std::net::TcpStream, std::net::SocketAddr)> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::FromRawFd;
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    #[allow(unsafe_code)]
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: accept4 writes at most `len` bytes into `addr` and updates `len`.
    #[allow(unsafe_code)]
    let fd = unsafe {
        libc::accept4(
            listener,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    #[allow(unsafe_code)]
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let peer = match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET; sockaddr_storage is large
            // and aligned enough for it.
            #[allow(unsafe_code)]
            let a: libc::sockaddr_in = unsafe { *(&addr as *const libc::sockaddr_storage).cast() };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            #[allow(unsafe_code)]
            let a: libc::sockaddr_in6 = unsafe { *(&addr as *const libc::sockaddr_storage).cast() };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        _ => stream.peer_addr()?,
    };
    Ok((stream, peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn unsent_bytes_counts_what_the_peer_did_not_read() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        assert_eq!(unsent_bytes(a.as_raw_fd()).unwrap(), 0);
        a.write_all(&[7u8; 1000]).unwrap();
        // On loopback the data is acknowledged as soon as it sits in b's receive buffer.
        for _ in 0..100 {
            if unsent_bytes(a.as_raw_fd()).unwrap() == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(unsent_bytes(a.as_raw_fd()).unwrap(), 0);
        set_send_buffer(a.as_raw_fd(), 4096).unwrap();
        set_linger_zero(b.as_raw_fd()).unwrap();
    }

    fn get_int(fd: RawFd, opt: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the live local.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        v
    }

    #[test]
    fn accepted_sockets_are_non_blocking_and_inherit_the_listeners_options() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = TcpListener::bind(bind) else {
                continue; // no IPv6 here
            };
            set_listener_defaults(l.as_raw_fd(), 65536, 32768).unwrap();
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, peer) = accept_nonblocking(l.as_raw_fd()).unwrap();
            assert_eq!(peer, c.local_addr().unwrap());
            assert!(s.nodelay().unwrap());
            // Linux reports twice the value set: its bookkeeping share.
            assert_eq!(get_int(s.as_raw_fd(), libc::SO_SNDBUF), 2 * 65536);
            assert_eq!(get_int(s.as_raw_fd(), libc::SO_RCVBUF), 2 * 32768);
            let mut buf = [0u8; 1];
            assert_eq!(
                std::io::Read::read(&mut &s, &mut buf).unwrap_err().kind(),
                std::io::ErrorKind::WouldBlock
            );
        }
    }
}
