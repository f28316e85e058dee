//! A minimal, incremental HTTP/1.1 response reader: status line and headers (via `httparse`),
//! then the body framed by Content-Length, chunked transfer coding, or the end of the connection
//! (RFC 9112 section 6.3). Bodies are counted and skipped, never stored.

/// Why a response could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn perr<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

/// What [`ResponseReader::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feed {
    /// The bytes were consumed; the response is not complete yet.
    NeedMore,
    /// The response is complete after `consumed` bytes of this feed.
    Done { consumed: usize },
}

/// The outcome of a complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub status: u16,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(Body),
}

/// Reads one response at a time. `feed` it every byte received; it tells how many bytes belonged
/// to the response once complete (the rest belongs to the next one).
#[derive(Debug)]
pub(crate) struct ResponseReader {
    state: State,
    outcome: Outcome,
}

/// Upper bound on response headers; bigger heads are a protocol error.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

impl ResponseReader {
    pub fn new() -> ResponseReader {
        ResponseReader {
            state: State::Head,
            outcome: Outcome {
                status: 0,
                keep_alive: true,
            },
        }
    }

    /// The status and connection reuse of the last complete response.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Whether the reader is still waiting for the head, so unconsumed bytes must be kept.
    pub fn in_head(&self) -> bool {
        self.state == State::Head
    }

    /// Feeds bytes. In the head state, nothing is consumed until the whole head is present, so the
    /// caller keeps the bytes and feeds them again with more appended (`NeedMore` then means
    /// "consumed 0"). In the body state every byte given is consumed unless the response ends.
    pub fn feed(&mut self, buf: &[u8]) -> Result<Feed, ProtocolError> {
        let mut pos = 0;
        loop {
            match &mut self.state {
                State::Head => {
                    let rest = &buf[pos..];
                    match parse_head(rest)? {
                        None => {
                            if rest.len() >= MAX_HEAD {
                                return perr(format!(
                                    "the response head is larger than {MAX_HEAD} bytes"
                                ));
                            }
                            // Partial: nothing is consumed; the caller keeps the bytes and
                            // refeeds them. An interim (1xx) response before `pos` is simply
                            // skipped again then.
                            return Ok(Feed::NeedMore);
                        }
                        Some(head) => {
                            pos += head.len;
                            if (100..200).contains(&head.status) {
                                if head.status == 101 {
                                    return perr("the server switched protocols (101), which a load test cannot follow");
                                }
                                // Interim response: the final one follows.
                                continue;
                            }
                            self.outcome = Outcome {
                                status: head.status,
                                keep_alive: head.keep_alive && head.body != Body::UntilClose,
                            };
                            match head.body {
                                Body::Length(0) => {
                                    self.state = State::Head;
                                    return Ok(Feed::Done { consumed: pos });
                                }
                                body => self.state = State::Body(body),
                            }
                        }
                    }
                }
                State::Body(Body::Length(remaining)) => {
                    let avail = (buf.len() - pos) as u64;
                    if avail < *remaining {
                        *remaining -= avail;
                        return Ok(Feed::NeedMore);
                    }
                    pos += *remaining as usize;
                    self.state = State::Head;
                    return Ok(Feed::Done { consumed: pos });
                }
                State::Body(Body::Chunked(chunked)) => {
                    let (used, done) = chunked.feed(&buf[pos..])?;
                    pos += used;
                    if done {
                        self.state = State::Head;
                        return Ok(Feed::Done { consumed: pos });
                    }
                    return Ok(Feed::NeedMore);
                }
                State::Body(Body::UntilClose) => return Ok(Feed::NeedMore),
            }
        }
    }

    /// The connection ended. Returns whether that completed the response (a body framed by the
    /// end of the connection); otherwise the response was cut short.
    pub fn eof(&mut self) -> bool {
        if self.state == State::Body(Body::UntilClose) {
            self.state = State::Head;
            true
        } else {
            false
        }
    }
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    keep_alive: bool,
    body: Body,
    /// Bytes of the head including the blank line.
    len: usize,
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses a response head; `Ok(None)` when more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ProtocolError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) => len,
        Err(e) => return perr(format!("malformed response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let mut keep_alive = !http10;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                keep_alive = false;
            } else if has_token(h.value, "keep-alive") {
                keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding decides the framing.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            match (v, length) {
                (None, _) => {
                    return perr(format!(
                        "invalid Content-Length `{}`",
                        String::from_utf8_lossy(h.value)
                    ))
                }
                (Some(a), Some(b)) if a != b => {
                    return perr(format!("conflicting Content-Length values {b} and {a}"))
                }
                (Some(a), _) => length = Some(a),
            }
        }
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Body::Length(0)
    } else if let Some(chunked) = chunked {
        if chunked {
            Body::Chunked(Chunked::new())
        } else {
            Body::UntilClose
        }
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::UntilClose
    };
    Ok(Some(Head {
        status,
        keep_alive,
        body,
        len,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `digits` so far.
    Size {
        digits: u8,
    },
    /// After the size: extensions until CR.
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
}

/// The chunked transfer coding (RFC 9112 section 7.1), decoded incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunked {
    state: ChunkState,
    /// The size being read, then the data bytes left in the current chunk.
    size: u64,
}

impl Chunked {
    fn new() -> Chunked {
        Chunked {
            state: ChunkState::Size { digits: 0 },
            size: 0,
        }
    }

    /// Consumes bytes; returns (bytes used, whether the body ended).
    fn feed(&mut self, buf: &[u8]) -> Result<(usize, bool), ProtocolError> {
        use ChunkState::*;
        let mut i = 0;
        while i < buf.len() {
            if self.state == Data {
                let take = (self.size).min((buf.len() - i) as u64);
                self.size -= take;
                i += take as usize;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match (self.state, b) {
                (Size { digits }, b) if b.is_ascii_hexdigit() => {
                    if digits >= 15 {
                        return perr("a chunk size is too large");
                    }
                    self.size = self.size * 16 + (b as char).to_digit(16).unwrap_or(0) as u64;
                    Size { digits: digits + 1 }
                }
                (Size { digits }, b';' | b' ' | b'\t') if digits > 0 => Ext,
                (Size { digits }, b'\r') if digits > 0 => SizeLf,
                (Ext, b'\r') => SizeLf,
                (Ext, b'\n') => return perr("a chunk size line ends without CR"),
                (Ext, _) => Ext,
                (SizeLf, b'\n') if self.size == 0 => TrailerStart,
                (SizeLf, b'\n') => Data,
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Size { digits: 0 },
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | TrailerLine, b'\n') => {
                    return perr("a trailer line ends without CR")
                }
                (TrailerLine, b'\r') => TrailerLf,
                (TrailerStart | TrailerLine, _) => TrailerLine,
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => return Ok((i, true)),
                (state, b) => {
                    return perr(format!(
                        "malformed chunked body: unexpected byte 0x{b:02x} in {state:?}"
                    ))
                }
            };
        }
        Ok((i, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split into pieces of `step` bytes the way the load loop does: unconsumed
    /// head bytes are kept and refed. Returns outcomes and total bytes consumed per response.
    fn read_all(
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<(Outcome, usize)>, usize), ProtocolError> {
        let mut r = ResponseReader::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut in_response = 0usize;
        for piece in input.chunks(step) {
            pending.extend_from_slice(piece);
            loop {
                match r.feed(&pending)? {
                    Feed::NeedMore => {
                        if !r.in_head() {
                            in_response += pending.len();
                            pending.clear();
                        }
                        break;
                    }
                    Feed::Done { consumed } => {
                        out.push((r.outcome(), in_response + consumed));
                        in_response = 0;
                        pending.drain(..consumed);
                        if pending.is_empty() {
                            break;
                        }
                    }
                }
            }
        }
        if !pending.is_empty() || !r.in_head() {
            let rest = pending.len();
            if r.eof() {
                out.push((r.outcome(), in_response + rest));
            }
        }
        Ok((out, pending.len()))
    }

    fn every_split(input: &[u8]) -> Vec<(Outcome, usize)> {
        let (whole, _) = read_all(input, input.len().max(1)).unwrap();
        for step in 1..input.len() {
            let (split, _) = read_all(input, step).unwrap();
            assert_eq!(
                split, whole,
                "feeding {step} bytes at a time changed the result"
            );
        }
        whole
    }

    const OK: Outcome = Outcome {
        status: 200,
        keep_alive: true,
    };

    #[test]
    fn content_length_responses_back_to_back() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let two = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let input = [&one[..], &two[..]].concat();
        let got = every_split(&input);
        assert_eq!(
            got,
            vec![
                (OK, one.len()),
                (
                    Outcome {
                        status: 404,
                        keep_alive: true
                    },
                    two.len()
                )
            ]
        );
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;name=v\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(every_split(input), vec![(OK, input.len())]);
        let plain = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(every_split(plain), vec![(OK, plain.len())]);
    }

    #[test]
    fn connection_close_and_http10_are_not_reused() {
        let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
        assert!(!every_split(close)[0].0.keep_alive);
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert!(!every_split(old)[0].0.keep_alive);
        let old_ka = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok";
        assert!(every_split(old_ka)[0].0.keep_alive);
    }

    #[test]
    fn body_until_close_completes_only_at_eof() {
        let input = b"HTTP/1.1 200 OK\r\n\r\nstreamed until the end";
        let got = every_split(input);
        assert_eq!(
            got,
            vec![(
                Outcome {
                    status: 200,
                    keep_alive: false
                },
                input.len()
            )]
        );
    }

    #[test]
    fn no_body_statuses_and_interim_responses() {
        let input =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n";
        let got = every_split(input);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.status, 204);
    }

    #[test]
    fn a_cut_response_is_not_complete() {
        let mut r = ResponseReader::new();
        assert_eq!(
            r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
            Ok(Feed::NeedMore)
        );
        assert!(!r.eof(), "EOF in a Content-Length body is a cut response");
        let mut r = ResponseReader::new();
        assert_eq!(r.feed(b"HTTP/1.1 200"), Ok(Feed::NeedMore));
        assert!(!r.eof());
    }

    #[test]
    fn malformed_responses_are_protocol_errors() {
        for (input, expect) in [
            (&b"SSH-2.0-OpenSSH\r\n\r\n"[..], "malformed response head"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "invalid Content-Length `x`",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "conflicting Content-Length values 1 and 2",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "malformed chunked body",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n",
                "chunk size is too large",
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "switched protocols",
            ),
        ] {
            let err = ResponseReader::new().feed(input).unwrap_err();
            assert!(err.0.contains(expect), "{err} should contain {expect}");
        }
    }

    #[test]
    fn oversized_heads_are_refused() {
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        let err = ResponseReader::new().feed(&big).unwrap_err();
        assert!(err.0.contains("larger than"), "{err}");
    }
}

/// Property tests of the load generator's response reader on hostile servers: 256 byte
/// streams (HTTP-shaped and arbitrary) split at random points; it never panics, never
/// consumes more than it was given, and a well-formed response always completes with its status.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn drive(stream: &[u8], cuts: &[prop::sample::Index]) {
        let mut r = ResponseReader::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut at = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.push(stream.len());
        points.sort();
        for p in points {
            pending.extend_from_slice(&stream[at..p.max(at)]);
            at = p.max(at);
            match r.feed(&pending) {
                Ok(Feed::NeedMore) => {
                    if !r.in_head() {
                        pending.clear();
                    }
                }
                Ok(Feed::Done { consumed }) => {
                    assert!(consumed <= pending.len());
                    pending.drain(..consumed);
                }
                Err(_) => return,
            }
        }
        let _ = r.eof();
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn arbitrary_streams_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            drive(&bytes, &cuts);
        }

        #[test]
        fn http_shaped_streams_never_panic(
            s in "(HTTP/1\\.[01] [0-9]{1,4} [A-Z]{0,5}\r\n)?((Content-Length|Transfer-Encoding|Connection): [ -~]{0,12}\r\n){0,3}\r\n([0-9a-fA-F]{0,3}\r\n[a-z]{0,8}\r\n){0,3}",
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            drive(s.as_bytes(), &cuts);
        }

        #[test]
        fn well_formed_responses_complete(
            // 204 and 304 have no body whatever Content-Length says.
            status in (200u16..600).prop_filter("bodyless", |s| *s != 204 && *s != 304),
            body in "[a-z]{0,40}",
            cut in any::<prop::sample::Index>(),
        ) {
            let text = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let bytes = text.as_bytes();
            let mut r = ResponseReader::new();
            let split = cut.index(bytes.len() + 1);
            let first = r.feed(&bytes[..split]).unwrap();
            let done = match first {
                Feed::Done { consumed } => consumed == split,
                Feed::NeedMore if r.in_head() => matches!(r.feed(bytes).unwrap(), Feed::Done { consumed } if consumed == bytes.len()),
                Feed::NeedMore => matches!(r.feed(&bytes[split..]).unwrap(), Feed::Done { consumed } if consumed == bytes.len() - split),
            };
            prop_assert!(done);
            prop_assert_eq!(r.outcome().status, status);
        }
    }
}
