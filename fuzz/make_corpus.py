#!/usr/bin/env python3
"""Write the seed corpus of fuzz_companion (input format: fuzz_companion.c).

Run from anywhere: python3 fuzz/make_corpus.py.  The seeds are small valid
sessions (MAP, UNMAP, UNMAP_ALL, register and config traffic, RAM removal) so
the fuzzer starts from inputs that reach deep into the device."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "companion")
R0 = 0x1000  # gpa of image offset 0


def page(typ, count, req, resp):
    return struct.pack("<IIIIQQ", typ, count, 0, 0, req, resp)


def image(chunks, size=0x1000):
    img = bytearray(size)
    for off, data in chunks:
        img[off:off + len(data)] = data
    return bytes(img)


def with_image(mode, img, ops):
    return bytes([mode]) + struct.pack("<H", len(img)) + img + ops


def ring(gpa):
    return b"\x02" + struct.pack("<I", gpa)


def poke(off, data):
    return b"\x03" + struct.pack("<HB", off, len(data)) + data


def mmio_w(off, width, val):
    return b"\x00" + struct.pack("<HBI", off, width, val)


def mmio_r(off, width):
    return b"\x01" + struct.pack("<HB", off, width)


def map_reqs(entries):
    return b"".join(struct.pack("<QII", g, l, 0) for g, l in entries)


def unmap_reqs(entries):
    return b"".join(struct.pack("<QQ", i, s) for i, s in entries)


def seeds():
    maps = [(0x2000, 0x100), (0x2100, 0x80), (0x5100, 0x200)]
    base = image([(0, page(1, 3, R0 + 0x100, R0 + 0x200)), (0x100, map_reqs(maps))])
    unmap = poke(0, page(2, 2, R0 + 0x100, R0 + 0x200)) + poke(0x100, unmap_reqs([(1, 0x100), (3, 0x200)]))
    yield "map_unmap", with_image(0, base, ring(R0) + mmio_r(0x0C, 4) + unmap + ring(R0) + mmio_r(0x0C, 4))
    yield "map_unmap_all", with_image(0, base, ring(R0) + poke(0, page(3, 0, 0, 0)) + ring(R0))
    yield "identity_limits", with_image(7, base, ring(R0) + ring(R0) + mmio_r(0x38, 4) + mmio_r(0x30, 4))
    yield "map_remove_r1", with_image(0, base, ring(R0) + b"\x05" + unmap + ring(R0) + b"\x05" + ring(R0))
    yield "map_reset", with_image(2, base, ring(R0) + b"\x04" + unmap + ring(R0))
    regs = b"".join(mmio_r(o, 4) for o in range(0, 0x40, 4))
    regs += mmio_w(0x3C, 4, 7) + mmio_r(0x3C, 4) + mmio_r(0x05, 1) + mmio_r(0x0A, 2) + mmio_w(0x18, 1, 0)
    yield "registers", with_image(0, b"", regs)
    cfg = b"\x06" + bytes([0x10, 4]) + b"\xff" * 8 + b"\x07" + bytes([0x10, 4])
    cfg += b"\x06" + bytes([0x04, 2]) + b"\x06\x00" + b"\x00" * 6 + b"\x07" + bytes([0, 200])
    yield "config", with_image(0, b"", cfg)
    bad = image([(0, page(1, 5000, R0 + 0x100, R0 + 0x200)), (0x40, page(9, 1, R0 + 0x100, R0 + 0x200)),
                 (0x80, page(1, 2, 0x4ff0, R0 + 0x200))])
    yield "invalid_pages", with_image(0, bad, ring(R0) + ring(R0 + 0x40) + ring(R0 + 0x80) + ring(0) + ring(0x20000))
    overlap = image([(0, page(1, 3, R0 + 0x100, R0 + 0x100)), (0x100, map_reqs(maps))])
    # MAP/UNMAP with arrays at region edges (op 9)
    edges = b"".join(b"\x09" + bytes([t, n, sel, sel2, 0]) for t, n, sel, sel2 in
                     [(1, 3, 0, 4), (1, 2, 1, 5), (2, 2, 0, 5), (1, 1, 2, 6), (3, 0, 0, 0)])
    yield "edges", with_image(0, base, edges)
    yield "overlap", with_image(0, overlap, ring(R0))


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
