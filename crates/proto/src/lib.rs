//! Host <-> guest agent protocol.
