//! Trusted proxy headers: who a request came from when it came through a
//! front (nginx, HAProxy) that corral was told to trust (`--trusted-proxy`).
//! Pure functions of the peer's address and the header values; no socket.
//!
//! Behind a front every connection comes from the front's address, and the
//! client's is in `X-Forwarded-For`, a comma-separated list to which each
//! proxy appends the address it got the request from. Anyone can send that
//! header, so it is believed only as far as it was written by addresses we
//! trust. The rule is nginx's `real_ip_recursive on`:
//!
//! ```text
//!   X-Forwarded-For: 203.0.113.7, 10.0.0.5     (peer 10.0.0.9)
//!                    ^ client      ^ trusted      ^ trusted: read the list
//!                                                   right to left
//! ```
//!
//! - A connection from an untrusted peer: nothing is believed; the client
//!   is the peer, and the headers reach handlers as plain headers.
//! - From a trusted peer: walk the entries right to left while the address
//!   in hand is trusted; the client is the first untrusted entry. Entries
//!   left of it were written by the client or by proxies we do not know,
//!   and are never read, so a client cannot pick its own address.
//! - Every entry trusted: the leftmost one (the chain's origin).
//! - An entry that is not an address (`unknown`, an obfuscated RFC 7239
//!   name, junk) ends the walk: the client is the last address believed,
//!   at worst the peer itself. Empty entries are skipped.
//! - Several `X-Forwarded-For` lines are one list, joined in order (RFC
//!   9110 §5.3); HAProxy's `option forwardfor` adds a line of its own.
//! - An entry may carry a port (`192.0.2.1:5000`, `[2001:db8::1]:443`), as
//!   nginx accepts since 1.11; without one the client's port is 0, unknown.
//! - IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, a dual-stack listener's
//!   view of an IPv4 peer) match IPv4 blocks.
//!
//! `X-Forwarded-Proto` (`http` or `https`) and `X-Forwarded-Host` are
//! believed from a trusted peer only, and only their rightmost entry, the
//! one that peer wrote; a value that is not a scheme or a host is ignored.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::http::Headers;

/// A block of addresses, `10.0.0.0/8` or `2001:db8::/32`; a bare address
/// is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Reads `ADDR` or `ADDR/PREFIX`. Bits below the prefix must be zero:
    /// `10.0.0.1/8` is refused rather than read as `10.0.0.0/8`, since it
    /// is more likely a typo for `10.0.0.1/32` than a way to say the block
    /// (nginx accepts it with a warning).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| {
            format!("{s:?} is not an IP address or CIDR block such as 10.0.0.0/8 or ::1")
        })?;
        let bits = max_prefix(net);
        let prefix = match prefix {
            None => bits,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits)
                .ok_or_else(|| format!("{s}: the prefix length must be at most {bits}"))?,
            Some(_) => return Err(format!("{s}: the prefix length must be a number")),
        };
        let cidr = Cidr { net, prefix };
        if cidr.masked(net) != net {
            return Err(format!(
                "{s}: bits set past the prefix; write {}/{prefix} for the block, or {net} alone",
                cidr.masked(net)
            ));
        }
        // An IPv4-mapped block (`::ffff:10.0.0.0/104`) is the IPv4 block it
        // maps, since `contains` sees mapped peers as IPv4.
        match (net.to_canonical(), prefix.checked_sub(96)) {
            (v4 @ IpAddr::V4(_), Some(prefix)) if net.is_ipv6() => Ok(Cidr { net: v4, prefix }),
            _ => Ok(cidr),
        }
    }

    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let same_family = matches!(
            (self.net, ip),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
        );
        same_family && self.masked(ip) == self.net
    }

    /// `ip` with the bits past the prefix cleared; `ip` is of the block's
    /// family.
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

/// 32 for IPv4, 128 for IPv6.
fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl fmt::Display for Cidr {
    /// Always with the prefix, which [`Cidr::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The fronts whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
}

/// The scheme a client used to reach the front, from `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS, which the front terminated.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What a trusted front said about a request's client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The client's address: see the module doc for how it is chosen. Port
    /// 0 when the front did not say.
    pub client: SocketAddr,
    /// The scheme the client used, from `X-Forwarded-Proto`.
    pub proto: Option<Scheme>,
    /// The host the client asked for, from `X-Forwarded-Host`.
    pub host: Option<String>,
}

impl TrustedProxies {
    /// Trusts the addresses in `blocks`.
    pub fn new(blocks: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies { blocks }
    }

    /// Whether no address is trusted (the default).
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Whether `ip` is in a trusted block.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// What the forwarding headers of a request from `peer` say, or `None`
    /// if `peer` is not trusted and they say nothing we believe.
    pub fn resolve(&self, peer: SocketAddr, headers: &Headers) -> Option<Forwarded> {
        if !self.trusts(peer.ip()) {
            return None;
        }
        // The lines of each header, to be read from the last one back.
        let lines = |name| headers.get_all(name).collect::<Vec<_>>();
        Some(Forwarded {
            client: self.client(peer, &lines("x-forwarded-for")),
            proto: rightmost(&lines("x-forwarded-proto")).and_then(|p| {
                if p.eq_ignore_ascii_case(b"https") {
                    Some(Scheme::Https)
                } else if p.eq_ignore_ascii_case(b"http") {
                    Some(Scheme::Http)
                } else {
                    None
                }
            }),
            host: rightmost(&lines("x-forwarded-host"))
                .filter(|h| !h.is_empty() && crate::http::request::is_valid_host(h))
                .and_then(|h| String::from_utf8(h.to_vec()).ok()),
        })
    }

    /// The client by the `real_ip_recursive` walk over `lines`, the
    /// `X-Forwarded-For` values in the order received; `peer` is trusted.
    fn client(&self, peer: SocketAddr, lines: &[&[u8]]) -> SocketAddr {
        let mut client = peer;
        let entries = lines
            .iter()
            .rev()
            .flat_map(|line| line.rsplit(|&b| b == b','))
            .map(trim)
            .filter(|e| !e.is_empty());
        for entry in entries {
            if !self.trusts(client.ip()) {
                break;
            }
            match parse_entry(entry) {
                Some(addr) => client = addr,
                None => break,
            }
        }
        client
    }
}

/// The last non-empty entry of a comma-separated header, across all its
/// lines.
fn rightmost<'a>(lines: &[&'a [u8]]) -> Option<&'a [u8]> {
    lines
        .iter()
        .rev()
        .flat_map(|line| line.rsplit(|&b| b == b','))
        .map(trim)
        .find(|e| !e.is_empty())
}

/// Spaces and tabs trimmed from both ends.
fn trim(v: &[u8]) -> &[u8] {
    crate::http::request::trim_ows(v)
}

/// One `X-Forwarded-For` entry: `192.0.2.1`, `192.0.2.1:5000`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`. Anything else
/// (`unknown`, a zone index, a host name) is junk.
fn parse_entry(entry: &[u8]) -> Option<SocketAddr> {
    let s = std::str::from_utf8(entry).ok()?;
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(blocks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(blocks.iter().map(|b| Cidr::parse(b).unwrap()).collect())
    }

    fn headers(lines: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (name, value) in lines {
            h.push(name, value.as_bytes());
        }
        h
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks_parse_and_match() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            // block, inside, outside
            (
                "10.0.0.0/8",
                &["10.0.0.1", "10.255.255.255"],
                &["11.0.0.0", "9.255.255.255"],
            ),
            ("127.0.0.1", &["127.0.0.1"], &["127.0.0.2"]),
            ("0.0.0.0/0", &["1.2.3.4", "255.255.255.255"], &["::1"]),
            ("192.168.1.128/25", &["192.168.1.200"], &["192.168.1.127"]),
            ("::1", &["::1"], &["::2", "127.0.0.1"]),
            ("2001:db8::/32", &["2001:db8:ffff::1"], &["2001:db9::1"]),
            ("::/0", &["::1", "2001:db8::1"], &["10.0.0.1"]),
            // A dual-stack listener sees an IPv4 peer as ::ffff:a.b.c.d.
            ("10.0.0.0/8", &["::ffff:10.1.2.3"], &["::ffff:11.1.2.3"]),
            (
                "::ffff:10.0.0.0/104",
                &["10.1.2.3", "::ffff:10.1.2.3"],
                &["11.1.2.3"],
            ),
        ];
        for (block, inside, outside) in cases {
            let c = Cidr::parse(block).unwrap_or_else(|e| panic!("{block}: {e}"));
            for ip in *inside {
                assert!(c.contains(ip.parse().unwrap()), "{block} should hold {ip}");
            }
            for ip in *outside {
                assert!(
                    !c.contains(ip.parse().unwrap()),
                    "{block} should not hold {ip}"
                );
            }
            assert_eq!(Cidr::parse(&c.to_string()), Ok(c), "{block} prints back");
        }
    }

    #[test]
    fn cidr_blocks_refused() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0.0/+8",
            "10.0.0.1/8",
            "2001:db8::1/32",
            "localhost",
            "10.0.0",
            "[::1]",
            "10.0.0.0/0008",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Cidr::parse("10.0.0.1/8")
            .unwrap_err()
            .contains("10.0.0.0/8"));
    }

    /// One row of the walk's table: what it shows, the `X-Forwarded-For`
    /// lines in order, and the client expected.
    type Walk = (&'static str, &'static [&'static str], &'static str);

    /// The walk from a front at 10.0.0.9, trusting 10.0.0.0/8.
    #[test]
    fn client_address_table() {
        let t = trusted(&["10.0.0.0/8"]);
        let peer = addr("10.0.0.9:4000");
        let cases: &[Walk] = &[
            ("no header: the front itself", &[], "10.0.0.9:4000"),
            ("one hop", &["203.0.113.7"], "203.0.113.7:0"),
            // Spoofing: what the client wrote is left of the front's entry.
            (
                "spoofed entries are never read",
                &["1.1.1.1, 8.8.8.8, 203.0.113.7"],
                "203.0.113.7:0",
            ),
            (
                "a spoofed trusted address is not reached",
                &["10.6.6.6, 203.0.113.7"],
                "203.0.113.7:0",
            ),
            (
                "junk left of the client is never read",
                &["\u{1}, _x, 203.0.113.7"],
                "203.0.113.7:0",
            ),
            // A trusted chain.
            (
                "skip every trusted hop",
                &["198.51.100.1, 203.0.113.7, 10.0.0.5, 10.0.0.6"],
                "203.0.113.7:0",
            ),
            (
                "every entry trusted: the leftmost",
                &["10.0.0.1, 10.0.0.2"],
                "10.0.0.1:0",
            ),
            // Several header lines are one list, in order.
            (
                "several lines",
                &["1.1.1.1, 203.0.113.7", "10.0.0.5"],
                "203.0.113.7:0",
            ),
            (
                "the last line comes first",
                &["10.0.0.5", "203.0.113.7"],
                "203.0.113.7:0",
            ),
            ("an empty line", &["203.0.113.7", ""], "203.0.113.7:0"),
            // Junk entries.
            (
                "junk rightmost: the front itself",
                &["203.0.113.7, unknown"],
                "10.0.0.9:4000",
            ),
            (
                "junk mid-chain: the last believed",
                &["203.0.113.7, junk, 10.0.0.5"],
                "10.0.0.5:0",
            ),
            (
                "empty entries and blanks skipped",
                &[" , 203.0.113.7 ,, \t"],
                "203.0.113.7:0",
            ),
            ("a host name is junk", &["client.example"], "10.0.0.9:4000"),
            (
                "an IPv6 zone index is junk",
                &["fe80::1%eth0"],
                "10.0.0.9:4000",
            ),
            (
                "an out-of-range port is junk",
                &["203.0.113.7:70000"],
                "10.0.0.9:4000",
            ),
            // Ports and IPv6.
            ("a port is kept", &["203.0.113.7:5123"], "203.0.113.7:5123"),
            ("IPv6", &["2001:db8::7"], "[2001:db8::7]:0"),
            ("bracketed IPv6", &["[2001:db8::7]"], "[2001:db8::7]:0"),
            (
                "bracketed IPv6 with a port",
                &["[2001:db8::7]:443"],
                "[2001:db8::7]:443",
            ),
            (
                "a mapped IPv4 hop is trusted",
                &["203.0.113.7, ::ffff:10.0.0.5"],
                "203.0.113.7:0",
            ),
        ];
        for (what, lines, want) in cases {
            let h = headers(
                &lines
                    .iter()
                    .map(|l| ("X-Forwarded-For", *l))
                    .collect::<Vec<_>>(),
            );
            let got = t.resolve(peer, &h).map(|f| f.client);
            assert_eq!(got, Some(addr(want)), "{what}");
        }
    }

    #[test]
    fn ipv6_fronts_and_mapped_peers() {
        let h = headers(&[("X-Forwarded-For", "2001:db8:2::7, 2001:db8:1::5")]);
        let t = trusted(&["2001:db8:1::/48"]);
        let got = t
            .resolve(addr("[2001:db8:1::9]:4000"), &h)
            .map(|f| f.client);
        assert_eq!(got, Some(addr("[2001:db8:2::7]:0")));
        // A dual-stack listener sees an IPv4 front as ::ffff:a.b.c.d.
        let h = headers(&[("X-Forwarded-For", "203.0.113.7")]);
        let t = trusted(&["10.0.0.0/8"]);
        let got = t
            .resolve(addr("[::ffff:10.0.0.9]:4000"), &h)
            .map(|f| f.client);
        assert_eq!(got, Some(addr("203.0.113.7:0")));
        // An IPv6 block does not take in IPv4 peers, nor the reverse.
        assert_eq!(trusted(&["::/0"]).resolve(addr("10.0.0.9:1"), &h), None);
        assert_eq!(trusted(&["0.0.0.0/0"]).resolve(addr("[::1]:1"), &h), None);
    }

    #[test]
    fn an_untrusted_peer_is_believed_in_nothing() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "bank.example"),
        ]);
        assert_eq!(t.resolve(addr("203.0.113.7:5000"), &h), None);
        assert_eq!(
            TrustedProxies::default().resolve(addr("10.0.0.9:1"), &h),
            None
        );
    }

    #[test]
    fn proto_and_host_from_a_trusted_peer() {
        let t = trusted(&["127.0.0.1"]);
        let peer = addr("127.0.0.1:4000");
        type Lines = &'static [(&'static str, &'static str)];
        let cases: &[(Lines, Option<Scheme>, Option<&str>)] = &[
            (&[], None, None),
            (
                &[
                    ("X-Forwarded-Proto", "https"),
                    ("X-Forwarded-Host", "a.example"),
                ],
                Some(Scheme::Https),
                Some("a.example"),
            ),
            (&[("X-Forwarded-Proto", "HTTP")], Some(Scheme::Http), None),
            // The rightmost entry is the one our peer wrote.
            (
                &[
                    ("X-Forwarded-Proto", "http, https"),
                    ("X-Forwarded-Host", "evil, a.example:8443"),
                ],
                Some(Scheme::Https),
                Some("a.example:8443"),
            ),
            (
                &[
                    ("X-Forwarded-Proto", "https"),
                    ("X-Forwarded-Proto", "http"),
                ],
                Some(Scheme::Http),
                None,
            ),
            // Not a scheme, not a host: ignored.
            (
                &[
                    ("X-Forwarded-Proto", "gopher"),
                    ("X-Forwarded-Host", "a b/c"),
                ],
                None,
                None,
            ),
            (
                &[("X-Forwarded-Host", "[2001:db8::1]:80")],
                None,
                Some("[2001:db8::1]:80"),
            ),
        ];
        for (lines, proto, host) in cases {
            let f = t.resolve(peer, &headers(lines)).expect("trusted");
            assert_eq!((f.proto, f.host.as_deref()), (*proto, *host), "{lines:?}");
            assert_eq!(f.client, peer);
        }
    }
}
