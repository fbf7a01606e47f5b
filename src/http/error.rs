use std::fmt;

/// The peer broke the protocol, or asked for more than the limits allow.
///
/// [`Error::status`] is the one place that maps a protocol failure to a
/// status code. Every error ends the connection: once framing is in doubt we
/// no longer know where the next request starts (RFC 9112 §11.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The message is not valid HTTP/1.1, or the bytes are not HTTP at
    /// all; the text says what was wrong.
    Malformed(&'static str),
    /// The request target does not fit in the head limit.
    UriTooLong,
    /// The request line plus headers exceed the head limit.
    HeadTooLarge,
    /// More header lines than the configured maximum.
    TooManyHeaders,
    /// The body is larger than the configured maximum.
    BodyTooLarge,
    /// A transfer coding other than `chunked` (RFC 9112 §6.1).
    UnsupportedTransferCoding,
    /// A method the server cannot frame, such as `CONNECT`.
    NotImplemented(&'static str),
    /// A well-formed HTTP version whose major version is not 1 (a
    /// malformed one is [`Error::Malformed`]).
    UnsupportedVersion,
    /// An `Expect` value other than `100-continue` (RFC 9110 §10.1.1).
    ExpectationFailed,
    /// The head did not arrive before its deadline.
    HeadTimeout,
    /// The body stalled, or arrived slower than the minimum rate.
    BodyTimeout,
}

impl Error {
    /// The status code of the response that reports this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::Malformed(_) => 400,
            Error::HeadTimeout | Error::BodyTimeout => 408,
            Error::BodyTooLarge => 413,
            Error::UriTooLong => 414,
            Error::ExpectationFailed => 417,
            Error::HeadTooLarge | Error::TooManyHeaders => 431,
            Error::UnsupportedTransferCoding | Error::NotImplemented(_) => 501,
            Error::UnsupportedVersion => 505,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed(what) => write!(f, "malformed request: {what}"),
            Error::UriTooLong => f.write_str("request target too long"),
            Error::HeadTooLarge => f.write_str("request head too large"),
            Error::TooManyHeaders => f.write_str("too many header fields"),
            Error::BodyTooLarge => f.write_str("request body too large"),
            Error::UnsupportedTransferCoding => {
                f.write_str("unsupported transfer coding (only chunked is accepted)")
            }
            Error::NotImplemented(what) => write!(f, "not implemented: {what}"),
            Error::UnsupportedVersion => f.write_str("unsupported HTTP version (use 1.0 or 1.1)"),
            Error::ExpectationFailed => f.write_str("unsupported expectation"),
            Error::HeadTimeout => f.write_str("request head not received in time"),
            Error::BodyTimeout => f.write_str("request body not received in time"),
        }
    }
}

impl std::error::Error for Error {}
