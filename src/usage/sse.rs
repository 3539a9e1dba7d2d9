//! An incremental parser for Server-Sent Events, fed whatever chunks the
//! network delivers. Events, lines and multi-byte characters may be split
//! anywhere; lines end in `\n`, `\r\n` or `\r`. The parser only observes:
//! the bytes it is fed are relayed untouched by the caller.

/// One dispatched event: its `event:` name (if any) and its `data:` lines
/// joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub name: Option<String>,
    pub data: Vec<u8>,
}

/// Decides, from an event's name, whether its data is worth keeping.
/// Unwanted events (the many `content_block_delta`s) are not buffered.
pub type Interest = fn(Option<&str>) -> bool;

pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` opening the next one
    /// belongs to the same line break.
    after_cr: bool,
    name: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    wanted: bool,
    interest: Interest,
    /// Longest line kept, and longest data kept for one wanted event;
    /// longer lines are truncated, and an event whose data lines add up to
    /// more is dispatched without its data (its JSON then fails to parse,
    /// which the caller logs). An upstream cannot make the parser hold
    /// more, whatever it sends.
    max_line: usize,
    /// The current event's data went past `max_line`.
    overflowed: bool,
}

impl SseParser {
    pub fn new(interest: Interest, max_line: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            name: None,
            data: Vec::new(),
            has_data: false,
            wanted: interest(None),
            interest,
            max_line,
            overflowed: false,
        }
    }

    /// Feeds one chunk; calls `on_event` for every event it completes.
    pub fn feed(&mut self, mut chunk: &[u8], on_event: &mut dyn FnMut(SseEvent)) {
        if chunk.is_empty() {
            return;
        }
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        while let Some(end) = chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.push_line_part(&chunk[..end]);
            self.end_line(on_event);
            let is_cr = chunk[end] == b'\r';
            chunk = &chunk[end + 1..];
            if is_cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push_line_part(chunk);
    }

    /// What must be written so that bytes appended after those fed so far
    /// start a fresh event: nothing at an event boundary, one line break
    /// after a finished line of an unfinished event, two mid-line.
    pub fn to_boundary(&self) -> &'static [u8] {
        if !self.line.is_empty() {
            b"\n\n"
        } else if self.has_data || self.name.is_some() {
            b"\n"
        } else {
            b""
        }
    }

    fn push_line_part(&mut self, part: &[u8]) {
        let room = self.max_line.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
    }

    fn end_line(&mut self, on_event: &mut dyn FnMut(SseEvent)) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(on_event);
        } else {
            self.field(&line);
        }
    }

    fn field(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            return; // a comment, such as a keep-alive
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"event" => {
                let event = String::from_utf8_lossy(value).into_owned();
                self.wanted = (self.interest)(Some(&event));
                self.name = Some(event);
            }
            b"data" => {
                if self.wanted && !self.overflowed {
                    let separator = usize::from(self.has_data);
                    if self.data.len() + separator + value.len() > self.max_line {
                        self.overflowed = true;
                        self.data = Vec::new();
                    } else {
                        if self.has_data {
                            self.data.push(b'\n');
                        }
                        self.data.extend_from_slice(value);
                    }
                }
                self.has_data = true;
            }
            _ => {} // id, retry and unknown fields do not matter here
        }
    }

    fn dispatch(&mut self, on_event: &mut dyn FnMut(SseEvent)) {
        let name = self.name.take();
        let data = std::mem::take(&mut self.data);
        self.overflowed = false;
        let complete = std::mem::take(&mut self.has_data);
        let wanted = std::mem::replace(&mut self.wanted, (self.interest)(None));
        if complete && wanted {
            on_event(SseEvent { name, data });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn everything(_: Option<&str>) -> bool {
        true
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new(everything, 1 << 20);
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut |event| events.push(event));
        }
        events
    }

    fn event(name: &str, data: &str) -> SseEvent {
        SseEvent {
            name: Some(name.into()),
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn an_event_whose_data_lines_add_up_past_the_limit_is_dispatched_without_its_data() {
        let mut parser = SseParser::new(everything, 16);
        let mut events = Vec::new();
        let many_lines = "data: 0123456789\n".repeat(1000);

        parser.feed(
            format!("event: big\n{many_lines}\nevent: small\ndata: {{}}\n\n").as_bytes(),
            &mut |event| events.push(event),
        );

        assert_eq!(events, [event("big", ""), event("small", "{}")]);
    }

    #[test]
    fn events_are_dispatched_on_blank_lines_with_any_line_ending() {
        for stream in [
            "event: a\ndata: 1\n\nevent: b\ndata: 2\n\n",
            "event: a\r\ndata: 1\r\n\r\nevent: b\r\ndata: 2\r\n\r\n",
            "event: a\rdata: 1\r\revent: b\rdata: 2\r\r",
        ] {
            assert_eq!(
                parse_chunks(&[stream.as_bytes()]),
                [event("a", "1"), event("b", "2")]
            );
        }
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_break() {
        let events = parse_chunks(&[b"event: a\r", b"\ndata: 1\r", b"\n\r", b"\n"]);
        assert_eq!(events, [event("a", "1")]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored_and_data_lines_join() {
        let events = parse_chunks(&[b": ping\nid: 7\nevent: a\ndata: x\ndata:y\nretry: 5\n\n"]);
        assert_eq!(events, [event("a", "x\ny")]);
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        assert!(parse_chunks(&[b"event: a\ndata: 1\n"]).is_empty());
    }

    #[test]
    fn boundary_needs_depend_on_where_the_stream_stopped() {
        let mut parser = SseParser::new(everything, 1 << 20);
        let mut ignore = |_| {};
        parser.feed(b"event: a\ndata: 1\n\n", &mut ignore);
        assert_eq!(parser.to_boundary(), b"");
        parser.feed(b"event: b\ndata: 2\n", &mut ignore);
        assert_eq!(parser.to_boundary(), b"\n");
        parser.feed(b"data: 3", &mut ignore);
        assert_eq!(parser.to_boundary(), b"\n\n");
    }

    #[test]
    fn unwanted_events_keep_no_data() {
        let mut parser = SseParser::new(|name| name == Some("keep"), 1 << 20);
        let mut events = Vec::new();
        parser.feed(
            b"event: skip\ndata: big\n\nevent: keep\ndata: 1\n\n",
            &mut |e| events.push(e),
        );
        assert_eq!(events, [event("keep", "1")]);
    }

    proptest! {
        #[test]
        fn prop_any_chunking_gives_the_same_events(
            cuts in proptest::collection::vec(0usize..400, 0..40),
            crlf in any::<bool>(),
        ) {
            let mut stream = String::new();
            for i in 0..6 {
                stream.push_str(&format!(": keep-alive\nevent: e{i}\ndata: {{\"n\":{i},\"t\":\"h\u{e9}\"}}\n\n"));
            }
            if crlf {
                stream = stream.replace('\n', "\r\n");
            }
            let bytes = stream.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for cut in cuts {
                chunks.push(&bytes[start..cut]);
                start = cut;
            }
            chunks.push(&bytes[start..]);

            prop_assert_eq!(parse_chunks(&chunks), parse_chunks(&[bytes]));
            prop_assert_eq!(parse_chunks(&[bytes]).len(), 6);
        }
    }
}
