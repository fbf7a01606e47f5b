//! The parts of the URI grammar (RFC 3986) that a request-target (RFC 9112
//! §3.2) and a Host field (RFC 9110 §7.2) are checked against. Pure
//! functions of bytes; each answers whether its input matches one rule and,
//! if not, a short reason for the 400.
//!
//! ```text
//! origin-form    = absolute-path [ "?" query ]
//! absolute-form  = absolute-URI               ; only http and https here
//! authority-form = uri-host ":" port          ; CONNECT only
//! asterisk-form  = "*"                        ; OPTIONS only
//!
//! absolute-path  = 1*( "/" segment )
//! segment        = *pchar
//! query          = *( pchar / "/" / "?" )
//! pchar          = unreserved / pct-encoded / sub-delims / ":" / "@"
//! authority      = [ userinfo "@" ] host [ ":" port ]
//! host           = IP-literal / IPv4address / reg-name
//! IP-literal     = "[" ( IPv6address / IPvFuture ) "]"
//! IPvFuture      = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
//! reg-name       = *( unreserved / pct-encoded / sub-delims )
//! port           = *DIGIT
//! ```
//!
//! The grammar is applied as written, with no relaxation for the bytes
//! browsers send unencoded in queries (`|`, `^`, `[`, `]`, `{`, `}`): like
//! Tomcat since 8.5, which answers them 400 unless `relaxedQueryChars` says
//! otherwise, corral refuses them; nginx and hyper pass them on. A `#`
//! fragment is refused too (a fragment is never part of a request-target):
//! Apache's default `HttpProtocolOptions Strict` answers 400, nginx and
//! hyper strip it and route what is left.

use std::net::Ipv6Addr;

/// A 256-entry membership table: ASCII letters and digits, and `extra`.
/// Each class below is one load per byte on the request path, where a
/// search of the class's punctuation took a dozen comparisons.
const fn class(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// `tchar` (RFC 9110 §5.6.2).
static TCHAR: [bool; 256] = class(b"!#$%&'*+-.^_`|~");
/// `unreserved` (RFC 3986 §2.3).
static UNRESERVED: [bool; 256] = class(b"-._~");
/// `unreserved`, `sub-delims` (§2.2), `:` and `@`: `pchar` without
/// `pct-encoded`.
static PCHAR: [bool; 256] = class(b"-._~!$&'()*+,;=:@");
/// [`PCHAR`], `/`, `?`, `%`, `[` and `]`.
static TARGET: [bool; 256] = class(b"-._~!$&'()*+,;=:@/?%[]");

/// `tchar` (RFC 9110 §5.6.2): the bytes of a method or a field name.
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// `unreserved` (RFC 3986 §2.3).
fn is_unreserved(b: u8) -> bool {
    UNRESERVED[usize::from(b)]
}

/// `sub-delims` (RFC 3986 §2.2).
fn is_sub_delim(b: u8) -> bool {
    b"!$&'()*+,;=".contains(&b)
}

/// `pchar` without `pct-encoded`, which [`all_pct`] handles.
fn is_pchar(b: u8) -> bool {
    PCHAR[usize::from(b)]
}

/// A byte that some request-target may hold, in any of the four forms:
/// `%` stands for the start of a `pct-encoded` triplet, and `[` and `]`
/// are only for an IP literal in an authority. What the request line's
/// scanner checks before the target is whole.
pub(crate) fn is_target_byte(b: u8) -> bool {
    TARGET[usize::from(b)]
}

/// Whether every byte of `s` matches `ok`, or is a `%` followed by two
/// hex digits (`pct-encoded`, RFC 3986 §2.1).
fn all_pct(s: &[u8], ok: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            match s.get(i + 1..i + 3) {
                Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if ok(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// The four forms of a request-target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `/path?query`: what clients send an origin server.
    Origin,
    /// `http://authority/path?query`: what clients send a proxy, which an
    /// origin server must accept too (§3.2.2).
    Absolute,
    /// `host:port`, for CONNECT (§3.2.3).
    Authority,
    /// `*`, for a server-wide OPTIONS (§3.2.4).
    Asterisk,
}

/// Which form `target` is in, or why it is in none. `connect` says whether
/// the method is CONNECT, which alone reads `host:port` as authority-form
/// (for any other method it would be an absolute-URI with the scheme
/// `host`, which corral does not serve either way).
pub(crate) fn target_form(target: &[u8], connect: bool) -> Result<Form, &'static str> {
    match target {
        b"*" => Ok(Form::Asterisk),
        [b'/', ..] if all_pct(target, |b| is_pchar(b) || b == b'/' || b == b'?') => {
            Ok(Form::Origin)
        }
        [b'/', ..] => Err("invalid request target"),
        _ if connect => {
            check_authority(target, Use::AuthorityForm)?;
            Ok(Form::Authority)
        }
        _ => {
            check_absolute(target)?;
            Ok(Form::Absolute)
        }
    }
}

/// The authority of an absolute-form target and what follows it (the
/// path-abempty and the query), or `None` if `target` is not one. The
/// target must already have passed [`target_form`].
pub(crate) fn split_absolute(target: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = target.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some(rest.split_at(end))
}

/// `http` / `https` `"://" authority path-abempty [ "?" query ]` (RFC 9110
/// §4.2.1 and §4.2.2). Other schemes are refused: corral is an origin
/// server for http and https only, and §3.2.2 lets it answer what it
/// cannot serve with 400.
fn check_absolute(target: &[u8]) -> Result<(), &'static str> {
    let (authority, rest) = std::str::from_utf8(target)
        .ok()
        .and_then(split_absolute)
        .ok_or("invalid request target")?;
    check_authority(authority.as_bytes(), Use::AbsoluteForm)?;
    // path-abempty [ "?" query ]: the split leaves it empty or starting
    // with "/" or "?".
    if !all_pct(rest.as_bytes(), |b| is_pchar(b) || b == b'/' || b == b'?') {
        return Err("invalid request target");
    }
    Ok(())
}

/// Where an authority is found, which decides what it may leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// A Host field value: `uri-host [ ":" port ]`, or empty when the
    /// target has no authority (RFC 9110 §7.2).
    HostField,
    /// The authority of an http or https URI: a host is required (RFC
    /// 9110 §4.2.1: a recipient MUST reject an empty one).
    AbsoluteForm,
    /// CONNECT's `uri-host ":" port`: host and port both required (RFC
    /// 9110 §9.3.6: "there is no default port").
    AuthorityForm,
}

/// Checks an authority for `what`. Userinfo (`user@`) is refused
/// everywhere: in a target, RFC 9110 §4.2.4 says to treat it as an error,
/// as it mostly serves to disguise the host (Apache's strict mode and
/// nginx answer 400, hyper passes it on); in a Host field `@` is not
/// allowed at all (nginx and hyper take it).
pub(crate) fn check_authority(a: &[u8], what: Use) -> Result<(), &'static str> {
    let invalid = match what {
        Use::HostField => "invalid Host",
        Use::AbsoluteForm => "invalid authority in absolute-form target",
        Use::AuthorityForm => "invalid authority-form target",
    };
    if what == Use::HostField && a.is_empty() {
        return Ok(());
    }
    if a.contains(&b'@') {
        return Err(match what {
            Use::HostField => invalid,
            _ => "userinfo in the request target",
        });
    }
    let (host, port) = split_host_port(a).ok_or(invalid)?;
    // An empty host with a port (`:80`) is no authority of an http URI,
    // and not the empty value §7.2 allows for a target without one.
    if host.is_empty() {
        return Err(invalid);
    }
    match (what, port) {
        (Use::AuthorityForm, None | Some([])) => Err(invalid),
        _ => Ok(()),
    }
}

/// Splits `host [ ":" port ]` and checks both parts: the host as an IP
/// literal or a reg-name (which an IPv4 address also is), the port as
/// digits (any number of them: RFC 3986 §3.2.3 sets no bound, and an empty
/// port means the default one). `None` if either is malformed.
fn split_host_port(a: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let host_len = if a.first() == Some(&b'[') {
        let close = a.iter().position(|&b| b == b']')?;
        if !is_ip_literal(&a[1..close]) {
            return None;
        }
        close + 1
    } else {
        let end = a.iter().position(|&b| b == b':').unwrap_or(a.len());
        if !all_pct(&a[..end], |b| is_unreserved(b) || is_sub_delim(b)) {
            return None;
        }
        end
    };
    let (host, rest) = a.split_at(host_len);
    match rest {
        [] => Some((host, None)),
        [b':', port @ ..] if port.iter().all(u8::is_ascii_digit) => Some((host, Some(port))),
        _ => None,
    }
}

/// The inside of `[...]`: an IPv6 address (std's parser takes exactly RFC
/// 3986's `IPv6address`, embedded IPv4 included, and no zone identifier)
/// or an `IPvFuture`.
fn is_ip_literal(inner: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = inner {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (version, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':');
    }
    std::str::from_utf8(inner).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables against the RFCs' definitions, spelled out.
    #[test]
    fn classes_match_their_grammar() {
        for b in 0..=255u8 {
            let alnum = b.is_ascii_alphanumeric();
            let unreserved = alnum || b"-._~".contains(&b);
            let pchar = unreserved || b"!$&'()*+,;=".contains(&b) || b":@".contains(&b);
            assert_eq!(is_tchar(b), alnum || b"!#$%&'*+-.^_`|~".contains(&b), "{b}");
            assert_eq!(is_unreserved(b), unreserved, "{b}");
            assert_eq!(is_pchar(b), pchar, "{b}");
            assert_eq!(is_target_byte(b), pchar || b"/?%[]".contains(&b), "{b}");
        }
    }

    #[test]
    fn forms() {
        let cases: &[(&str, bool, Result<Form, ()>)] = &[
            ("/", false, Ok(Form::Origin)),
            ("//a/./b;p=1:@!$&'()*+,=", false, Ok(Form::Origin)),
            ("/a?b=c&d=/e?f", false, Ok(Form::Origin)),
            ("/a%2Fb%c3%a9", false, Ok(Form::Origin)),
            ("/a%2", false, Err(())),
            ("/a%zz", false, Err(())),
            ("/a#f", false, Err(())),
            ("/a[1]", false, Err(())),
            ("/a|b", false, Err(())),
            ("/a?b|c", false, Err(())),
            ("/a\\b", false, Err(())),
            ("*", false, Ok(Form::Asterisk)),
            ("*", true, Ok(Form::Asterisk)),
            ("http://a", false, Ok(Form::Absolute)),
            ("HTTPS://a:8443/p?q", false, Ok(Form::Absolute)),
            ("http://a?q", false, Ok(Form::Absolute)),
            ("http://[::1]:80/", false, Ok(Form::Absolute)),
            ("http://a:/", false, Ok(Form::Absolute)),
            ("http:///a", false, Err(())),
            ("http://:80/", false, Err(())),
            ("http://u@a/", false, Err(())),
            ("http://a:8x/", false, Err(())),
            ("http://a/#f", false, Err(())),
            ("ftp://a/", false, Err(())),
            ("http:a", false, Err(())),
            ("a:80", false, Err(())),
            ("a:80", true, Ok(Form::Authority)),
            ("[::1]:443", true, Ok(Form::Authority)),
            ("a", true, Err(())),
            ("a:", true, Err(())),
            ("/", true, Ok(Form::Origin)),
        ];
        for &(target, connect, want) in cases {
            let got = target_form(target.as_bytes(), connect).map_err(|_| ());
            assert_eq!(got, want, "{target:?} (CONNECT: {connect})");
        }
    }

    #[test]
    fn host_fields() {
        let ok = [
            "",
            "a",
            "a.example:8080",
            "a:",
            "a:99999",
            "a_b~c",
            "a%41",
            "127.0.0.1",
            "[::1]",
            "[::1]:80",
            "[::ffff:1.2.3.4]",
            "[v1.a:b]",
            "!$&'()*+,;=",
        ];
        for v in ok {
            assert_eq!(
                check_authority(v.as_bytes(), Use::HostField),
                Ok(()),
                "{v:?}"
            );
        }
        let bad = [
            ":80",
            "a:8x",
            "a:1:2",
            "a b",
            "a/b",
            "u@a",
            "a%zz",
            "a%4",
            "[zz]",
            "[::1",
            "[::1]x",
            "[fe80::1%25eth0]",
            "[v.a]",
            "[v1.]",
            "a\\b",
        ];
        for v in bad {
            assert!(
                check_authority(v.as_bytes(), Use::HostField).is_err(),
                "{v:?}"
            );
        }
    }
}
