//! A reader of server-sent events (the `text/event-stream` format), fed
//! the bytes of a response as they arrive.

/// One event: its name (`message` when unnamed) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) name: String,
    pub(crate) data: String,
}

/// Splits a byte stream into events; comments and keep-alives are dropped.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
    name: Option<String>,
    data: Vec<String>,
}

/// A line longer than this without an end is refused, so a broken server
/// cannot make the reader hold an unbounded buffer.
const MAX_LINE: usize = 1 << 20;

impl SseParser {
    /// Takes `bytes`, returning the events they completed.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        if self.buffer.len() > MAX_LINE {
            return Err("the event stream sent a line over 1 MiB".to_owned());
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let name = self.name.take();
            if self.data.is_empty() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(SseEvent {
                name: name.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser
            .feed(b": keep-alive\n\nevent: run_st")
            .unwrap()
            .is_empty());
        let events = parser
            .feed(b"arted\r\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\n\n")
            .unwrap();
        assert_eq!(
            events,
            vec![
                SseEvent {
                    name: "run_started".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    name: "message".into(),
                    data: "x\ny".into()
                },
            ]
        );
    }

    #[test]
    fn endless_lines_are_refused() {
        let mut parser = SseParser::default();
        assert!(parser.feed(&vec![b'a'; MAX_LINE + 1]).is_err());
    }
}
