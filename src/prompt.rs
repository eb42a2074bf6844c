//! The client's line protocol: parsing a line into a command and rendering a
//! result as one line. Shared by the interactive prompt, pipes and one-shot use.

use crate::client::{Client, ClientError};
use crate::node::NodeStatus;
use crate::paxos::proposer::ProposerMode;
use std::net::SocketAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptCommand {
    Put { key: String, value: String },
    Get { key: String },
    Delete { key: String },
    Status,
    Help,
    Quit,
}

pub const USAGE: &str = "usage: PUT <key> <value> | GET <key> | DELETE <key> | STATUS | HELP | QUIT";

pub const HELP: &str = "\
PUT <key> <value>   store value (the rest of the line, spaces included) under key;
                    in double quotes it may be empty or hold escapes:
                    PUT k \"\"   PUT k \"line one\\nline two\"   (\\n \\r \\t \\\\ \\\" \\xHH \\u{HEX})
GET <key>           print the value (linearizable: read through the Paxos log);
                    an empty value, or one with a newline or other control
                    character, is printed quoted, so each command is one line
DELETE <key>        remove key
STATUS              show every replica: up/down, acceptor online, role, ballot, leader, slots
HELP                this text
QUIT                leave (also EXIT or Ctrl-D)
Verbs may be in any case.";

/// `Ok(None)` for a blank line or a `#` comment.
pub fn parse(line: &str) -> Result<Option<PromptCommand>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim_start();
    let one_key = |verb: &str| -> Result<String, String> {
        match rest.split_whitespace().collect::<Vec<_>>().as_slice() {
            [key] => Ok(key.to_string()),
            _ => Err(format!("{verb} takes exactly one key; {USAGE}")),
        }
    };
    let command = match verb.to_ascii_uppercase().as_str() {
        "PUT" | "SET" => {
            let (key, value) = rest
                .split_once(char::is_whitespace)
                .ok_or(format!("PUT needs a key and a value (PUT {rest} \"\" stores an empty one); {USAGE}"))?;
            PromptCommand::Put { key: key.to_string(), value: parse_value(value.trim_start())? }
        }
        "GET" => PromptCommand::Get { key: one_key("GET")? },
        "DELETE" | "DEL" => PromptCommand::Delete { key: one_key("DELETE")? },
        "STATUS" => PromptCommand::Status,
        "HELP" | "?" => PromptCommand::Help,
        "QUIT" | "EXIT" => PromptCommand::Quit,
        _ => return Err(format!("unknown command '{verb}'; {USAGE}")),
    };
    Ok(Some(command))
}

/// A value as typed: the rest of the line as it is, or, when it starts with a
/// double quote, a quoted string with escapes and nothing after its closing quote.
fn parse_value(text: &str) -> Result<String, String> {
    let Some(quoted) = text.strip_prefix('"') else {
        return Ok(text.to_string());
    };
    let mut value = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let after = chars.as_str();
                if !after.trim().is_empty() {
                    return Err(format!("text after the closing quote: '{after}'; quote the whole value"));
                }
                return Ok(value);
            }
            '\\' => value.push(match chars.next() {
                Some('n') => '\n',
                Some('r') => '\r',
                Some('t') => '\t',
                Some('0') => '\0',
                Some('\\') => '\\',
                Some('"') => '"',
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).collect();
                    match u8::from_str_radix(&hex, 16) {
                        Ok(byte) if hex.len() == 2 && byte.is_ascii() => byte as char,
                        _ => return Err(format!("\\x{hex}: give two hex digits of an ASCII character (00 to 7f)")),
                    }
                }
                Some('u') => {
                    let rest = chars.as_str();
                    let code = rest.strip_prefix('{').and_then(|r| r.split_once('}')).map(|(hex, _)| hex);
                    match code.and_then(|hex| u32::from_str_radix(hex, 16).ok()).and_then(char::from_u32) {
                        Some(c) => {
                            chars = rest[code.map_or(0, str::len) + 2..].chars();
                            c
                        }
                        None => return Err("\\u needs a character code in braces, e.g. \\u{e9}".into()),
                    }
                }
                Some(other) => {
                    return Err(format!("unknown escape \\{other}; use \\n \\r \\t \\0 \\\\ \\\" \\xHH or \\u{{HEX}}"))
                }
                None => break,
            }),
            c => value.push(c),
        }
    }
    Err("the value's closing quote is missing".into())
}

/// Whether a value, printed as it is, would not read back as itself: empty,
/// spread over lines, with edge spaces the prompt trims, starting with a
/// quote, or looking like the prompt's own answers.
pub fn needs_quoting(value: &str) -> bool {
    value.is_empty()
        || value.starts_with('"')
        || value.chars().any(char::is_control)
        || value.trim() != value
        || value == NOT_FOUND
        || value.starts_with("ERROR:")
}

/// The value in double quotes, with the escapes `parse_value` reads.
pub fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c if c.is_control() && c.is_ascii() => quoted.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => quoted.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// How the prompt shows a value: as it is, or quoted when it must be (see
/// `needs_quoting`), so that one answer is one line and reads back the same.
pub fn display_value(value: &str) -> String {
    if needs_quoting(value) {
        quote(value)
    } else {
        value.to_string()
    }
}

/// The outcome of one command: its line (a GET's value as stored), and how a
/// script should see it.
pub enum Outcome {
    Done(String),
    NotFound(String),
    Failed(ClientError),
}

pub const NOT_FOUND: &str = "(not found)";

pub fn execute(client: &mut Client, command: &PromptCommand) -> Outcome {
    let result = match command {
        PromptCommand::Put { key, value } => client.put(key, value).map(|()| Outcome::Done("OK".into())),
        PromptCommand::Get { key } => client.get(key).map(|v| match v {
            Some(value) => Outcome::Done(value),
            None => Outcome::NotFound(NOT_FOUND.into()),
        }),
        PromptCommand::Delete { key } => client.delete(key).map(|existed| match existed {
            true => Outcome::Done("DELETED".into()),
            false => Outcome::NotFound(NOT_FOUND.into()),
        }),
        PromptCommand::Status | PromptCommand::Help | PromptCommand::Quit => {
            unreachable!("handled by the caller")
        }
    };
    result.unwrap_or_else(Outcome::Failed)
}

pub const PAXOS_STATUS_COLUMNS: [&str; 12] = [
    "replica",
    "address",
    "state",
    "acceptor",
    "role",
    "ballot",
    "leader",
    "promised",
    "decided",
    "applied",
    "in flight",
    "keys",
];
pub const TWOPC_STATUS_COLUMNS: [&str; 8] =
    ["replica", "address", "state", "participant", "coordinating", "committed", "keys", "blocked on"];

/// The column names for a poll: 2PC columns if any replica runs 2PC.
pub fn status_columns(statuses: &[(SocketAddr, Result<NodeStatus, String>)]) -> &'static [&'static str] {
    if statuses.iter().any(|(_, s)| matches!(s, Ok(NodeStatus::TwoPc(_)))) {
        &TWOPC_STATUS_COLUMNS
    } else {
        &PAXOS_STATUS_COLUMNS
    }
}

/// One replica's cells, under `status_columns`; shared by STATUS and `watch`.
pub fn status_cells(index: usize, addr: &SocketAddr, status: &Result<NodeStatus, String>) -> Vec<String> {
    let mut cells = vec![format!("s{}", index + 1), addr.to_string()];
    match status {
        Err(_) => cells.push("DOWN".into()),
        Ok(NodeStatus::Paxos(s)) => cells.extend([
            "up".into(),
            if s.rebuilding {
                "REBUILDING"
            } else if s.acceptor_online {
                "online"
            } else {
                "OFFLINE"
            }
            .into(),
            match s.proposer.mode {
                ProposerMode::Leading => "LEADER",
                ProposerMode::Preparing => "candidate",
                ProposerMode::Follower => "follower",
            }
            .into(),
            s.proposer.ballot.to_string(),
            s.proposer.leader.map_or("?".into(), |l| format!("s{l}")),
            s.promised.to_string(),
            s.decided_through.map_or("-".into(), |d| d.to_string()),
            s.learner_next_slot.checked_sub(1).map_or("-".into(), |a| a.to_string()),
            s.proposer.slots_in_flight.to_string(),
            s.keys.to_string(),
        ]),
        Ok(NodeStatus::TwoPc(s)) => {
            let blocked: Vec<String> = s.prepared.iter().map(|(txn, key)| format!("{key}@{txn}")).collect();
            cells.extend([
                "up".into(),
                if s.participant_online { "online" } else { "OFFLINE" }.into(),
                s.coordinating.to_string(),
                s.committed.to_string(),
                s.keys.to_string(),
                if blocked.is_empty() { "-".into() } else { blocked.join(" ") },
            ])
        }
    }
    cells
}

/// A header, then one line per replica, for either protocol; a down replica's
/// line ends with the reason.
pub fn status_lines(statuses: &[(SocketAddr, Result<NodeStatus, String>)]) -> Vec<String> {
    let columns = status_columns(statuses);
    let widths: Vec<usize> = columns.iter().map(|c| if *c == "address" { 16 } else { c.len().max(9) }).collect();
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        padded.join(" ").trim_end().to_string()
    };
    let mut lines = vec![line(&columns.iter().map(|c| c.to_string()).collect::<Vec<_>>())];
    for (index, (addr, status)) in statuses.iter().enumerate() {
        let mut cells = status_cells(index, addr, status);
        if let Err(e) = status {
            cells.push(format!("({e})"));
        }
        lines.push(line(&cells));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_in_any_case_and_values_with_spaces() {
        assert_eq!(
            parse("put greeting hello  world").unwrap(),
            Some(PromptCommand::Put { key: "greeting".into(), value: "hello  world".into() })
        );
        assert_eq!(parse("  GeT a ").unwrap(), Some(PromptCommand::Get { key: "a".into() }));
        assert_eq!(parse("delete a").unwrap(), Some(PromptCommand::Delete { key: "a".into() }));
        assert_eq!(parse("status").unwrap(), Some(PromptCommand::Status));
        assert_eq!(parse("# comment").unwrap(), None);
        assert_eq!(parse("").unwrap(), None);
    }

    #[test]
    fn quoted_values_may_be_empty_or_hold_escapes() {
        let put = |line: &str| match parse(line) {
            Ok(Some(PromptCommand::Put { value, .. })) => Ok(value),
            other => Err(format!("{other:?}")),
        };
        assert_eq!(put(r#"PUT e """#).unwrap(), "");
        assert_eq!(put(r#"PUT m "one\ntwo\t\"q\" \\ \x41""#).unwrap(), "one\ntwo\t\"q\" \\ A");
        assert_eq!(put(r#"PUT s "  padded  "  "#).unwrap(), "  padded  ");
        assert_eq!(put("PUT plain say \"hi\" there").unwrap(), "say \"hi\" there");
        for bad in [r#"PUT k "open"#, r#"PUT k "a" b"#, r#"PUT k "\q""#, r#"PUT k "\x8f""#, r#"PUT k "\x4""#] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
        let error = parse("PUT k").unwrap_err();
        assert!(error.contains(r#"PUT k """#), "{error}");
    }

    #[test]
    fn every_value_is_shown_on_one_line_and_reads_back_as_itself() {
        let values = [
            "plain",
            "",
            "two\nlines",
            "\"quoted\"",
            " edge ",
            "tab\there",
            "bell\u{7}",
            "\u{85}next",
            "(not found)",
            "ERROR: x",
            "üñí",
        ];
        for value in values {
            let shown = display_value(value);
            assert!(!shown.contains('\n') && !shown.contains('\r'), "{value:?} shown as {shown:?}");
            assert_eq!(put_value_of(&shown), value, "{value:?} shown as {shown:?}");
        }
        assert_eq!(display_value("plain words"), "plain words");
        assert_eq!(display_value(""), r#""""#);
        assert_eq!(display_value("a\nb"), r#""a\nb""#);
    }

    fn put_value_of(shown: &str) -> String {
        match parse(&format!("PUT k {shown}")) {
            Ok(Some(PromptCommand::Put { value, .. })) => value,
            other => panic!("{shown}: {other:?}"),
        }
    }

    #[test]
    fn bad_commands_get_a_usage_line() {
        for line in ["FROB a", "PUT a", "GET", "GET a b", "DELETE"] {
            let error = parse(line).unwrap_err();
            assert!(error.contains("usage:"), "{line}: {error}");
        }
    }
}
