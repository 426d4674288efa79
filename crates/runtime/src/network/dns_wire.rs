//! The few DNS messages skiff's per-network responder reads and writes (RFC 1035):
//! a standard query with one question in, an answer with A records or an error code
//! out. Queries come from containers, so everything here is bounded: one question,
//! names of at most 255 bytes in labels of at most 63, no compression pointers in the
//! question, nothing read past the packet, and answers never larger than a UDP
//! payload a resolver accepts without EDNS.

use std::net::Ipv4Addr;

/// Largest query accepted and answer produced (RFC 1035's UDP limit).
pub const MAX_MESSAGE: usize = 512;
/// Wire-format limit on a name.
const MAX_NAME: usize = 255;
const MAX_LABEL: usize = 63;
const HEADER: usize = 12;
/// At most this many A records per answer (and never more than fit in [`MAX_MESSAGE`]).
const MAX_ANSWERS: usize = 16;

pub const TYPE_A: u16 = 1;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

/// Response codes skiff uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// Why a packet is not a query skiff answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Too short or too long to be a query; nothing is sent back.
    #[error("not a DNS query ({0})")]
    Ignored(&'static str),
    /// A query skiff can answer only with this error code.
    #[error("query refused ({1}): {0:?}")]
    Answerable(Rcode, &'static str),
}

/// A parsed query: its ID, flags and the one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Recursion desired, echoed in the answer.
    pub rd: bool,
    /// The name as lower-case labels joined by dots, without the final dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question's bytes as sent, echoed in the answer.
    question: Vec<u8>,
}

/// Parses a query. `Err(Answerable)` still carries enough to send an error back.
pub fn parse_query(packet: &[u8]) -> Result<Query, WireError> {
    if packet.len() < HEADER {
        return Err(WireError::Ignored("shorter than a header"));
    }
    if packet.len() > MAX_MESSAGE {
        return Err(WireError::Ignored("longer than 512 bytes"));
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & 0x8000 != 0 {
        // A response: never answer one (no reflection loops).
        return Err(WireError::Ignored("a response, not a query"));
    }
    let opcode = (flags >> 11) & 0xf;
    if opcode != 0 {
        return Err(WireError::Answerable(Rcode::NotImp, "not a standard query"));
    }
    let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
    if qdcount != 1 {
        return Err(WireError::Answerable(
            Rcode::FormErr,
            "not exactly one question",
        ));
    }
    let mut pos = HEADER;
    let mut labels: Vec<String> = Vec::new();
    let mut wire_len = 0usize;
    loop {
        let len = usize::from(*packet.get(pos).ok_or(WireError::Answerable(
            Rcode::FormErr,
            "name runs past the packet",
        ))?);
        pos += 1;
        wire_len += 1 + len;
        if len == 0 {
            break;
        }
        if len > MAX_LABEL {
            // 0xc0 and up are compression pointers, which a question never needs.
            return Err(WireError::Answerable(
                Rcode::FormErr,
                "label too long or compressed",
            ));
        }
        if wire_len > MAX_NAME {
            return Err(WireError::Answerable(Rcode::FormErr, "name too long"));
        }
        let bytes = packet.get(pos..pos + len).ok_or(WireError::Answerable(
            Rcode::FormErr,
            "label runs past the packet",
        ))?;
        pos += len;
        labels.push(
            bytes
                .iter()
                .map(|b| char::from(b.to_ascii_lowercase()))
                .collect(),
        );
    }
    let tail = packet.get(pos..pos + 4).ok_or(WireError::Answerable(
        Rcode::FormErr,
        "question runs past the packet",
    ))?;
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    let qclass = u16::from_be_bytes([tail[2], tail[3]]);
    Ok(Query {
        id: u16::from_be_bytes([packet[0], packet[1]]),
        rd: flags & 0x0100 != 0,
        name: labels.join("."),
        qtype,
        qclass,
        question: packet[HEADER..pos + 4].to_vec(),
    })
}

/// The answer to `q`: `rcode`, and for NOERROR one A record per address (at most
/// [`MAX_ANSWERS`]). TTL 0: names come and go with containers.
pub fn answer(q: &Query, rcode: Rcode, addrs: &[Ipv4Addr]) -> Vec<u8> {
    let room = MAX_MESSAGE.saturating_sub(HEADER + q.question.len()) / 16;
    let addrs = if rcode == Rcode::NoError {
        &addrs[..addrs.len().min(MAX_ANSWERS).min(room)]
    } else {
        &[]
    };
    let mut out = Vec::with_capacity(HEADER + q.question.len() + addrs.len() * 16);
    out.extend_from_slice(&q.id.to_be_bytes());
    // QR, AA, RD as asked, RA (we forward), and the code.
    let flags: u16 = 0x8000 | 0x0400 | if q.rd { 0x0100 } else { 0 } | 0x0080 | rcode as u16;
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    let count = u16::try_from(addrs.len()).unwrap_or(0);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&q.question);
    for ip in addrs {
        // A pointer to the question's name at offset 12.
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// An error answer for a packet [`parse_query`] refused as `Answerable`: the header's
/// ID and the code, no question (the question could not be read).
pub fn error_without_question(packet: &[u8], rcode: Rcode) -> Option<Vec<u8>> {
    let id = packet.get(0..2)?;
    let rd = packet.get(2).is_some_and(|b| b & 0x01 != 0);
    let mut out = Vec::with_capacity(HEADER);
    out.extend_from_slice(id);
    let flags: u16 = 0x8000 | if rd { 0x0100 } else { 0 } | 0x0080 | rcode as u16;
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    Some(out)
}

/// Does an upstream's reply answer the query with this ID? (Only such replies are
/// relayed to the container.)
pub fn is_reply_to(reply: &[u8], id: u16) -> bool {
    reply.len() >= HEADER
        && reply.len() <= MAX_RELAY
        && u16::from_be_bytes([reply[0], reply[1]]) == id
        && reply[2] & 0x80 != 0
}

/// Largest upstream reply relayed (EDNS answers may exceed 512 bytes).
pub const MAX_RELAY: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.').filter(|l| !l.is_empty()) {
            p.push(u8::try_from(l.len()).unwrap());
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&CLASS_IN.to_be_bytes());
        p
    }

    #[test]
    fn a_query_is_answered_with_a_records() {
        let q = parse_query(&query(0x1234, "Web.example", TYPE_A)).unwrap();
        assert_eq!(q.name, "web.example");
        assert_eq!((q.qtype, q.qclass, q.rd), (TYPE_A, CLASS_IN, true));
        let a = answer(&q, Rcode::NoError, &[Ipv4Addr::new(10, 89, 1, 2)]);
        assert_eq!(&a[0..2], &[0x12, 0x34]);
        assert_eq!(a[3] & 0x0f, 0);
        assert_eq!(&a[6..8], &[0, 1]);
        assert_eq!(&a[a.len() - 4..], &[10, 89, 1, 2]);
        let nx = answer(&q, Rcode::NxDomain, &[Ipv4Addr::LOCALHOST]);
        assert_eq!(nx[3] & 0x0f, 3);
        assert_eq!(&nx[6..8], &[0, 0]);
    }

    #[test]
    fn malformed_queries_are_refused_or_ignored() {
        assert!(matches!(parse_query(&[0; 5]), Err(WireError::Ignored(_))));
        let mut resp = query(1, "a", TYPE_A);
        resp[2] |= 0x80;
        assert!(matches!(parse_query(&resp), Err(WireError::Ignored(_))));
        let mut ptr = query(1, "a", TYPE_A);
        ptr[12] = 0xc0;
        assert!(matches!(
            parse_query(&ptr),
            Err(WireError::Answerable(Rcode::FormErr, _))
        ));
        let long = vec!["a".repeat(63); 5].join(".");
        assert!(matches!(
            parse_query(&query(1, &long, TYPE_A)),
            Err(WireError::Answerable(Rcode::FormErr, _))
        ));
        let truncated = query(1, "abc", TYPE_A);
        assert!(parse_query(&truncated[..truncated.len() - 1]).is_err());
        let e = error_without_question(&ptr, Rcode::FormErr).unwrap();
        assert_eq!(e.len(), 12);
        assert_eq!(e[3] & 0x0f, 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Any bytes: no panic, and whatever is answered stays within bounds.
        #[test]
        fn arbitrary_packets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            match parse_query(&bytes) {
                Ok(q) => {
                    prop_assert!(q.name.len() <= MAX_NAME);
                    let many = vec![Ipv4Addr::LOCALHOST; 100];
                    prop_assert!(answer(&q, Rcode::NoError, &many).len() <= MAX_MESSAGE);
                }
                Err(WireError::Answerable(rc, _)) => {
                    let e = error_without_question(&bytes, rc).unwrap();
                    prop_assert_eq!(e.len(), HEADER);
                }
                Err(WireError::Ignored(_)) => {}
            }
            let _ = is_reply_to(&bytes, 7);
        }

        /// Well-formed queries round-trip their name and ID.
        #[test]
        fn valid_queries_parse(id in any::<u16>(), labels in proptest::collection::vec("[a-z0-9-]{1,20}", 1..6)) {
            let name = labels.join(".");
            let q = parse_query(&query(id, &name, TYPE_A)).unwrap();
            prop_assert_eq!(q.id, id);
            prop_assert_eq!(q.name, name);
        }
    }
}
