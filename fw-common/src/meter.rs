//! Pcap flow meter: turns a capture into the flow records the gateway would export
//! (to be written; see the detector issue).
