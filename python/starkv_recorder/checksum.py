"""CRC32C (Castagnoli), as FORMAT.md "Checksums" specifies: reflected polynomial 0x82F63B78,
init and final xor 0xFFFFFFFF. Test vector: crc32c(b"123456789") == 0xE3069283.

`crc32c` uses the `crc32c` package from PyPI (hardware accelerated where the CPU has it);
`crc32c_reference` is a table-driven pure-Python implementation used to check it."""
from __future__ import annotations

import crc32c as _crc32c_pkg

_POLY = 0x82F63B78


def _make_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32C of `data` as an unsigned 32-bit integer."""
    return _crc32c_pkg.crc32c(bytes(data) if isinstance(data, memoryview) else data) & 0xFFFFFFFF


def crc32c_reference(data: bytes | bytearray | memoryview) -> int:
    """Bitwise-table CRC32C in pure Python (slow; for tests and as a cross-check)."""
    c = 0xFFFFFFFF
    for b in bytes(data):
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
