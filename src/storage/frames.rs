//! How every data file is laid out: a sequence of frames, each
//! `[body bytes u32 BE][body crc32 u32 BE][header crc32 u32 BE][body]`, the
//! first of which is a [`FileHeader`] naming the file's kind, cluster and
//! replica. The header checksum makes a length trustworthy before the body is
//! read, so a scan can tell a torn final write from damage in the middle.
//!
//! A log written in place ([`parse_log`]) may be followed by zeros: space its
//! disk reserved ahead of the appends (see `Disk::append_in_place`). A frame
//! is never all zeros, so zeros where a frame would start mean the data ended.

use super::{Damage, Identity};
use crate::wire;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{self, Read};
use std::ops::Range;

pub const FRAME_HEADER_BYTES: usize = 12;
/// No frame is written larger than this; a reader refuses larger ones.
/// Below the codec's decode limit, so whatever is written can be read back.
pub const RECORD_BYTES_MAX: usize = 64 << 20;

const FILE_MAGIC: [u8; 8] = *b"PXKVDATA";
/// Every file's first format: in a record log, each frame holds one record.
const FILE_FORMAT: u16 = 1;
/// A record log whose frames each hold the batch of records of one append,
/// so that an append is whole or torn as one (see `RecordLog`).
pub const FILE_FORMAT_BATCHES: u16 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// `replica.id`: which cluster and replica this directory belongs to.
    Marker,
    AcceptorLog,
    ProposerBallot,
    Snapshot,
    CoordinatorLog,
    ParticipantLog,
    /// `snapshot.changes`: what changed since `snapshot.bin`.
    SnapshotChanges,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    magic: [u8; 8],
    pub(super) format: u16,
    pub kind: FileKind,
    pub identity: Identity,
}

impl FileKind {
    /// Logs appended record by record, as opposed to files replaced whole.
    fn is_record_log(self) -> bool {
        matches!(self, FileKind::AcceptorLog | FileKind::CoordinatorLog | FileKind::ParticipantLog)
    }

    /// The format this build writes files of this kind in.
    fn format(self) -> u16 {
        if self.is_record_log() {
            FILE_FORMAT_BATCHES
        } else {
            FILE_FORMAT
        }
    }
}

impl FileHeader {
    pub fn new(kind: FileKind, identity: Identity) -> Self {
        FileHeader { magic: FILE_MAGIC, format: kind.format(), kind, identity }
    }
}

fn header_crc(prefix: &[u8]) -> u32 {
    // Seeded apart from the body checksum so that zeros never check out.
    let mut hasher = crc32fast::Hasher::new_with_initial(0x5158_4b56);
    hasher.update(prefix);
    hasher.finalize()
}

/// Appends one frame holding `body` to `buf`.
pub fn push_frame(buf: &mut Vec<u8>, body: &[u8]) -> anyhow::Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    buf.extend_from_slice(body);
    seal_frame(buf, start)
}

/// Appends one frame holding the encoding of `value` to `buf`, encoded in place.
pub fn encode_frame<T: Serialize>(buf: &mut Vec<u8>, value: &T) -> anyhow::Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    wire::encode_into(value, buf);
    seal_frame(buf, start)
}

/// Fills in the header of the frame whose body follows it at `start`, or
/// takes the frame off `buf` if its body is larger than readers accept.
fn seal_frame(buf: &mut Vec<u8>, start: usize) -> anyhow::Result<()> {
    let body_len = buf.len() - start - FRAME_HEADER_BYTES;
    if body_len > RECORD_BYTES_MAX {
        buf.truncate(start);
        anyhow::bail!("a {body_len}-byte record exceeds the {RECORD_BYTES_MAX}-byte limit that readers accept");
    }
    let body_crc = crc32fast::hash(&buf[start + FRAME_HEADER_BYTES..]);
    let header = &mut buf[start..start + FRAME_HEADER_BYTES];
    header[..4].copy_from_slice(&(body_len as u32).to_be_bytes());
    header[4..8].copy_from_slice(&body_crc.to_be_bytes());
    let crc = header_crc(&header[..8]);
    header[8..].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// What checking one frame at an offset found.
enum Check {
    /// An intact frame; the body is at this range.
    Intact(Range<usize>),
    /// Not enough bytes left for the frame the header announces.
    Incomplete,
    /// The header's own checksum fails.
    BadHeader,
    /// A trustworthy header announcing more than any writer writes.
    Oversized(usize),
    /// Intact header, body checksum fails; the frame ends at this offset.
    BadBody(usize),
}

fn check_at(contents: &[u8], at: usize) -> Check {
    if contents.len() - at < FRAME_HEADER_BYTES {
        return Check::Incomplete;
    }
    let prefix = &contents[at..at + 8];
    let stored_header_crc = u32::from_be_bytes(contents[at + 8..at + 12].try_into().expect("4 bytes"));
    if header_crc(prefix) != stored_header_crc {
        return Check::BadHeader;
    }
    let len = u32::from_be_bytes(prefix[..4].try_into().expect("4 bytes")) as usize;
    if len > RECORD_BYTES_MAX {
        return Check::Oversized(len);
    }
    let body = at + FRAME_HEADER_BYTES..at + FRAME_HEADER_BYTES + len;
    if body.end > contents.len() {
        return Check::Incomplete;
    }
    let body_crc = u32::from_be_bytes(prefix[4..].try_into().expect("4 bytes"));
    if crc32fast::hash(&contents[body.clone()]) != body_crc {
        return Check::BadBody(body.end);
    }
    Check::Intact(body)
}

/// True if an intact frame starts anywhere after `at`: then the damage at
/// `at` is not the end of a torn write but corruption in the middle.
fn intact_frame_after(contents: &[u8], at: usize) -> bool {
    // A header checks out only with a nonzero byte in it: no frame starts in trailing zeros.
    let nonzero_end = contents.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
    (at + 1..nonzero_end).any(|p| matches!(check_at(contents, p), Check::Intact(_)))
}

fn all_zeros(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// The frames of a file, and where a torn final write begins (if any).
pub struct Parsed {
    pub bodies: Vec<Range<usize>>,
    /// Offset of an incomplete or bad *final* frame; `None` if the file ends cleanly.
    pub torn_at: Option<usize>,
    /// Where the frames end: at `torn_at`, where zero padding begins, or at
    /// the end of the file.
    pub end: usize,
}

/// Splits `contents` into frames. Only an incomplete or bad final frame is
/// reported as torn; a bad frame followed by intact data is corruption.
pub fn parse(file: &str, contents: &[u8]) -> Result<Parsed, Damage> {
    parse_frames(file, contents, false)
}

/// [`parse`] of a log written in place, which zeros may follow: they end the
/// data, and a bad final frame followed only by zeros is torn, not damage.
pub fn parse_log(file: &str, contents: &[u8]) -> Result<Parsed, Damage> {
    parse_frames(file, contents, true)
}

fn parse_frames(file: &str, contents: &[u8], padded: bool) -> Result<Parsed, Damage> {
    let mut bodies = Vec::new();
    let mut at = 0;
    let torn = |bodies, at| Ok(Parsed { bodies, torn_at: Some(at), end: at });
    let corrupt = |at: usize, record: usize, reason: String| Damage::Corrupt {
        file: file.to_string(),
        offset: at as u64,
        record,
        reason,
    };
    while at < contents.len() {
        let record = bodies.len();
        let check = check_at(contents, at);
        if padded && !matches!(check, Check::Intact(_)) && all_zeros(&contents[at..]) {
            return Ok(Parsed { bodies, torn_at: None, end: at });
        }
        match check {
            Check::Intact(body) => {
                at = body.end;
                bodies.push(body);
            }
            Check::Incomplete => {
                if intact_frame_after(contents, at) {
                    return Err(corrupt(at, record, "a record's length runs past intact data".into()));
                }
                return torn(bodies, at);
            }
            Check::BadHeader => {
                if intact_frame_after(contents, at) {
                    return Err(corrupt(at, record, "record header checksum mismatch".into()));
                }
                return torn(bodies, at);
            }
            Check::Oversized(len) => {
                return Err(corrupt(at, record, format!("record claims {len} bytes, above any record written")));
            }
            Check::BadBody(end) => {
                let nothing_after = end == contents.len() || (padded && all_zeros(&contents[end..]));
                if !nothing_after {
                    return Err(corrupt(at, record, "record checksum mismatch with more data after it".into()));
                }
                return torn(bodies, at);
            }
        }
    }
    Ok(Parsed { bodies, torn_at: None, end: at })
}

/// Decodes a checksummed body; one that does not decode is corruption too
/// (or a file of another version).
pub fn decode_body<T: DeserializeOwned>(
    file: &str,
    contents: &[u8],
    body: &Range<usize>,
    record: usize,
) -> Result<T, Damage> {
    decode_record(file, &contents[body.clone()], body.start - FRAME_HEADER_BYTES, record)
}

/// [`decode_body`] of a body read on its own, whose frame starts at `offset`.
pub fn decode_record<T: DeserializeOwned>(file: &str, body: &[u8], offset: usize, record: usize) -> Result<T, Damage> {
    wire::decode(body).map_err(|e| Damage::Corrupt {
        file: file.to_string(),
        offset: offset as u64,
        record,
        reason: format!("record does not decode: {e}"),
    })
}

/// One step of a [`FrameReader`].
pub enum Next {
    /// An intact frame: its body, where the frame starts, and its index.
    Record { body: Vec<u8>, offset: usize, record: usize },
    /// The file ends cleanly.
    End,
    /// An incomplete or bad final frame starts here, as record `record`: a torn write.
    Torn { offset: usize, record: usize },
}

/// Reads a file's frames one at a time, holding one body in memory rather
/// than the whole file. Damage is judged as [`parse`] judges it: at the first
/// frame that is not intact, the rest of the file is read and parsed, so that
/// a torn final write and corruption in the middle are told apart the same way.
pub struct FrameReader<R> {
    file: String,
    reader: R,
    offset: usize,
    record: usize,
}

impl<R: Read> FrameReader<R> {
    pub fn new(file: &str, reader: R) -> Self {
        FrameReader { file: file.to_string(), reader, offset: 0, record: 0 }
    }

    /// Bytes consumed so far: the whole file once `End` or `Torn` was returned.
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn next_frame(&mut self) -> anyhow::Result<Next> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        let got = read_up_to(&mut self.reader, &mut header)?;
        if got == 0 {
            return Ok(Next::End);
        }
        if got < FRAME_HEADER_BYTES {
            return self.damaged(header[..got].to_vec());
        }
        let stored_header_crc = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
        if header_crc(&header[..8]) != stored_header_crc {
            return self.damaged(header.to_vec());
        }
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        if len > RECORD_BYTES_MAX {
            // Judged without reading on: a trustworthy header claims it.
            let reason = format!("record claims {len} bytes, above any record written");
            return Err(self.corrupt(self.offset, reason).into());
        }
        let mut body = vec![0u8; len];
        let got = read_up_to(&mut self.reader, &mut body)?;
        if got < len {
            let mut frame = header.to_vec();
            frame.extend_from_slice(&body[..got]);
            return self.damaged(frame);
        }
        let body_crc = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
        if crc32fast::hash(&body) != body_crc {
            // Torn if it is the last frame; one byte more tells.
            let at = self.offset;
            self.offset += FRAME_HEADER_BYTES + len;
            if read_up_to(&mut self.reader, &mut [0u8; 1])? > 0 {
                return Err(self.corrupt(at, "record checksum mismatch with more data after it".into()).into());
            }
            return Ok(Next::Torn { offset: at, record: self.record });
        }
        let (offset, record) = (self.offset, self.record);
        self.offset += FRAME_HEADER_BYTES + len;
        self.record += 1;
        Ok(Next::Record { body, offset, record })
    }

    fn corrupt(&self, offset: usize, reason: String) -> Damage {
        Damage::Corrupt { file: self.file.clone(), offset: offset as u64, record: self.record, reason }
    }

    /// The frame at `self.offset` is not intact and `frame` is what was read
    /// of it: whether intact frames follow decides torn or corrupt, so the
    /// rest is read (a torn tail is short; a damaged file is refused anyway).
    fn damaged(&mut self, mut rest: Vec<u8>) -> anyhow::Result<Next> {
        self.reader.read_to_end(&mut rest)?;
        let at = self.offset;
        self.offset += rest.len();
        match parse(&self.file, &rest) {
            Ok(parsed) => {
                debug_assert_eq!(parsed.torn_at, Some(0), "the first frame of the rest was found damaged");
                Ok(Next::Torn { offset: at, record: self.record })
            }
            Err(Damage::Corrupt { file, offset, record, reason }) => {
                Err(Damage::Corrupt { file, offset: offset + at as u64, record: record + self.record, reason }.into())
            }
            Err(other) => Err(other.into()),
        }
    }
}

/// Fills `buf` unless the reader ends first; returns how much was read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Checks that the first frame is the header of a `kind` file of `identity`,
/// and returns the file's format.
pub fn check_header(
    file: &str,
    contents: &[u8],
    parsed: &Parsed,
    kind: FileKind,
    identity: Identity,
) -> Result<u16, Damage> {
    let Some(first) = parsed.bodies.first() else {
        return Err(Damage::Corrupt { file: file.into(), offset: 0, record: 0, reason: "no file header".into() });
    };
    check_header_record(file, &contents[first.clone()], kind, identity)
}

/// [`check_header`] of the first frame's body, read on its own. Returns the
/// file's format: a record log may still be in the first one.
pub fn check_header_record(file: &str, body: &[u8], kind: FileKind, identity: Identity) -> Result<u16, Damage> {
    let header: FileHeader = decode_record(file, body, 0, 0)?;
    let readable = header.format == kind.format() || (kind.is_record_log() && header.format == FILE_FORMAT);
    if header.magic != FILE_MAGIC || !readable {
        return Err(Damage::Foreign { file: file.into(), reason: "not a paxos-kv data file of this format".into() });
    }
    if header.kind != kind {
        return Err(Damage::Foreign {
            file: file.into(),
            reason: format!("holds {:?}, expected {kind:?}", header.kind),
        });
    }
    if header.identity != identity {
        return Err(Damage::Foreign {
            file: file.into(),
            reason: format!("belongs to {}, this is {identity}", header.identity),
        });
    }
    Ok(header.format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bodies: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        bodies.iter().for_each(|b| push_frame(&mut buf, b).unwrap());
        buf
    }

    #[test]
    fn intact_frames_parse_back() {
        let buf = frames(&[b"one", b"", b"three"]);
        let parsed = parse("f", &buf).unwrap();
        let bodies: Vec<&[u8]> = parsed.bodies.iter().map(|r| &buf[r.clone()]).collect();
        assert_eq!(bodies, vec![&b"one"[..], b"", b"three"]);
        assert_eq!(parsed.torn_at, None);
    }

    /// Bodies and torn offset, or the damage, as [`FrameReader`] sees them.
    fn streamed(buf: &[u8]) -> Result<(Vec<Vec<u8>>, Option<usize>), String> {
        let mut reader = FrameReader::new("f", buf);
        let mut bodies = Vec::new();
        loop {
            match reader.next_frame().map_err(|e| e.to_string())? {
                Next::Record { body, .. } => bodies.push(body),
                Next::End => return Ok((bodies, None)),
                Next::Torn { offset, .. } => return Ok((bodies, Some(offset))),
            }
        }
    }

    fn parsed(buf: &[u8]) -> Result<(Vec<Vec<u8>>, Option<usize>), String> {
        let parsed = parse("f", buf).map_err(|e| anyhow::Error::from(e).to_string())?;
        Ok((parsed.bodies.iter().map(|r| buf[r.clone()].to_vec()).collect(), parsed.torn_at))
    }

    #[test]
    fn reading_frames_one_at_a_time_judges_every_cut_and_flipped_bit_as_parsing_the_whole_file_does() {
        let buf = frames(&[b"first", b"second", b"", b"fourth"]);
        for cut in 0..=buf.len() {
            assert_eq!(streamed(&buf[..cut]), parsed(&buf[..cut]), "cut at {cut}");
        }
        for offset in 0..buf.len() {
            for bit in [0, 5] {
                let mut damaged = buf.clone();
                damaged[offset] ^= 1 << bit;
                assert_eq!(streamed(&damaged), parsed(&damaged), "bit {bit} of byte {offset}");
            }
        }
        // A header that checks out but claims more than any writer writes.
        let mut oversized = frames(&[b"first"]);
        let mut prefix = [0u8; 8];
        prefix[..4].copy_from_slice(&(RECORD_BYTES_MAX as u32 + 1).to_be_bytes());
        oversized.extend_from_slice(&prefix);
        oversized.extend_from_slice(&header_crc(&prefix).to_be_bytes());
        oversized.extend_from_slice(&frames(&[b"after"]));
        assert!(parsed(&oversized).is_err());
        assert_eq!(streamed(&oversized), parsed(&oversized));
    }

    #[test]
    fn zeros_after_the_frames_end_a_log_and_a_bad_final_frame_before_them_is_torn() {
        let mut buf = frames(&[b"first", b"second"]);
        let second = FRAME_HEADER_BYTES + 5;
        let data_end = buf.len();
        buf.extend_from_slice(&[0; 64]);
        let padded = parse_log("f", &buf).unwrap();
        assert_eq!((padded.bodies.len(), padded.torn_at, padded.end), (2, None, data_end));
        assert_eq!(parse("f", &buf).unwrap().torn_at, Some(data_end), "a file replaced whole has no padding");
        buf[second + FRAME_HEADER_BYTES] ^= 1;
        let torn = parse_log("f", &buf).unwrap();
        assert_eq!((torn.bodies.len(), torn.torn_at, torn.end), (1, Some(second), second));
        assert!(parse("f", &buf).is_err(), "without padding, bytes after a bad frame make it damage");
    }

    #[test]
    fn every_cut_of_the_final_frame_is_a_torn_tail() {
        let buf = frames(&[b"first", b"second record"]);
        let second = FRAME_HEADER_BYTES + 5;
        for cut in second + 1..buf.len() {
            let parsed = parse("f", &buf[..cut]).unwrap();
            assert_eq!((parsed.bodies.len(), parsed.torn_at), (1, Some(second)), "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_in_the_final_frame_is_torn_but_anywhere_earlier_is_corruption() {
        let buf = frames(&[b"first", b"second", b"third"]);
        let third = 2 * FRAME_HEADER_BYTES + 11;
        for offset in 0..buf.len() {
            for bit in [0, 3, 7] {
                let mut damaged = buf.clone();
                damaged[offset] ^= 1 << bit;
                match parse("f", &damaged) {
                    Ok(parsed) => {
                        assert!(offset >= third, "damage at {offset} (bit {bit}) read as a torn tail");
                        assert_eq!(parsed.torn_at, Some(third));
                    }
                    Err(Damage::Corrupt { offset: at, .. }) => {
                        assert!(offset < third, "damage in the final frame at {offset} refused");
                        assert!(at as usize <= offset);
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
        }
    }
}
