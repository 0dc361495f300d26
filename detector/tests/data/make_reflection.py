#!/usr/bin/env python3
"""Writes reflection_dns.pcap: a DNS reflection flood on 192.0.2.10 (standard library
only, deterministic). Regenerate with `python3 make_reflection.py` in this folder.

- 20 reflectors 198.51.100.1-20 each send 8 answers (UDP 53 -> random victim port
  >= 1024, 300-byte DNS payload) and 5 busy reflectors 198.51.100.101-105 send 30
  answers each to 30 distinct victim ports, all within 2 s: 310 unsolicited answers;
  the victim never asked (forged requests went to the reflectors elsewhere).
- Alongside, the victim's own 20 queries to its resolver 203.0.113.53 (60-byte
  query, 200-byte answer, 50 ms apart): solicited, must not count.
Ground truth: alert `reflection` on 192.0.2.10; block or quarantine nobody.
"""
import random
import struct

T0 = 1_700_000_000.0
rng = random.Random(15)


def ip(a):
    return bytes(int(x) for x in a.split("."))


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(src, sport, dst, dport, payload):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), rng.randrange(65536), 0,
                      64, 17, 0, ip(src), ip(dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    return eth + hdr + udp


def dns(qid, size):
    head = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    return head + bytes(rng.randrange(256) for _ in range(size - len(head)))


pkts = []
victim = "192.0.2.10"
for r in range(1, 21):
    for _ in range(8):
        pkts.append((T0 + rng.random() * 2.0, frame(f"198.51.100.{r}", 53, victim,
                                                     rng.randrange(1024, 65536), dns(rng.randrange(65536), 300))))
for r in range(101, 106):
    ports = rng.sample(range(1024, 65536), 30)
    for p in ports:
        pkts.append((T0 + rng.random() * 2.0, frame(f"198.51.100.{r}", 53, victim, p,
                                                     dns(rng.randrange(65536), 300))))
for i in range(20):
    t = T0 + i * 0.05
    sport = 40000 + i
    q = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + bytes(48)
    pkts.append((t, frame(victim, sport, "203.0.113.53", 53, q)))
    pkts.append((t + 0.01, frame("203.0.113.53", 53, victim, sport, dns(i, 200))))
pkts.sort(key=lambda p: p[0])
with open("reflection_dns.pcap", "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for t, b in pkts:
        f.write(struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(b), len(b)))
        f.write(b)
