#!/usr/bin/env python3
"""Write the seed corpus of fuzz_vfu (input format: fuzz_vfu.c).

Run from anywhere: python3 fuzz/make_corpus_vfu.py.  The seeds are small
valid vfio-user sessions as QEMU opens them (VERSION, DMA_MAP with a memfd,
region reads and writes, eventfds, DMA_UNMAP, reset), plus a few broken
ones, so the fuzzer starts from inputs that reach every command."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "vfu")

VERSION, DMA_MAP, DMA_UNMAP, GET_INFO, REGION_INFO = 1, 2, 3, 4, 5
IRQ_INFO, SET_IRQS, REGION_READ, REGION_WRITE = 7, 8, 9, 10
RESET, WRITE_MULTI = 13, 15
CAPS = (b'{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,'
        b'"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true}}\0')

# fd kinds of the record's ctl byte
SEALED, UNSEALED, EVENTFD, DEVNULL = 0, 1, 2, 3


def msg(cmd, payload=b"", msg_id=1, flags=0):
    return struct.pack("<HHIII", msg_id, cmd, 16 + len(payload), flags, 0) + payload


def rec(data, nfds=0, kind=SEALED, trigger=False):
    ctl = nfds | kind << 2 | (0x10 if trigger else 0)
    return bytes([ctl]) + struct.pack("<H", len(data)) + data


def version():
    return rec(msg(VERSION, struct.pack("<HH", 0, 0) + CAPS))


def dma_map(gpa, size, offset=0, flags=3):
    return msg(DMA_MAP, struct.pack("<IIQQQ", 32, flags, offset, gpa, size))


def dma_unmap(gpa, size, flags=0):
    return msg(DMA_UNMAP, struct.pack("<IIQQ", 24, flags, gpa, size))


def region_rw(cmd, region, offset, data=b"", count=None):
    return msg(cmd, struct.pack("<QII", offset, region, len(data) if count is None else count) + data)


def set_irqs(flags, index, start, count, data=b""):
    return msg(SET_IRQS, struct.pack("<IIIII", 20 + len(data), flags, index, start, count) + data)


def seeds():
    yield "qemu_open", (version() + rec(msg(GET_INFO, struct.pack("<IIII", 16, 0, 0, 0)))
                        + rec(msg(REGION_INFO, struct.pack("<IIIIQQ", 32, 0, 7, 0, 0, 0)))
                        + rec(msg(IRQ_INFO, struct.pack("<IIII", 16, 0, 2, 0)))
                        + rec(dma_map(0x100000, 0x10000), nfds=1, kind=SEALED)
                        + rec(dma_map(0xfeb00000, 0x1000, flags=1))
                        + rec(region_rw(REGION_READ, 7, 0, count=64))
                        + rec(region_rw(REGION_WRITE, 0, 0x10, b"\x01\x02\x03\x04"))
                        + rec(region_rw(REGION_WRITE, 0, 0, b"\xff" * 4))
                        + rec(dma_unmap(0x100000, 0x10000))
                        + rec(msg(RESET)))
    yield "irqs", (version()
                   + rec(set_irqs(0x4 | 0x20, 2, 0, 2), nfds=2, kind=EVENTFD, trigger=True)
                   + rec(set_irqs(0x1 | 0x8, 2, 1, 1), trigger=True)
                   + rec(set_irqs(0x2 | 0x10, 2, 0, 2, b"\x01\x01"), trigger=True)
                   + rec(set_irqs(0x1 | 0x20, 2, 0, 0)))
    yield "unsealed_and_bad_fds", (version()
                                   + rec(dma_map(0x200000, 0x8000, offset=0x4000), nfds=1, kind=UNSEALED)
                                   + rec(dma_map(0x300000, 0x1000), nfds=1, kind=DEVNULL)
                                   + rec(dma_map(0xdead000, 0x1000), nfds=1, kind=SEALED)
                                   + rec(dma_map(0x400000, 0x1000), nfds=2, kind=SEALED)
                                   + rec(dma_unmap(0, 0, flags=2)))
    multi = struct.pack("<Q", 2) + b"".join(struct.pack("<QII", off, 0, 4) + b"\xaa" * 8 for off in (4, 8))
    yield "write_multi_posted", (version() + rec(msg(WRITE_MULTI, multi))
                                 + rec(region_rw(REGION_WRITE, 7, 4, b"\x06\x00"), nfds=0)
                                 + rec(msg(REGION_WRITE, struct.pack("<QII", 0, 0, 4) + b"1234", flags=0x10)))
    # one message cut over three records, an fd on its middle part
    whole = dma_map(0x500000, 0x2000)
    yield "split", version() + rec(whole[:5]) + rec(whole[5:20], nfds=1) + rec(whole[20:])
    yield "broken_framing", version() + rec(struct.pack("<HHIII", 9, 4, 8, 0, 0))


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
