//! Capture reading: pcap and pcapng files (told apart by the magic number) frame
//! by frame, with each frame's capture time in Unix ns (pcapng timestamps scaled
//! by the interface's `if_tsresol`) and link type. The one capture reader of the
//! project: the meter ([`crate::meter`]), the replay tool and the
//! kernel-equivalence test use it; [`crate::parse`] decodes the frames.

use std::{
    fs::File,
    io::{BufReader, Read},
    path::{Path, PathBuf},
};

use pcap_file::{
    DataLink, PcapError,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader, blocks::interface_description::InterfaceDescriptionOption},
};

/// Errors reading a capture.
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("cannot open capture {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("capture {path} is neither pcap nor pcapng (magic {magic:02x?})")]
    UnknownFormat { path: PathBuf, magic: [u8; 4] },
    #[error("capture {path} is malformed: {source}")]
    Format {
        path: PathBuf,
        #[source]
        source: PcapError,
    },
    #[error(
        "capture {path}: link type {linktype} is not supported (Ethernet, Linux SLL/SLL2, raw IP, loopback are)"
    )]
    Linktype { path: PathBuf, linktype: u32 },
}

/// One frame as stored in a capture.
#[derive(Clone, Copy, Debug)]
pub struct CapturedFrame<'a> {
    /// Capture time, Unix ns (pcapng timestamps scaled by the interface's
    /// `if_tsresol`; a Simple Packet Block, which has none, gets the previous time).
    pub ts_ns: u64,
    /// The interface's link type.
    pub linktype: DataLink,
    /// Length of the frame on the wire, bytes (`data` may be shorter: snap length).
    pub orig_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
}

/// Calls `f` with every frame of a pcap or pcapng file (told apart by the magic
/// number), in file order: the one capture reader of the project (the meter, the
/// replay tool and the kernel-equivalence test use it). A record cut short at the
/// end of the file ends the capture; an error from `f` stops the walk.
pub fn for_each_frame(
    path: &Path,
    mut f: impl FnMut(CapturedFrame<'_>) -> Result<(), MeterError>,
) -> Result<(), MeterError> {
    let open_err = |source| MeterError::Open {
        path: path.to_owned(),
        source,
    };
    let fmt_err = |source| MeterError::Format {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(open_err)?;
    let reader = BufReader::new(File::open(path).map_err(open_err)?);
    let mut last_ts_ns = 0u64;
    match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            let mut r = PcapNgReader::new(reader).map_err(fmt_err)?;
            // Per interface: link type and timestamp units per second.
            let mut ifaces: Vec<(DataLink, u64)> = Vec::new();
            while let Some(block) = r.next_block() {
                let block = match block {
                    Ok(b) => b,
                    Err(PcapError::IncompleteBuffer) => break,
                    Err(e) => return Err(fmt_err(e)),
                };
                match block {
                    Block::SectionHeader(_) => ifaces.clear(),
                    Block::InterfaceDescription(idb) => {
                        let mut units = 1_000_000u64;
                        for o in &idb.options {
                            if let InterfaceDescriptionOption::IfTsResol(r) = o {
                                let exp = (*r & 0x7f) as u32;
                                units = if r & 0x80 != 0 {
                                    2u64.checked_pow(exp).unwrap_or(u64::MAX)
                                } else {
                                    10u64.checked_pow(exp).unwrap_or(u64::MAX)
                                };
                            }
                        }
                        ifaces.push((idb.linktype, units));
                    }
                    Block::EnhancedPacket(epb) => {
                        let Some(&(linktype, units)) = ifaces.get(epb.interface_id as usize) else {
                            return Err(fmt_err(PcapError::InvalidInterfaceId(epb.interface_id)));
                        };
                        // pcap-file stores the raw tick count in a Duration's ns.
                        let ticks = epb.timestamp.as_nanos();
                        last_ts_ns = (ticks * 1_000_000_000 / units.max(1) as u128) as u64;
                        f(CapturedFrame {
                            ts_ns: last_ts_ns,
                            linktype,
                            orig_len: epb.original_len,
                            data: &epb.data,
                        })?;
                    }
                    Block::SimplePacket(spb) => {
                        if let Some(&(linktype, _)) = ifaces.first() {
                            f(CapturedFrame {
                                ts_ns: last_ts_ns,
                                linktype,
                                orig_len: spb.original_len,
                                data: &spb.data,
                            })?;
                        }
                    }
                    Block::Packet(pb) => {
                        if let Some(&(linktype, units)) = ifaces.get(pb.interface_id as usize) {
                            last_ts_ns = (pb.timestamp as u128 * 1_000_000_000
                                / units.max(1) as u128)
                                as u64;
                            f(CapturedFrame {
                                ts_ns: last_ts_ns,
                                linktype,
                                orig_len: pb.original_len,
                                data: &pb.data,
                            })?;
                        }
                    }
                    _ => {}
                }
            }
        }
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => {
            let mut r = PcapReader::new(reader).map_err(fmt_err)?;
            let linktype = r.header().datalink;
            while let Some(pkt) = r.next_packet() {
                let pkt = match pkt {
                    Ok(p) => p,
                    Err(PcapError::IncompleteBuffer) => break,
                    Err(e) => return Err(fmt_err(e)),
                };
                f(CapturedFrame {
                    ts_ns: pkt.timestamp.as_nanos() as u64,
                    linktype,
                    orig_len: pkt.orig_len,
                    data: &pkt.data,
                })?;
            }
        }
        other => {
            return Err(MeterError::UnknownFormat {
                path: path.to_owned(),
                magic: other,
            });
        }
    }
    Ok(())
}
