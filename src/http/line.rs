//! The request line (RFC 9112 §3), `method SP request-target SP
//! HTTP-version`, checked byte by byte as it arrives.
//!
//! Each byte is checked once, against what the grammar allows at its
//! place, so bytes that can no longer begin a request line are refused on
//! arrival with 400: a TLS ClientHello (`16 03 ...`) or binary noise is
//! answered at its first byte, instead of holding the connection until
//! `--header-timeout` ends it with 408. nginx and hyper also refuse such
//! bytes at once. Once the line end has arrived the line is judged whole,
//! before any field line: its version (§2.3), then its target's form
//! (§3.2, see [`uri`]) against its method.
//!
//! The checks are monotone: if some bytes are refused, so is every longer
//! input that starts with them, with the same status. That is what makes
//! the verdict the same whether a head arrives whole or a byte at a time.

use super::uri::{self, Form};
use super::{Error, Version};

/// Empty lines accepted before a request line. RFC 9112 §2.2 asks a server
/// to ignore at least one (clients once sent a CRLF after a POST body, and
/// it may open the next pipelined request). Apache ignores 10
/// (`DEFAULT_LIMIT_BLANK_LINES`), then answers 400; so do we. nginx and
/// hyper skip any number, up to their buffer size. More than a few can
/// only be a client that is not speaking HTTP, and they are no long URI:
/// 400, not 414.
pub(crate) const MAX_EMPTY_LINES: usize = 10;

/// `HTTP-version = HTTP-name "/" DIGIT "." DIGIT`, `D` standing for a
/// digit. `HTTP-name` is case-sensitive (§2.3).
const VERSION_SHAPE: &[u8; 8] = b"HTTP/D.D";

/// What the next byte belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Part {
    /// Empty lines before the request line.
    #[default]
    Lead,
    /// A CR among them, which must be followed by LF.
    LeadCr,
    Method,
    Target,
    /// A `%` in the target: this many hex digits still to come.
    Pct(u8),
    /// The version: the index in [`VERSION_SHAPE`] of the next byte.
    Version(u8),
    /// The CR that ends the line, which must be followed by LF.
    Cr,
    /// The line is complete and valid, and this is what was found.
    Done(Judged),
}

/// A request line being received: how far its bytes have been checked, so
/// that a head trickling in is checked once, not once a read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LineScan {
    part: Part,
    /// Offset of the next byte to check.
    at: usize,
    /// Offset of the first byte of the current part.
    mark: usize,
    /// Offset of the method's first byte, past the empty lines.
    start: usize,
    /// Offset of the CR or LF that ends the line.
    end: usize,
    empty_lines: usize,
}

/// Where a judged line's method and target end, and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Judged {
    method_end: usize,
    target_end: usize,
    version: Version,
}

/// Where a complete request line lies in the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineSpan {
    /// Offset of the method's first byte.
    pub(crate) start: usize,
    /// Offset just past the LF: where the field lines begin.
    pub(crate) next: usize,
    judged: Judged,
}

impl LineSpan {
    /// The line this span was judged to be, in `head`, the bytes it was
    /// scanned in (at least up to [`LineSpan::next`]).
    pub(crate) fn line<'a>(&self, head: &'a [u8]) -> Result<RequestLine<'a>, Error> {
        let malformed = || Error::Malformed("invalid request line");
        let j = self.judged;
        let (method, target) = (
            head.get(self.start..j.method_end).ok_or_else(malformed)?,
            head.get(j.method_end + 1..j.target_end)
                .ok_or_else(malformed)?,
        );
        // The scanner let only ASCII through.
        Ok(RequestLine {
            method: std::str::from_utf8(method).map_err(|_| malformed())?,
            target: std::str::from_utf8(target).map_err(|_| malformed())?,
            version: j.version,
        })
    }
}

impl LineScan {
    /// Checks the bytes of `head` (a head received so far, from its first
    /// byte, including any empty lines before the request line) that the
    /// last call did not see. Returns where the line lies once it is
    /// complete and valid, `None` while it may still become so, and an
    /// error as soon as it cannot.
    pub(crate) fn scan(&mut self, head: &[u8]) -> Result<Option<LineSpan>, Error> {
        loop {
            if let Part::Done(judged) = self.part {
                return Ok(Some(LineSpan {
                    start: self.start,
                    next: self.at,
                    judged,
                }));
            }
            let Some(&b) = head.get(self.at) else {
                return Ok(None);
            };
            let at = self.at;
            self.at += 1;
            self.part = match (self.part, b) {
                (Part::Lead | Part::LeadCr, b'\n') => {
                    self.empty_lines += 1;
                    if self.empty_lines > MAX_EMPTY_LINES {
                        return Err(Error::Malformed(
                            "too many empty lines before the request line",
                        ));
                    }
                    Part::Lead
                }
                (Part::Lead, b'\r') => Part::LeadCr,
                (Part::Cr, b'\n') => self.finish(head)?,
                // §2.2: a bare CR is invalid anywhere but in content.
                (Part::LeadCr | Part::Cr, _) => {
                    return Err(Error::Malformed("CR not followed by LF"))
                }
                (Part::Lead, b) if uri::is_tchar(b) => {
                    self.start = at;
                    Part::Method
                }
                (Part::Lead, _) => return Err(Error::Malformed("not an HTTP request")),
                (Part::Method, b) if uri::is_tchar(b) => Part::Method,
                (Part::Method, b' ') => {
                    self.mark = self.at;
                    Part::Target
                }
                (Part::Method, _) => return Err(Error::Malformed("invalid method")),
                (Part::Target, b' ') if at > self.mark => {
                    self.mark = self.at;
                    Part::Version(0)
                }
                (Part::Target, b'%') => Part::Pct(2),
                (Part::Target, b) if uri::is_target_byte(b) => Part::Target,
                // `GET /` and nothing more is an HTTP/0.9 request, which
                // RFC 9112 no longer defines.
                (Part::Target, b'\r' | b'\n') => return Err(Error::Malformed("no HTTP version")),
                (Part::Target, _) => return Err(Error::Malformed("invalid request target")),
                (Part::Pct(2), b) if b.is_ascii_hexdigit() => Part::Pct(1),
                (Part::Pct(_), b) if b.is_ascii_hexdigit() => Part::Target,
                (Part::Pct(_), _) => {
                    return Err(Error::Malformed(
                        "invalid percent-encoding in the request target",
                    ))
                }
                (Part::Version(i), b) if fits_version(i, b) => Part::Version(i + 1),
                (Part::Version(8), b'\r' | b'\n') => {
                    self.end = at;
                    if b == b'\r' {
                        Part::Cr
                    } else {
                        self.finish(head)?
                    }
                }
                (Part::Version(_), _) => return Err(Error::Malformed("invalid HTTP version")),
                // Returned above, before a byte is taken.
                (done @ Part::Done(_), _) => done,
            };
        }
    }

    /// The line end has arrived: judge the line whole, once.
    fn finish(&self, head: &[u8]) -> Result<Part, Error> {
        let line = parse_request_line(&head[self.start..self.end])?;
        let method_end = self.start + line.method.len();
        Ok(Part::Done(Judged {
            method_end,
            target_end: method_end + 1 + line.target.len(),
            version: line.version,
        }))
    }
}

/// Whether `b` may be byte `i` of the version.
fn fits_version(i: u8, b: u8) -> bool {
    match VERSION_SHAPE.get(usize::from(i)) {
        Some(b'D') => b.is_ascii_digit(),
        Some(&want) => b == want,
        None => false,
    }
}

/// A complete request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestLine<'a> {
    pub(crate) method: &'a str,
    pub(crate) target: &'a str,
    pub(crate) version: Version,
}

/// The request line at the start of `head`, after any empty lines, and the
/// offset where the field lines begin.
pub(crate) fn request_line(head: &[u8]) -> Result<(RequestLine<'_>, usize), Error> {
    let span = LineScan::default()
        .scan(head)?
        .ok_or(Error::Malformed("incomplete head"))?;
    Ok((span.line(head)?, span.next))
}

/// Judges a request line whose bytes have passed the scanner: its version,
/// then its target against its method.
fn parse_request_line(line: &[u8]) -> Result<RequestLine<'_>, Error> {
    let malformed = || Error::Malformed("invalid request line");
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    // The scanner let only ASCII through.
    let method = std::str::from_utf8(method).map_err(|_| malformed())?;
    let target = std::str::from_utf8(target).map_err(|_| malformed())?;
    let version = match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if minor.is_ascii_digit() => {
            match (major, minor) {
                (b'1', b'0') => Version::Http10,
                // RFC 9110 §2.5: a higher minor version of a major version
                // we implement is processed as the highest minor version we
                // conform to; 505 is for a major version we do not speak
                // (§15.6.6). nginx serves HTTP/1.2 as well; hyper (through
                // httparse) answers 400.
                (b'1', _) => Version::Http11,
                // HTTP/0.9 had no version in its request line and HTTP/2
                // does not start with one: both are well-formed versions
                // we do not speak, so 505 (nginx answers 400 to HTTP/0.9,
                // hyper 400 to both).
                _ => return Err(Error::UnsupportedVersion),
            }
        }
        _ => return Err(Error::Malformed("invalid HTTP version")),
    };
    check_target(method, target.as_bytes())?;
    Ok(RequestLine {
        method,
        target,
        version,
    })
}

/// RFC 9112 §3.2: origin-form and absolute-form for any method but
/// CONNECT, asterisk-form only for OPTIONS, authority-form only for
/// CONNECT, which corral does not implement: 501 (RFC 9110 §9.1), as for
/// any method a server does not support. nginx answers 400 to a CONNECT
/// with an authority and 405 to one without; hyper hands both to the
/// service. CONNECT with any other form is malformed: 400.
fn check_target(method: &str, target: &[u8]) -> Result<(), Error> {
    let connect = method == "CONNECT";
    match uri::target_form(target, connect).map_err(Error::Malformed)? {
        Form::Authority => Err(Error::NotImplemented("CONNECT")),
        _ if connect => Err(Error::Malformed("CONNECT takes an authority-form target")),
        Form::Asterisk if method != "OPTIONS" => {
            Err(Error::Malformed("asterisk-form target is only for OPTIONS"))
        }
        Form::Origin | Form::Absolute | Form::Asterisk => Ok(()),
    }
}
