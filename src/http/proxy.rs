//! The real client address behind a load balancer: trusted-proxy CIDRs, the PROXY protocol
//! header (versions 1 and 2, HAProxy's `doc/proxy-protocol.txt`), `X-Forwarded-For`, and the
//! key per-address limits count under. Pure: no sockets, no clock, and the parsers allocate
//! nothing.
//!
//! The server believes any of this only on connections whose peer is in `--trusted-proxy`:
//! a client that can send a PROXY header or an `X-Forwarded-For` line directly can claim to be
//! anyone.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;

// ---------------------------------------------------------------------------------------------
// CIDR lists
// ---------------------------------------------------------------------------------------------

/// An IPv4 or IPv6 network: `10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32 or /128.
///
/// An IPv4 address matches the IPv4 networks whether it is written `a.b.c.d` or as the
/// IPv4-mapped IPv6 address `::ffff:a.b.c.d` (what a dual-stack socket reports for an IPv4
/// peer), and a network written inside `::ffff:0:0/96` is stored as the IPv4 network it
/// denotes. IPv6 networks match IPv6 addresses only: `::/0` is every IPv6 address, and IPv4
/// needs `0.0.0.0/0` as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// The network `addr/prefix_len`; host bits set below the prefix are an error (a typo
    /// such as `10.1.0.0/8` is more likely than a wish to trust all of 10/8).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Cidr, String> {
        let (addr, prefix_len) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if (96..=128).contains(&prefix_len) => (IpAddr::V4(v4), prefix_len - 96),
                _ => (addr, prefix_len),
            },
            IpAddr::V4(_) => (addr, prefix_len),
        };
        let max = max_prefix(addr);
        if prefix_len > max {
            return Err(format!(
                "prefix length {prefix_len} is out of range for {} (0-{max})",
                family_name(addr)
            ));
        }
        let network = mask(addr, prefix_len);
        if network != addr {
            return Err(format!(
                "{addr}/{prefix_len} has host bits set (the network is {network}/{prefix_len})"
            ));
        }
        Ok(Cidr {
            network,
            prefix_len,
        })
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length: 0-32 for IPv4, 0-128 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is in this network (`::ffff:a.b.c.d` counts as `a.b.c.d`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(_), ip @ IpAddr::V4(_)) | (IpAddr::V6(_), ip @ IpAddr::V6(_)) => {
                mask(ip, self.prefix_len) == self.network
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn family_name(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// `addr` with the bits after the first `prefix_len` cleared (`prefix_len` already bounded).
fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix_len.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix_len.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7` (= /32), `2001:db8::7` (= /128); surrounding
    /// whitespace is ignored (lists split at commas often keep a space).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let text = s.trim();
        if text.is_empty() {
            return Err("empty network (expected e.g. 10.0.0.0/8 or 2001:db8::/32)".into());
        }
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!(
                "'{text}': '{addr_text}' is not an IP address \
                 (expected e.g. 10.0.0.0/8, 2001:db8::/32 or a bare address)"
            )
        })?;
        let prefix_len = match prefix_text {
            None => max_prefix(addr),
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "'{text}': the prefix length '{p}' is not a decimal number"
                    ));
                }
                p.parse::<u8>().map_err(|_| {
                    format!(
                        "'{text}': prefix length {p} is out of range for {} (0-{})",
                        family_name(addr),
                        max_prefix(addr)
                    )
                })?
            }
        };
        Cidr::new(addr, prefix_len).map_err(|e| format!("'{text}': {e}"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// The `--trusted-proxy` networks: the only peers whose PROXY header or `X-Forwarded-For` is
/// believed. Empty (the default) trusts nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(cidrs: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(cidrs)
    }

    /// Whether `ip` is in any of the networks (linear: the list is a handful of entries).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn cidrs(&self) -> &[Cidr] {
        &self.0
    }
}

impl From<Vec<Cidr>> for TrustedProxies {
    fn from(cidrs: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(cidrs)
    }
}

impl FromIterator<Cidr> for TrustedProxies {
    fn from_iter<I: IntoIterator<Item = Cidr>>(iter: I) -> TrustedProxies {
        TrustedProxies(iter.into_iter().collect())
    }
}

// ---------------------------------------------------------------------------------------------
// PROXY protocol
// ---------------------------------------------------------------------------------------------

/// Longest version 1 line including CRLF: the specification's worst case,
/// `PROXY UNKNOWN <IPv6> <IPv6> 65535 65535\r\n`.
pub const PROXY_V1_MAX_LEN: usize = 107;

/// Longest version 2 header accepted, the 16 fixed bytes included.
///
/// The length field allows 16 + 65535 bytes. Addresses need at most 16 + 216 (AF_UNIX); the
/// rest is TLVs. Everything HAProxy itself can add (ALPN, authority/SNI up to 255 bytes, CRC32C,
/// a unique ID up to 128 bytes, the SSL block with version, CN, cipher and algorithms) stays
/// under about 700 bytes, and the cloud balancers' own TLVs (an AWS VPC endpoint ID, an Azure
/// Private Link ID, a GCP Private Service Connect ID) are a few dozen. 4096 is nginx's limit
/// for the whole header, so a sender that works in front of nginx works here, and one page
/// bounds what a connection buffers before its request.
pub const PROXY_V2_MAX_LEN: usize = 4096;

/// The longest header of either version.
pub const PROXY_MAX_LEN: usize = PROXY_V2_MAX_LEN;

const V1_SIG: &[u8] = b"PROXY";
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED_LEN: usize = 16;

/// What the bytes received so far on a connection from a trusted proxy say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyParse {
    /// A prefix of a valid header, shorter than its version's limit: read more.
    Incomplete,
    /// The first bytes cannot start either signature (a plain request such as `GET `); known
    /// after one byte for most requests. The specification forbids guessing whether a header
    /// is present, so where one is required this is a reason to close, not to carry on.
    NotProxy,
    /// A complete header of `len` bytes; the bytes after it belong to the request. `source` is
    /// the client's address and port, or `None` where the header says to use the connection's
    /// own addresses: v1 `UNKNOWN`, v2 `LOCAL` (the balancer's health checks), and v2 families
    /// other than TCP over IPv4/IPv6 (UNIX sockets, UDP, unspecified).
    Done {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not a valid header: close the connection.
    Invalid(ProxyError),
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// v1: the line breaks the grammar (not single spaces, a missing or extra field, a CR or
    /// LF that does not end the line with CRLF).
    BadSyntax,
    /// v1: the protocol is not `TCP4`, `TCP6` or `UNKNOWN`; v2: an unassigned address family
    /// or transport protocol.
    BadFamily,
    /// v1: an address not written as the declared family requires (IPv4: four decimal octets
    /// without leading zeros; IPv6: hex groups with at most one `::`, no zone, no brackets).
    BadAddress,
    /// v1: a port that is not a decimal 0-65535 without sign or leading zero.
    BadPort,
    /// v2: the version is not 2.
    BadVersion,
    /// v2: the command is neither LOCAL nor PROXY.
    BadCommand,
    /// v2: the length is shorter than the address block of the declared family.
    ShortAddress,
    /// Longer than [`PROXY_V1_MAX_LEN`] (v1) or [`PROXY_V2_MAX_LEN`] (v2).
    TooLong,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyError::BadSyntax => "malformed PROXY v1 line",
            ProxyError::BadFamily => "unsupported PROXY protocol family",
            ProxyError::BadAddress => "bad address in PROXY v1 line",
            ProxyError::BadPort => "bad port in PROXY v1 line",
            ProxyError::BadVersion => "PROXY v2 signature with a version other than 2",
            ProxyError::BadCommand => "PROXY v2 command neither LOCAL nor PROXY",
            ProxyError::ShortAddress => "PROXY v2 length shorter than its address block",
            ProxyError::TooLong => "PROXY header too long",
        })
    }
}

impl std::error::Error for ProxyError {}

/// Parse the PROXY protocol header (v1 or v2) at the start of `buf`, the bytes received so
/// far on a connection.
///
/// Total and allocation-free: any input gives an outcome without a panic, and nothing past
/// `buf` is read. `Incomplete` is returned only while `buf` is a proper prefix of some valid
/// header under its version's limit, so a buffer of [`PROXY_MAX_LEN`] bytes always gets a
/// verdict once full. A verdict is final (more bytes never change it), and the byte that rules
/// a header out is reported as soon as it arrives, not at the end of the line.
pub fn parse_proxy_header(buf: &[u8]) -> ProxyParse {
    match buf.first() {
        None => ProxyParse::Incomplete,
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => ProxyParse::NotProxy,
    }
}

fn parse_v1(buf: &[u8]) -> ProxyParse {
    let sig_seen = buf.len().min(V1_SIG.len());
    if buf.get(..sig_seen) != V1_SIG.get(..sig_seen) {
        return ProxyParse::NotProxy;
    }
    // A CRLF must end the line within the first 107 bytes; nothing later is looked at.
    let window = buf.get(..PROXY_V1_MAX_LEN).unwrap_or(buf);
    let end = window.iter().position(|&b| b == b'\r' || b == b'\n');
    let (line, complete) = match end {
        None => (window, false),
        Some(i) => {
            let line = window.get(..i).unwrap_or(window);
            match (window.get(i), window.get(i + 1)) {
                (Some(b'\r'), Some(b'\n')) => (line, true),
                // The LF may be in the next read.
                (Some(b'\r'), None) => (line, false),
                // A bare LF, or a CR followed by anything but LF. A fault earlier in the line
                // is named first, as it was while the line was arriving.
                _ => {
                    let fault = check_v1(line, false).err();
                    return ProxyParse::Invalid(fault.unwrap_or(ProxyError::BadSyntax));
                }
            }
        }
    };
    match check_v1(line, complete) {
        Err(e) => ProxyParse::Invalid(e),
        Ok(source) if complete => ProxyParse::Done {
            len: line.len() + 2,
            source,
        },
        Ok(_) if buf.len() >= PROXY_V1_MAX_LEN => ProxyParse::Invalid(ProxyError::TooLong),
        Ok(_) => ProxyParse::Incomplete,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum V1Family {
    Tcp4,
    Tcp6,
}

/// Check a v1 line without its CRLF. When `complete` is false the line is still arriving: its
/// last field may be cut, and it must be the beginning of a valid field at that position.
fn check_v1(line: &[u8], complete: bool) -> Result<Option<SocketAddr>, ProxyError> {
    let mut family = V1Family::Tcp4;
    let mut src_ip: Option<IpAddr> = None;
    let mut src_port: u16 = 0;
    let mut fields = line.split(|&b| b == b' ').enumerate().peekable();
    let mut count = 0;
    while let Some((i, field)) = fields.next() {
        count = i + 1;
        let partial = !complete && fields.peek().is_none();
        if field.is_empty() && !partial {
            // Two spaces in a row, or a space before the CRLF.
            return Err(ProxyError::BadSyntax);
        }
        match i {
            0 => {
                let ok = if partial {
                    V1_SIG.starts_with(field)
                } else {
                    field == V1_SIG
                };
                if !ok {
                    return Err(ProxyError::BadSyntax);
                }
            }
            1 => {
                const NAMES: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];
                if partial {
                    if !NAMES.iter().any(|n| n.starts_with(field)) {
                        return Err(ProxyError::BadFamily);
                    }
                } else if field == b"TCP4" {
                    family = V1Family::Tcp4;
                } else if field == b"TCP6" {
                    family = V1Family::Tcp6;
                } else if field == b"UNKNOWN" {
                    // Whatever follows up to the CRLF is to be ignored.
                    return Ok(None);
                } else {
                    return Err(ProxyError::BadFamily);
                }
            }
            2 | 3 => {
                if partial {
                    if !v1_address_prefix(field, family) {
                        return Err(ProxyError::BadAddress);
                    }
                } else {
                    let ip = v1_address(field, family).ok_or(ProxyError::BadAddress)?;
                    if i == 2 {
                        src_ip = Some(ip);
                    }
                }
            }
            4 | 5 => {
                if partial {
                    if !port_prefix(field) {
                        return Err(ProxyError::BadPort);
                    }
                } else {
                    let port = parse_port(field).ok_or(ProxyError::BadPort)?;
                    if i == 4 {
                        src_port = port;
                    }
                }
            }
            _ => return Err(ProxyError::BadSyntax),
        }
    }
    if !complete {
        return Ok(None);
    }
    match (count, src_ip) {
        (6, Some(ip)) => Ok(Some(SocketAddr::new(ip, src_port))),
        _ => Err(ProxyError::BadSyntax),
    }
}

/// Longest address text per family: `255.255.255.255`, and
/// `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255` (an IPv6 address may end in IPv4 form, as
/// `inet_ntop` writes IPv4-mapped addresses).
fn v1_max_address_len(family: V1Family) -> usize {
    match family {
        V1Family::Tcp4 => 15,
        V1Family::Tcp6 => 45,
    }
}

/// A complete address field. The standard library's parsers are as strict as the
/// specification asks: IPv4 is exactly four decimal octets without leading zeros, IPv6 has
/// groups of one to four hex digits with at most one `::`, no zone and no brackets.
fn v1_address(field: &[u8], family: V1Family) -> Option<IpAddr> {
    if field.len() > v1_max_address_len(family) {
        return None;
    }
    let text = std::str::from_utf8(field).ok()?;
    match family {
        V1Family::Tcp4 => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        V1Family::Tcp6 => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
    }
}

/// Whether a cut address field can still become a valid address: it can if appending one of
/// a few fixed endings makes it parse. These endings suffice: a cut IPv4 text needs at most
/// the rest of its dotted quad (`0.0.0.0` minus what is there); a cut IPv6 text needs a group
/// (`0`), a `::` or the missing half of one (`:`), a group after its colon (`:0`), or the rest
/// of a trailing IPv4 part.
fn v1_address_prefix(field: &[u8], family: V1Family) -> bool {
    const V4_ENDINGS: [&[u8]; 8] = [
        b"", b"0", b".0", b"0.0", b".0.0", b"0.0.0", b".0.0.0", b"0.0.0.0",
    ];
    const V6_ENDINGS: [&[u8]; 10] = [
        b"", b"0", b":", b":0", b"::", b".0", b"0.0", b".0.0", b"0.0.0", b".0.0.0",
    ];
    let endings: &[&[u8]] = match family {
        V1Family::Tcp4 => &V4_ENDINGS,
        V1Family::Tcp6 => &V6_ENDINGS,
    };
    if field.len() > v1_max_address_len(family) {
        return false;
    }
    let mut scratch = [0u8; 64];
    endings.iter().any(|ending| {
        let n = field.len() + ending.len();
        let Some(dst) = scratch.get_mut(..n) else {
            return false;
        };
        let (head, tail) = dst.split_at_mut(field.len());
        head.copy_from_slice(field);
        tail.copy_from_slice(ending);
        let Ok(text) = std::str::from_utf8(dst) else {
            return false;
        };
        match family {
            V1Family::Tcp4 => text.parse::<Ipv4Addr>().is_ok(),
            V1Family::Tcp6 => text.parse::<Ipv6Addr>().is_ok(),
        }
    })
}

/// A decimal port 0-65535: digits only (no sign), no leading zero.
fn parse_port(field: &[u8]) -> Option<u16> {
    if field.is_empty() || field.len() > 5 || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if field.len() > 1 && field.first() == Some(&b'0') {
        return None;
    }
    let value = field
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(value).ok()
}

/// Whether a cut port field can still become a valid port.
fn port_prefix(field: &[u8]) -> bool {
    field.is_empty() || parse_port(field).is_some()
}

fn parse_v2(buf: &[u8]) -> ProxyParse {
    let sig_seen = buf.len().min(V2_SIG.len());
    if buf.get(..sig_seen) != V2_SIG.get(..sig_seen) {
        return ProxyParse::NotProxy;
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return ProxyParse::Incomplete;
    };
    if ver_cmd >> 4 != 2 {
        return ProxyParse::Invalid(ProxyError::BadVersion);
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return ProxyParse::Invalid(ProxyError::BadCommand),
    };
    let Some(&fam) = buf.get(13) else {
        return ProxyParse::Incomplete;
    };
    // LOCAL ignores the family byte altogether, as the specification says.
    let (family, transport) = (fam >> 4, fam & 0x0f);
    if !local && (family > 3 || transport > 2) {
        return ProxyParse::Invalid(ProxyError::BadFamily);
    }
    let (Some(&hi), Some(&lo)) = (buf.get(14), buf.get(15)) else {
        return ProxyParse::Incomplete;
    };
    let addr_len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = V2_FIXED_LEN + addr_len;
    if total > PROXY_V2_MAX_LEN {
        return ProxyParse::Invalid(ProxyError::TooLong);
    }
    // The address block each valid family and transport needs; UNSPEC in either needs none.
    let needed = match (local, family, transport) {
        (true, _, _) | (false, _, 0) | (false, 0, _) => 0,
        (false, 1, _) => 12,
        (false, 2, _) => 36,
        // AF_UNIX: two 108-byte paths (families above 3 were refused).
        (false, _, _) => 216,
    };
    if addr_len < needed {
        return ProxyParse::Invalid(ProxyError::ShortAddress);
    }
    let Some(header) = buf.get(..total) else {
        return ProxyParse::Incomplete;
    };
    // TLVs after the addresses are skipped: nothing here needs them.
    let source = if local {
        None
    } else {
        match fam {
            0x11 => v2_source_v4(header),
            0x21 => v2_source_v6(header),
            _ => None,
        }
    };
    ProxyParse::Done { len: total, source }
}

/// TCP over IPv4: source address at 16..20, source port at 24..26.
fn v2_source_v4(header: &[u8]) -> Option<SocketAddr> {
    let ip: [u8; 4] = header.get(16..20)?.try_into().ok()?;
    let port: [u8; 2] = header.get(24..26)?.try_into().ok()?;
    Some(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(ip),
        u16::from_be_bytes(port),
    )))
}

/// TCP over IPv6: source address at 16..32, source port at 48..50.
fn v2_source_v6(header: &[u8]) -> Option<SocketAddr> {
    let ip: [u8; 16] = header.get(16..32)?.try_into().ok()?;
    let port: [u8; 2] = header.get(48..50)?.try_into().ok()?;
    Some(SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from(ip),
        u16::from_be_bytes(port),
        0,
        0,
    )))
}

// ---------------------------------------------------------------------------------------------
// X-Forwarded-For
// ---------------------------------------------------------------------------------------------

/// The client address an `X-Forwarded-For` chain names, or `None` to use the peer address.
///
/// `values` are the raw values of every `X-Forwarded-For` line of the request, in order; their
/// comma-separated entries form one list. Each proxy appends the address it received the
/// request from, so the right end was written by our own proxies and the left end by whoever
/// sent the request. The rule (nginx's `real_ip_recursive on`):
///
/// - `peer`, the address of the connection, must itself be in `trusted`; otherwise `None`.
/// - Walk the entries from the right, skipping those that are trusted proxies; the first
///   untrusted entry is the client.
/// - An entry that is not an address (garbage, empty, `unknown`, an IPv6 zone) met before
///   that answers `None`: it can only be there because a trusted hop did not append, and
///   anything left of it is the client's own text. Garbage left of the answer is never read.
/// - Every entry trusted, or no entries: `None`.
///
/// Entries may be `a.b.c.d`, `a.b.c.d:port`, bare IPv6, `[IPv6]` or `[IPv6]:port`, with
/// spaces or tabs around the commas. What the common balancers append: nginx
/// `$proxy_add_x_forwarded_for` and AWS ALB (default `append` mode) the client address; ALB
/// with the client-port option and Azure Application Gateway `ip:port`; Google Cloud's
/// external Application Load Balancer appends `client,load-balancer-ip`, so the forwarding
/// rule's own address must be listed as trusted along with the balancer's source ranges.
pub fn client_from_forwarded_for(
    values: &[&[u8]],
    peer: IpAddr,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    if !trusted.contains(peer) {
        return None;
    }
    for value in values.iter().rev() {
        for entry in value.rsplit(|&b| b == b',') {
            let ip = forwarded_entry(trim_ows(entry))?;
            if !trusted.contains(ip) {
                return Some(ip);
            }
        }
    }
    None
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// One list entry: an address with an optional port.
fn forwarded_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let ip = addr.parse::<Ipv6Addr>().ok()?;
        if !after.is_empty() {
            parse_port(after.strip_prefix(':')?.as_bytes())?;
        }
        return Some(IpAddr::V6(ip));
    }
    match text.split_once(':') {
        // Exactly one colon: IPv4 with a port (bare IPv6 has at least two).
        Some((addr, port)) if !port.contains(':') => {
            parse_port(port.as_bytes())?;
            addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        }
        _ => text.parse::<IpAddr>().ok(),
    }
}

// ---------------------------------------------------------------------------------------------
// Per-address keys
// ---------------------------------------------------------------------------------------------

/// Top 32 bits of every IPv4 key. As an IPv6 /64 prefix, `ffff:ffff::/32` lies in the
/// multicast range `ff00::/8`, which is never the source of a TCP connection, so an IPv4 key
/// never equals the key of a real IPv6 client.
const V4_KEY_TAG: u64 = 0xffff_ffff_0000_0000;

/// The key per-address limits count under: an IPv4 address (also written `::ffff:a.b.c.d`) is
/// one key; an IPv6 address counts by its /64, the block a single subscriber or host is
/// usually given, so rotating through the addresses of one /64 gains nothing.
pub fn ip_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => V4_KEY_TAG | u64::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
    }
}

/// What [`ip_key`] stands for, for logs: `192.0.2.1` or `2001:db8:1:2::/64`.
pub fn describe_key(key: u64) -> String {
    if key & V4_KEY_TAG == V4_KEY_TAG {
        Ipv4Addr::from((key & 0xffff_ffff) as u32).to_string()
    } else {
        format!("{}/64", Ipv6Addr::from(u128::from(key) << 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        list.iter().map(|s| cidr(s)).collect()
    }

    fn done(len: usize, source: Option<&str>) -> ProxyParse {
        ProxyParse::Done {
            len,
            source: source.map(sa),
        }
    }

    fn invalid(e: ProxyError) -> ProxyParse {
        ProxyParse::Invalid(e)
    }

    // ---- encoders (the sender's side, written from the specification) ----

    /// A v1 line; `long_v6` writes IPv6 as eight zero-padded groups instead of the compressed
    /// form, `upper` in upper-case hex.
    fn v1_line(src: SocketAddr, dst: SocketAddr, long_v6: bool, upper: bool) -> Vec<u8> {
        fn text(ip: IpAddr, long_v6: bool, upper: bool) -> String {
            let s = match ip {
                IpAddr::V6(v6) if long_v6 => v6
                    .segments()
                    .iter()
                    .map(|g| format!("{g:04x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
                _ => ip.to_string(),
            };
            if upper {
                s.to_uppercase()
            } else {
                s
            }
        }
        let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
        format!(
            "PROXY {proto} {} {} {} {}\r\n",
            text(src.ip(), long_v6, upper),
            text(dst.ip(), long_v6, upper),
            src.port(),
            dst.port()
        )
        .into_bytes()
    }

    /// A v2 header: `ver_cmd` and `fam` bytes as given, the address block, then the TLVs; the
    /// length field counts both.
    fn v2_header(ver_cmd: u8, fam: u8, addrs: &[u8], tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut body = addrs.to_vec();
        for (t, v) in tlvs {
            body.push(*t);
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
        }
        let mut h = V2_SIG.to_vec();
        h.push(ver_cmd);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(&body);
        h
    }

    /// A v2 PROXY header for TCP between `src` and `dst` (same family).
    fn v2_tcp(src: SocketAddr, dst: SocketAddr, tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut a = Vec::new();
        let fam = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                a.extend_from_slice(&s.octets());
                a.extend_from_slice(&d.octets());
                0x11
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                a.extend_from_slice(&s.octets());
                a.extend_from_slice(&d.octets());
                0x21
            }
            _ => panic!("mixed families"),
        };
        a.extend_from_slice(&src.port().to_be_bytes());
        a.extend_from_slice(&dst.port().to_be_bytes());
        v2_header(0x21, fam, &a, tlvs)
    }

    /// Every proper prefix of `header` must ask for more bytes.
    fn assert_prefixes_incomplete(header: &[u8]) {
        for cut in 0..header.len() {
            assert_eq!(
                parse_proxy_header(&header[..cut]),
                ProxyParse::Incomplete,
                "cut at {cut} of {:?}",
                String::from_utf8_lossy(header)
            );
        }
    }

    // ---- CIDR ----

    #[test]
    fn cidr_parses_networks_and_bare_addresses() {
        let c = cidr("10.0.0.0/8");
        assert_eq!((c.network(), c.prefix_len()), (ip("10.0.0.0"), 8));
        let c = cidr("2001:db8::/32");
        assert_eq!((c.network(), c.prefix_len()), (ip("2001:db8::"), 32));
        assert_eq!(cidr("192.0.2.7").prefix_len(), 32);
        assert_eq!(cidr("2001:db8::7").prefix_len(), 128);
        assert_eq!(cidr(" 10.0.0.0/8\t"), cidr("10.0.0.0/8"));
        assert_eq!(cidr("0.0.0.0/0").prefix_len(), 0);
        assert_eq!(cidr("::/0").prefix_len(), 0);
        // Written inside ::ffff:0:0/96, it is the IPv4 network.
        assert_eq!(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"));
        assert_eq!(cidr("::ffff:192.0.2.7"), cidr("192.0.2.7/32"));
        for s in [
            "10.0.0.0/8",
            "192.0.2.7/32",
            "2001:db8::/32",
            "::/0",
            "fe80::1/128",
        ] {
            assert_eq!(cidr(s).to_string(), s);
            assert_eq!(cidr(&cidr(s).to_string()), cidr(s));
        }
    }

    #[test]
    fn cidr_rejects_bad_input_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("  ", "empty"),
            ("garbage", "not an IP address"),
            ("10.0.0.0/33", "out of range for IPv4 (0-32)"),
            ("2001:db8::/129", "out of range for IPv6 (0-128)"),
            ("10.0.0.0/999", "out of range"),
            ("10.0.0.0/1000", "not a decimal number"),
            ("10.0.0.0/", "not a decimal number"),
            ("10.0.0.0/x", "not a decimal number"),
            ("10.0.0.0/+8", "not a decimal number"),
            ("10.0.0.0/-1", "not a decimal number"),
            ("10.0.0.0/8/8", "not a decimal number"),
            ("10.0.0.0/ 8", "not a decimal number"),
            ("10.1.0.0/8", "host bits set (the network is 10.0.0.0/8)"),
            (
                "2001:db8::1/32",
                "host bits set (the network is 2001:db8::/32)",
            ),
            ("10.0.0.256/32", "not an IP address"),
            ("010.0.0.0/8", "not an IP address"),
            ("fe80::1%eth0/64", "not an IP address"),
            ("[2001:db8::]/32", "not an IP address"),
            ("10.0.0.0 /8", "not an IP address"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Cidr>().unwrap_err();
            assert!(err.contains(want), "{input:?}: {err:?} lacks {want:?}");
        }
        // The message quotes what was given.
        assert!("10.1.0.0/8"
            .parse::<Cidr>()
            .unwrap_err()
            .starts_with("'10.1.0.0/8'"));
    }

    #[test]
    fn cidr_contains_by_prefix() {
        let c = cidr("10.0.0.0/8");
        assert!(c.contains(ip("10.0.0.0")));
        assert!(c.contains(ip("10.255.255.255")));
        assert!(!c.contains(ip("11.0.0.0")));
        assert!(!c.contains(ip("9.255.255.255")));
        let host = cidr("192.0.2.7");
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.6")));
        let all4 = cidr("0.0.0.0/0");
        assert!(all4.contains(ip("255.255.255.255")));
        assert!(!all4.contains(ip("2001:db8::1")));
        let v6 = cidr("2001:db8:1:2::/64");
        assert!(v6.contains(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert!(!v6.contains(ip("2001:db8:1:3::")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_networks_only() {
        let c = cidr("10.0.0.0/8");
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("::ffff:11.1.2.3")));
        assert!(cidr("0.0.0.0/0").contains(ip("::ffff:1.2.3.4")));
        // An IPv6 network never matches an IPv4 client, however it is written.
        assert!(!cidr("::/0").contains(ip("1.2.3.4")));
        assert!(!cidr("::/0").contains(ip("::ffff:1.2.3.4")));
        assert!(cidr("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
    }

    #[test]
    fn trusted_proxies_match_any_listed_network() {
        let t = trusted(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]);
        assert!(t.contains(ip("10.2.3.4")));
        assert!(t.contains(ip("192.0.2.7")));
        assert!(t.contains(ip("2001:db8:ffff::1")));
        assert!(!t.contains(ip("192.0.2.8")));
        assert!(!t.contains(ip("2001:db9::1")));
        assert_eq!(t.cidrs().len(), 3);
        let none = TrustedProxies::default();
        assert!(none.is_empty());
        assert!(!none.contains(ip("127.0.0.1")));
        assert_eq!(
            TrustedProxies::new(vec![cidr("10.0.0.0/8")]),
            trusted(&["10.0.0.0/8"])
        );
        assert_eq!(
            TrustedProxies::from(vec![cidr("::1")]),
            trusted(&["::1/128"])
        );
    }

    // ---- PROXY v1 ----

    #[test]
    fn v1_tcp4_gives_the_source_and_leaves_the_request() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let want = done(line.len(), Some("192.168.0.1:56324"));
        assert_eq!(parse_proxy_header(line), want);
        assert_eq!(parse_proxy_header(&buf), want);
        assert_prefixes_incomplete(line);
    }

    #[test]
    fn v1_tcp6_in_every_text_form() {
        for (line, src) in [
            (
                "PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n",
                "[2001:db8::1]:65535",
            ),
            (
                "PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0001 ::1 1 2\r\n",
                "[2001:db8::1]:1",
            ),
            ("PROXY TCP6 ::ffff:192.0.2.1 ::1 80 80\r\n", "[::ffff:192.0.2.1]:80"),
            ("PROXY TCP6 :: :: 0 0\r\n", "[::]:0"),
            (
                "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            ),
        ] {
            assert_eq!(parse_proxy_header(line.as_bytes()), done(line.len(), Some(src)), "{line}");
            assert_prefixes_incomplete(line.as_bytes());
        }
        // The specification's longest TCP6 line.
        let longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), 104);
    }

    #[test]
    fn v1_unknown_uses_the_connection_addresses() {
        for line in [
            "PROXY UNKNOWN\r\n",
            "PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY UNKNOWN anything at all, even  double  spaces\r\n",
        ] {
            assert_eq!(
                parse_proxy_header(line.as_bytes()),
                done(line.len(), None),
                "{line}"
            );
            assert_prefixes_incomplete(line.as_bytes());
        }
    }

    #[test]
    fn v1_is_at_most_107_bytes() {
        let ff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let worst = format!("PROXY UNKNOWN {ff} {ff} 65535 65535\r\n");
        assert_eq!(worst.len(), PROXY_V1_MAX_LEN);
        assert_eq!(parse_proxy_header(worst.as_bytes()), done(107, None));
        assert_prefixes_incomplete(worst.as_bytes());
        // One byte more and the CRLF comes too late, whether it has arrived or not.
        let over = format!("PROXY UNKNOWN {ff} {ff} 65535 655350\r\n");
        assert_eq!(over.len(), 108);
        assert_eq!(
            parse_proxy_header(over.as_bytes()),
            invalid(ProxyError::TooLong)
        );
        assert_eq!(
            parse_proxy_header(&over.as_bytes()[..107]),
            invalid(ProxyError::TooLong)
        );
        assert_eq!(
            parse_proxy_header(&over.as_bytes()[..106]),
            ProxyParse::Incomplete
        );
        let endless = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 5000]].concat();
        assert_eq!(parse_proxy_header(&endless), invalid(ProxyError::TooLong));
    }

    #[test]
    fn v1_grammar_is_strict() {
        use ProxyError::*;
        let cases: &[(&str, ProxyError)] = &[
            ("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", BadSyntax),
            ("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", BadSyntax),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", BadSyntax),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", BadSyntax),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", BadSyntax),
            ("PROXY TCP4\r\n", BadSyntax),
            ("PROXY\r\n", BadSyntax),
            ("PROXY \r\n", BadSyntax),
            ("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", BadSyntax),
            ("PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", BadSyntax),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", BadSyntax),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", BadSyntax),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", BadSyntax),
            ("PROXY UNKNOWN\n", BadSyntax),
            ("PROXY UNKNOWN \rx\n", BadSyntax),
            ("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", BadFamily),
            ("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", BadFamily),
            ("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", BadFamily),
            ("PROXY UNKNOWNX\r\n", BadFamily),
            ("PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n", BadFamily),
            ("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", BadAddress),
            ("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", BadAddress),
            ("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", BadAddress),
            ("PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", BadAddress),
            ("PROXY TCP4 1.2.3.4 ::1 1 2\r\n", BadAddress),
            ("PROXY TCP4 ::ffff:1.2.3.4 5.6.7.8 1 2\r\n", BadAddress),
            ("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", BadAddress),
            ("PROXY TCP6 ::1 1.2.3.4 1 2\r\n", BadAddress),
            ("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", BadAddress),
            ("PROXY TCP6 [::1] ::1 1 2\r\n", BadAddress),
            ("PROXY TCP6 1::2::3 ::1 1 2\r\n", BadAddress),
            ("PROXY TCP6 00001:: ::1 1 2\r\n", BadAddress),
            ("PROXY TCP6 ::ffff:1.02.3.4 ::1 1 2\r\n", BadAddress),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", BadPort),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", BadPort),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", BadPort),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", BadPort),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", BadPort),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 0x10\r\n", BadPort),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2a\r\n", BadPort),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 000000\r\n", BadPort),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_proxy_header(line.as_bytes()),
                invalid(*want),
                "{line:?}"
            );
        }
    }

    #[test]
    fn v1_faults_are_reported_before_the_line_ends() {
        use ProxyError::*;
        let more = ProxyParse::Incomplete;
        for (partial, want) in [
            ("PROXY TCP4 256", invalid(BadAddress)),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 0", more),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 01", invalid(BadPort)),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 6553", more),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 65536", invalid(BadPort)),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", invalid(BadSyntax)),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1  ", invalid(BadSyntax)),
            ("PROXY TCP6 :::", invalid(BadAddress)),
            ("PROXY TCP6 1:2:3:4:5:6:7:8:", invalid(BadAddress)),
            ("PROXY TCP6 1::2::", invalid(BadAddress)),
            ("PROXY TCP6 12345", invalid(BadAddress)),
            ("PROXY TCP6 1.", invalid(BadAddress)),
            ("PROXY TCP6 ::ffff:1.2.3.4.", invalid(BadAddress)),
            ("PROXY TCP6 1:2:3:4:5:6:7:1.", invalid(BadAddress)),
            ("PROXY TCP6 ::ffff:1.2.3.", more),
            ("PROXY TCP6 1:2:3:4:5:6:", more),
            ("PROXY TCP7", invalid(BadFamily)),
            ("PROXY UNKNOWNX", invalid(BadFamily)),
            ("PROXYX", invalid(BadSyntax)),
            ("PROXY  ", invalid(BadSyntax)),
        ] {
            assert_eq!(parse_proxy_header(partial.as_bytes()), want, "{partial:?}");
        }
    }

    #[test]
    fn v1_fault_before_a_bare_line_end_keeps_its_name() {
        // The same verdict as while the line was arriving, whatever ends it.
        let prefix = parse_proxy_header(b"PROXY TCP4 256");
        assert_eq!(prefix, invalid(ProxyError::BadAddress));
        for end in [&b"\n"[..], b"\rx", b"\r\n", b" 1 2 3\r\n"] {
            let buf = [&b"PROXY TCP4 256"[..], end].concat();
            assert_eq!(parse_proxy_header(&buf), prefix, "{end:?}");
        }
    }

    #[test]
    fn plain_requests_are_not_proxy_headers_after_few_bytes() {
        for (input, after) in [
            (&b"GET / HTTP/1.1\r\n"[..], 1),
            (b"HEAD / HTTP/1.1\r\n", 1),
            (b"POST / HTTP/1.1\r\n", 2),
            (b"PUT / HTTP/1.1\r\n", 2),
            (b"PATCH / HTTP/1.1\r\n", 2),
            (b"PROPFIND / HTTP/1.1\r\n", 4),
            (b"\x16\x03\x01\x02\x00", 1),
            (b"\r\n\r\n\0\r\nQUIX\n", 11),
            (b"\r\nGET / HTTP/1.1\r\n", 3),
            (b"\0", 1),
        ] {
            for cut in 0..after {
                assert_eq!(parse_proxy_header(&input[..cut]), ProxyParse::Incomplete);
            }
            for cut in after..=input.len() {
                assert_eq!(
                    parse_proxy_header(&input[..cut]),
                    ProxyParse::NotProxy,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    // ---- PROXY v2 ----

    #[test]
    fn v2_tcp4_and_tcp6_give_the_source() {
        let h = v2_tcp(sa("203.0.113.7:51234"), sa("10.0.0.5:8080"), &[]);
        assert_eq!(h.len(), 28);
        assert_eq!(parse_proxy_header(&h), done(28, Some("203.0.113.7:51234")));
        assert_prefixes_incomplete(&h);
        let h = v2_tcp(sa("[2001:db8::7]:443"), sa("[2001:db8::1]:80"), &[]);
        assert_eq!(h.len(), 52);
        assert_eq!(parse_proxy_header(&h), done(52, Some("[2001:db8::7]:443")));
        assert_prefixes_incomplete(&h);
        let mut with_request = h.clone();
        with_request.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            parse_proxy_header(&with_request),
            done(52, Some("[2001:db8::7]:443"))
        );
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let tlvs = vec![
            (0x01, b"http/1.1".to_vec()),                  // ALPN
            (0x02, b"chat.example".to_vec()),              // authority
            (0x05, vec![7; 128]),                          // unique ID
            (0x20, vec![1, 0, 0, 0, 0]),                   // SSL, no sub-TLVs
            (0xEA, b"\x01vpce-0123456789abcdef".to_vec()), // AWS VPC endpoint
            (0x04, vec![]),                                // NOOP
        ];
        let h = v2_tcp(sa("198.51.100.9:40000"), sa("10.0.0.5:8080"), &tlvs);
        assert_eq!(
            parse_proxy_header(&h),
            done(h.len(), Some("198.51.100.9:40000"))
        );
        assert_prefixes_incomplete(&h);
        // Bytes after the addresses are not read as TLVs: a malformed tail is skipped too.
        let h = v2_header(
            0x21,
            0x11,
            &[[1, 2, 3, 4, 5, 6, 7, 8, 0, 80, 0, 81].as_slice(), &[0xff]].concat(),
            &[],
        );
        assert_eq!(parse_proxy_header(&h), done(29, Some("1.2.3.4:80")));
    }

    #[test]
    fn v2_local_uses_the_connection_addresses() {
        let h = v2_header(0x20, 0x00, &[], &[]);
        assert_eq!(parse_proxy_header(&h), done(16, None));
        assert_prefixes_incomplete(&h);
        // LOCAL with an address block present: skipped by its length, family ignored.
        let with_addrs = v2_header(0x20, 0x11, &[9; 12], &[(0x04, vec![0; 3])]);
        assert_eq!(parse_proxy_header(&with_addrs), done(34, None));
        for fam in [0x00, 0x21, 0x31, 0xff, 0x13] {
            assert_eq!(
                parse_proxy_header(&v2_header(0x20, fam, &[], &[])),
                done(16, None),
                "{fam:#x}"
            );
        }
    }

    #[test]
    fn v2_other_families_use_the_connection_addresses() {
        // AF_UNIX stream and datagram: two 108-byte paths.
        for fam in [0x31, 0x32] {
            let h = v2_header(0x21, fam, &[b'/'; 216], &[]);
            assert_eq!(parse_proxy_header(&h), done(232, None));
        }
        // UDP over IPv4/IPv6: valid, but not what this TCP server was reached by.
        assert_eq!(
            parse_proxy_header(&v2_header(0x21, 0x12, &[1; 12], &[])),
            done(28, None)
        );
        assert_eq!(
            parse_proxy_header(&v2_header(0x21, 0x22, &[1; 36], &[])),
            done(52, None)
        );
        // UNSPEC in the family or the transport: no address block needed.
        for fam in [0x00, 0x01, 0x02, 0x10, 0x20, 0x30] {
            assert_eq!(
                parse_proxy_header(&v2_header(0x21, fam, &[], &[])),
                done(16, None),
                "{fam:#x}"
            );
        }
    }

    #[test]
    fn v2_refusals() {
        use ProxyError::*;
        let cases: &[(Vec<u8>, ProxyError)] = &[
            (v2_header(0x11, 0x11, &[0; 12], &[]), BadVersion),
            (v2_header(0x31, 0x11, &[0; 12], &[]), BadVersion),
            (v2_header(0x01, 0x11, &[0; 12], &[]), BadVersion),
            (v2_header(0x22, 0x11, &[0; 12], &[]), BadCommand),
            (v2_header(0x2f, 0x11, &[0; 12], &[]), BadCommand),
            (v2_header(0x21, 0x41, &[0; 12], &[]), BadFamily),
            (v2_header(0x21, 0xf1, &[0; 12], &[]), BadFamily),
            (v2_header(0x21, 0x13, &[0; 12], &[]), BadFamily),
            (v2_header(0x21, 0x1f, &[0; 12], &[]), BadFamily),
            (v2_header(0x21, 0x11, &[0; 11], &[]), ShortAddress),
            (v2_header(0x21, 0x11, &[], &[]), ShortAddress),
            (v2_header(0x21, 0x21, &[0; 35], &[]), ShortAddress),
            (v2_header(0x21, 0x21, &[0; 12], &[]), ShortAddress),
            (v2_header(0x21, 0x31, &[0; 215], &[]), ShortAddress),
            (v2_header(0x21, 0x12, &[0; 4], &[]), ShortAddress),
        ];
        for (h, want) in cases {
            assert_eq!(parse_proxy_header(h), invalid(*want), "{:x?}", &h[12..16]);
            // Known as soon as the 16 fixed bytes are in, before the address block.
            assert_eq!(parse_proxy_header(&h[..16]), invalid(*want));
        }
        // Version and command are judged at the 13th byte, the family at the 14th.
        assert_eq!(
            parse_proxy_header(&v2_header(0x11, 0, &[], &[])[..13]),
            invalid(BadVersion)
        );
        assert_eq!(
            parse_proxy_header(&v2_header(0x23, 0, &[], &[])[..13]),
            invalid(BadCommand)
        );
        assert_eq!(
            parse_proxy_header(&v2_header(0x21, 0x51, &[], &[])[..14]),
            invalid(BadFamily)
        );
    }

    #[test]
    fn v2_length_is_capped() {
        let max_body = PROXY_V2_MAX_LEN - 16;
        let at_cap = v2_header(0x21, 0x11, &vec![0; max_body], &[]);
        assert_eq!(at_cap.len(), PROXY_V2_MAX_LEN);
        assert_eq!(
            parse_proxy_header(&at_cap),
            done(PROXY_V2_MAX_LEN, Some("0.0.0.0:0"))
        );
        assert_eq!(
            parse_proxy_header(&at_cap[..PROXY_V2_MAX_LEN - 1]),
            ProxyParse::Incomplete
        );
        let over = v2_header(0x21, 0x11, &vec![0; max_body + 1], &[]);
        // Refused from the length field, without waiting for the body.
        assert_eq!(
            parse_proxy_header(&over[..16]),
            invalid(ProxyError::TooLong)
        );
        assert_eq!(parse_proxy_header(&over), invalid(ProxyError::TooLong));
        let mut huge = v2_header(0x20, 0, &[], &[]);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse_proxy_header(&huge), invalid(ProxyError::TooLong));
    }

    #[test]
    fn errors_display_briefly() {
        use ProxyError::*;
        for e in [
            BadSyntax,
            BadFamily,
            BadAddress,
            BadPort,
            BadVersion,
            BadCommand,
            ShortAddress,
            TooLong,
        ] {
            let s = e.to_string();
            assert!(!s.is_empty() && s.len() < 60 && !s.contains('\n'), "{s}");
        }
        assert_eq!(TooLong.to_string(), "PROXY header too long");
    }

    // ---- X-Forwarded-For ----

    fn xff(values: &[&str], peer: &str, t: &TrustedProxies) -> Option<IpAddr> {
        let raw: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        client_from_forwarded_for(&raw, ip(peer), t)
    }

    #[test]
    fn xff_needs_a_trusted_peer() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(xff(&["203.0.113.7"], "198.51.100.1", &t), None);
        assert_eq!(
            xff(&["203.0.113.7"], "10.0.0.1", &TrustedProxies::default()),
            None
        );
        assert_eq!(
            xff(&["203.0.113.7"], "10.0.0.1", &t),
            Some(ip("203.0.113.7"))
        );
        // A dual-stack socket's view of the same trusted peer.
        assert_eq!(
            xff(&["203.0.113.7"], "::ffff:10.0.0.1", &t),
            Some(ip("203.0.113.7"))
        );
    }

    #[test]
    fn xff_takes_the_rightmost_untrusted_entry() {
        let t = trusted(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let peer = "10.0.0.1";
        let cases: &[(&[&str], Option<&str>)] = &[
            // nginx $proxy_add_x_forwarded_for / ALB append: the client's claim, then the client.
            (&["1.1.1.1, 203.0.113.7"], Some("203.0.113.7")),
            // A chain of our own proxies.
            (
                &["1.1.1.1, 203.0.113.7, 10.0.0.2, 10.0.0.3"],
                Some("203.0.113.7"),
            ),
            // Several header lines are one list.
            (&["1.1.1.1, 2.2.2.2", "10.0.0.3"], Some("2.2.2.2")),
            (
                &["1.1.1.1", "2.2.2.2", "10.0.0.3, 10.0.0.4"],
                Some("2.2.2.2"),
            ),
            // Spoofed "trusted" addresses left of the client change nothing.
            (&["10.9.9.9, 203.0.113.7"], Some("203.0.113.7")),
            // Ports (Azure Application Gateway, ALB with client port) and brackets.
            (&["203.0.113.7:51234"], Some("203.0.113.7")),
            (&["203.0.113.7:0, 10.0.0.2:443"], Some("203.0.113.7")),
            (&["[2001:db8::7]:443"], Some("2001:db8::7")),
            (&["[2001:db8::7]"], Some("2001:db8::7")),
            (&["2001:db8::7, 2001:db8:ffff::1"], Some("2001:db8::7")),
            (
                &["[2001:db8::7]:1, [2001:db8:ffff::1]:2"],
                Some("2001:db8::7"),
            ),
            (&["::ffff:10.0.0.2, 203.0.113.7"], Some("203.0.113.7")),
            (&["203.0.113.7, ::ffff:10.0.0.2"], Some("203.0.113.7")),
            // Whitespace around commas, tabs included.
            (&[" 203.0.113.7 ,\t10.0.0.2\t"], Some("203.0.113.7")),
            (&["203.0.113.7,10.0.0.2"], Some("203.0.113.7")),
            // Garbage left of the client is never read.
            (&["<script>, unknown, 203.0.113.7"], Some("203.0.113.7")),
            (&["garbage", "203.0.113.7"], Some("203.0.113.7")),
            // Everything trusted, or nothing there: use the peer.
            (&["10.0.0.2, 10.0.0.3"], None),
            (&[], None),
        ];
        for (values, want) in cases {
            assert_eq!(xff(values, peer, &t), want.map(ip), "{values:?}");
        }
    }

    #[test]
    fn xff_stops_at_garbage_before_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        for values in [
            &["203.0.113.7, garbage, 10.0.0.2"][..],
            &["203.0.113.7, unknown"],
            &["203.0.113.7,,10.0.0.2"],
            &["203.0.113.7, "],
            &["203.0.113.7", ""],
            &[""],
            &["203.0.113.7:99999"],
            &["203.0.113.7:+1"],
            &["203.0.113.7:"],
            &["[203.0.113.7]:80"],
            &["[2001:db8::7]80"],
            &["[2001:db8::7]:"],
            &["[2001:db8::7"],
            &["fe80::1%eth0"],
            &["203.0.113.7 10.0.0.2"],
            &["203.0.113.007"],
            &["_hidden, 10.0.0.2"],
            &["1.2.3.4:80:90"],
        ] {
            assert_eq!(xff(values, "10.0.0.1", &t), None, "{values:?}");
        }
        // Bytes that are not UTF-8.
        let raw: [&[u8]; 1] = [b"203.0.113.7, \xff\xfe"];
        assert_eq!(client_from_forwarded_for(&raw, ip("10.0.0.1"), &t), None);
    }

    #[test]
    fn xff_google_appends_client_and_balancer_address() {
        // <client's claim>, <client>, <forwarding rule IP>: the rule's address is trusted
        // alongside the Google front ends the connection comes from.
        let t = trusted(&["35.191.0.0/16", "130.211.0.0/22", "34.120.1.2"]);
        assert_eq!(
            xff(&["6.6.6.6, 203.0.113.7,34.120.1.2"], "35.191.4.5", &t),
            Some(ip("203.0.113.7"))
        );
    }

    // ---- keys ----

    #[test]
    fn ip_keys() {
        assert_eq!(ip_key(ip("192.0.2.1")), 0xffff_ffff_c000_0201);
        assert_eq!(ip_key(ip("::ffff:192.0.2.1")), ip_key(ip("192.0.2.1")));
        assert_ne!(ip_key(ip("192.0.2.1")), ip_key(ip("192.0.2.2")));
        assert_eq!(ip_key(ip("0.0.0.0")), 0xffff_ffff_0000_0000);
        // One key per /64.
        assert_eq!(
            ip_key(ip("2001:db8:1:2::1")),
            ip_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_eq!(ip_key(ip("2001:db8:1:2::1")), 0x2001_0db8_0001_0002);
        assert_ne!(ip_key(ip("2001:db8:1:2::1")), ip_key(ip("2001:db8:1:3::1")));
        // The deprecated IPv4-compatible form is an IPv6 address like any other.
        assert_eq!(ip_key(ip("::192.0.2.1")), 0);
        assert_eq!(describe_key(ip_key(ip("192.0.2.1"))), "192.0.2.1");
        assert_eq!(describe_key(ip_key(ip("::ffff:10.1.2.3"))), "10.1.2.3");
        assert_eq!(
            describe_key(ip_key(ip("2001:db8:1:2::99"))),
            "2001:db8:1:2::/64"
        );
        assert_eq!(describe_key(ip_key(ip("::1"))), "::/64");
    }

    #[test]
    fn ipv4_keys_sit_in_multicast_space() {
        // The /64 an IPv4 key would name is multicast: no TCP client has it.
        let as_v6 = Ipv6Addr::from(u128::from(ip_key(ip("255.255.255.255"))) << 64);
        assert!(as_v6.is_multicast());
        let as_v6 = Ipv6Addr::from(u128::from(ip_key(ip("0.0.0.0"))) << 64);
        assert!(as_v6.is_multicast());
        // Unicast IPv6 keys never carry the IPv4 tag.
        for a in ["2001:db8::1", "fe80::1", "::1", "fc00::1", "3fff:ffff::1"] {
            assert_ne!(ip_key(ip(a)) & V4_KEY_TAG, V4_KEY_TAG, "{a}");
        }
    }

    // ---- fuzz seeds ----

    /// The fuzz target's seed corpus, made by the encoders above.
    fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
        let v4 = (sa("203.0.113.7:51234"), sa("10.0.0.5:8080"));
        let v6 = (sa("[2001:db8::7]:443"), sa("[2001:db8::1]:8080"));
        let tlvs = vec![
            (0x01, b"http/1.1".to_vec()),
            (0x02, b"chat.example".to_vec()),
        ];
        let get = b"GET /ws HTTP/1.1\r\nHost: chat.example\r\n\r\n".to_vec();
        let with_get = |mut h: Vec<u8>| {
            h.extend_from_slice(&get);
            h
        };
        let v2_t4 = v2_tcp(v4.0, v4.1, &[]);
        let v1_t6 = v1_line(v6.0, v6.1, false, false);
        vec![
            ("v1_tcp4", with_get(v1_line(v4.0, v4.1, false, false))),
            ("v1_tcp6", with_get(v1_t6.clone())),
            ("v1_tcp6_long", v1_line(v6.0, v6.1, true, true)),
            ("v1_unknown", with_get(b"PROXY UNKNOWN\r\n".to_vec())),
            ("v1_unknown_full", b"PROXY UNKNOWN ::1 ::1 1 2\r\n".to_vec()),
            ("v1_truncated", v1_t6[..30].to_vec()),
            ("v2_tcp4", with_get(v2_t4.clone())),
            ("v2_tcp6", v2_tcp(v6.0, v6.1, &[])),
            ("v2_tcp4_tlvs", with_get(v2_tcp(v4.0, v4.1, &tlvs))),
            ("v2_tcp6_tlvs", v2_tcp(v6.0, v6.1, &tlvs)),
            ("v2_local", with_get(v2_header(0x20, 0x00, &[], &[]))),
            (
                "v2_local_tlv",
                v2_header(0x20, 0x00, &[], &[(0x04, vec![0; 4])]),
            ),
            ("v2_unix", v2_header(0x21, 0x31, &[b'/'; 216], &[])),
            ("v2_truncated", v2_t4[..20].to_vec()),
            ("plain_get", get.clone()),
            (
                "xff_chain",
                b"\x02203.0.113.7:51234, 10.0.0.2\n[2001:db8::7]:443".to_vec(),
            ),
        ]
    }

    /// The committed seeds are what the encoders make now (ROULETTE_WRITE_FUZZ_SEEDS=1
    /// rewrites them), and each gets the verdict it was made for.
    #[test]
    fn fuzz_seeds_match_the_encoders() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/proxy_header");
        let write = std::env::var_os("ROULETTE_WRITE_FUZZ_SEEDS").is_some();
        for (name, bytes) in fuzz_seeds() {
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let on_disk =
                std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(on_disk, bytes, "{name} differs from the encoder's output");
            let out = parse_proxy_header(&bytes);
            let want_done = !name.contains("truncated")
                && !name.starts_with("plain")
                && !name.starts_with("xff");
            assert_eq!(
                matches!(out, ProxyParse::Done { .. }),
                want_done,
                "{name}: {out:?}"
            );
        }
        // Beside them lives the grown corpus, minimised: libFuzzer names each input by the
        // SHA-1 of its bytes, so anything else is a stray hand-made seed.
        let is_corpus_entry =
            |name: &str| name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit());
        let hand_made = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| !is_corpus_entry(&e.file_name().to_string_lossy()))
            .count();
        assert_eq!(
            hand_made,
            fuzz_seeds().len(),
            "stray files in {}",
            dir.display()
        );
    }

    // ---- properties ----

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            // Short IPv6 forms and IPv4-mapped ones, which Display writes with `::`.
            (any::<u16>(), any::<u16>(), 0usize..8).prop_map(|(a, b, at)| {
                let mut g = [0u16; 8];
                g[at] = a;
                g[(at + 3) % 8] = b;
                IpAddr::V6(Ipv6Addr::from(g))
            }),
            any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
        ]
    }

    /// A source/destination pair of one family.
    fn endpoints() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
        (any_ip(), any_ip(), any::<u16>(), any::<u16>()).prop_map(|(a, b, pa, pb)| {
            let b = match (a, b) {
                (IpAddr::V4(_), IpAddr::V6(v6)) => {
                    IpAddr::V4(Ipv4Addr::from((u128::from(v6) & 0xffff_ffff) as u32))
                }
                (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
                _ => b,
            };
            (SocketAddr::new(a, pa), SocketAddr::new(b, pb))
        })
    }

    fn tlvs() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        prop::collection::vec(
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..200)),
            0..6,
        )
    }

    /// Inputs that reach deep into both parsers: a signature, then anything.
    fn header_like() -> impl Strategy<Value = Vec<u8>> {
        let starts = prop::sample::select(vec![
            &b""[..],
            b"PROXY ",
            b"PROXY TCP4 ",
            b"PROXY TCP6 ",
            b"PROXY UNKNOWN",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 ",
            b"\r\n\r\n\0\r\nQUIT\n",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11",
            b"\r\n\r\n\0\r\nQUIT\n\x20",
        ]);
        let tail = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            prop::collection::vec(
                prop::sample::select(b"0123456789abcdefABCDEF.: \r\nPROXYTCP46UNKOW".to_vec()),
                0..120
            ),
        ];
        (starts, tail).prop_map(|(s, t)| [s, &t[..]].concat())
    }

    /// The invariants every input keeps: a verdict is final (more bytes never change it),
    /// `Done` lies within `buf` and re-parses from exactly its bytes, `Incomplete` only under
    /// the cap.
    fn check_any(buf: &[u8]) -> Result<(), TestCaseError> {
        let out = parse_proxy_header(buf);
        match out {
            ProxyParse::Done { len, .. } => {
                prop_assert!(len <= buf.len() && len >= 15);
                prop_assert_eq!(parse_proxy_header(&buf[..len]), out);
            }
            ProxyParse::Incomplete => prop_assert!(buf.len() < PROXY_MAX_LEN),
            ProxyParse::NotProxy | ProxyParse::Invalid(_) => {}
        }
        for cut in 0..buf.len() {
            let early = parse_proxy_header(&buf[..cut]);
            if early != ProxyParse::Incomplete {
                prop_assert_eq!(early, out, "cut at {}", cut);
            }
        }
        Ok(())
    }

    fn xff_entry(ip: IpAddr, port: Option<u16>, bracket: bool) -> String {
        match (ip, port) {
            (IpAddr::V4(a), Some(p)) => format!("{a}:{p}"),
            (IpAddr::V4(a), None) => a.to_string(),
            (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (IpAddr::V6(a), None) if bracket => format!("[{a}]"),
            (IpAddr::V6(a), None) => a.to_string(),
        }
    }

    fn xff_entries() -> impl Strategy<Value = Vec<String>> {
        let entry = prop_oneof![
            4 => (any_ip(), prop::option::of(any::<u16>()), any::<bool>())
                .prop_map(|(ip, port, br)| xff_entry(ip, port, br)),
            // Addresses inside the trusted networks below, so chains form.
            4 => (any::<u16>(), prop::option::of(any::<u16>()))
                .prop_map(|(n, port)| xff_entry(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | u32::from(n))), port, false)),
            1 => "[ -~]{0,12}",
        ];
        prop::collection::vec(entry, 0..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes_get_a_final_verdict(buf in prop::collection::vec(any::<u8>(), 0..400)) {
            check_any(&buf)?;
        }

        #[test]
        fn header_like_bytes_get_a_final_verdict(buf in header_like()) {
            check_any(&buf)?;
        }

        #[test]
        fn encoded_headers_round_trip(
            (src, dst) in endpoints(),
            v2 in any::<bool>(),
            long_v6 in any::<bool>(),
            upper in any::<bool>(),
            tlvs in tlvs(),
            tail in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let header = if v2 {
                v2_tcp(src, dst, &tlvs)
            } else {
                v1_line(src, dst, long_v6, upper)
            };
            let want = ProxyParse::Done { len: header.len(), source: Some(src) };
            prop_assert_eq!(parse_proxy_header(&header), want);
            let mut buf = header.clone();
            buf.extend_from_slice(&tail);
            prop_assert_eq!(parse_proxy_header(&buf), want);
            for cut in 0..header.len() {
                prop_assert_eq!(parse_proxy_header(&buf[..cut]), ProxyParse::Incomplete, "cut at {}", cut);
            }
        }

        #[test]
        fn address_text_prefixes_are_accepted(a in any_ip()) {
            let texts = match a {
                IpAddr::V4(_) => vec![a.to_string()],
                IpAddr::V6(v6) => vec![
                    a.to_string(),
                    a.to_string().to_uppercase(),
                    v6.segments().iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":"),
                    v6.segments().iter().map(|g| format!("{g:04x}")).collect::<Vec<_>>().join(":"),
                ],
            };
            let family = if a.is_ipv4() { V1Family::Tcp4 } else { V1Family::Tcp6 };
            for t in texts {
                prop_assert_eq!(v1_address(t.as_bytes(), family), Some(a));
                for cut in 0..=t.len() {
                    prop_assert!(v1_address_prefix(&t.as_bytes()[..cut], family), "{:?}", &t[..cut]);
                }
            }
        }

        #[test]
        fn xff_appending_trusted_hops_changes_nothing(
            entries in xff_entries(),
            split in any::<prop::sample::Index>(),
            hops in prop::collection::vec((any::<u16>(), any::<bool>()), 1..4),
        ) {
            let t = trusted(&["10.0.0.0/16", "2001:db8:ffff::/48"]);
            let peer = ip("10.0.0.1");
            // The list as one or two header lines.
            let at = split.index(entries.len() + 1);
            let mut values = vec![entries[..at].join(", ")];
            if at < entries.len() {
                values.push(entries[at..].join(","));
            }
            let raw: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
            let before = client_from_forwarded_for(&raw, peer, &t);
            if let Some(found) = before {
                prop_assert!(!t.contains(found));
            }
            // Our proxies append their hops, on the last line or on lines of their own.
            let mut more = values.clone();
            for (n, own_line) in &hops {
                let hop = if n % 2 == 0 {
                    xff_entry(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | u32::from(*n))), Some(*n), false)
                } else {
                    format!("[2001:db8:ffff::{n:x}]")
                };
                match more.last_mut() {
                    Some(last) if !own_line && !last.is_empty() => {
                        last.push_str(", ");
                        last.push_str(&hop);
                    }
                    _ => more.push(hop),
                }
            }
            let raw: Vec<&[u8]> = more.iter().map(|v| v.as_bytes()).collect();
            let after = client_from_forwarded_for(&raw, peer, &t);
            // An empty list gives None, and a list made only of our hops gives None too.
            prop_assert_eq!(after, before);
            // And nobody who is not a trusted peer gets any answer.
            prop_assert_eq!(client_from_forwarded_for(&raw, ip("192.0.2.1"), &t), None);
        }
    }
}
