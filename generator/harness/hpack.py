"""HPACK (RFC 7541), as the harness's gRPC client needs it: request header blocks that are the same bytes
every time, and a full decoder for the server's blocks (static and dynamic tables, Huffman-coded strings).

The encoder writes each field as an exact static-table match (one byte) or as a literal neither indexed nor
Huffman-coded, so a block built once can be sent on any connection, in any order, and never touches the
server's dynamic table. The decoder must see every block the server sends on a connection, in order: the
blocks share its dynamic table.
"""

from __future__ import annotations

__all__ = ["HeaderDecoder", "HpackError", "encode_headers", "huffman_decode"]


class HpackError(Exception):
    """A header block that does not decode (the peer broke HPACK)."""


_STATIC_TABLE = tuple(
    (name.encode(), value.encode())
    for name, value in (
        (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
        (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
        (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
        ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
        ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
        ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
        ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""),
        ("host", ""), ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
        ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
        ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""),
        ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""), ("set-cookie", ""),
        ("strict-transport-security", ""), ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""),
        ("via", ""), ("www-authenticate", ""),
    )
)  # fmt: skip
"""RFC 7541 Appendix A: index 1 is the first entry."""

_STATIC_FIELDS = {field: index for index, field in reversed(list(enumerate(_STATIC_TABLE, start=1)))}
_STATIC_NAMES = {field[0]: index for index, field in reversed(list(enumerate(_STATIC_TABLE, start=1)))}

# RFC 7541 Appendix B is a canonical Huffman code: each symbol's code follows from the code lengths alone
# (codes assigned in order of length, then symbol). The lengths of symbols 0..256 (256 is EOS), base 36.
_HUFFMAN_LENGTHS = (
    "dnsssssssoussussssssssusssssssss6aacd68baa8b8666555666666678f6cad67777777777777777777777878djde6f565656"
    "66577666567655677777fbedskmkkmmmnmnnnnnonoomnonnnnlmnmnnomlkmmnnlnmmolmnnllmlnmnnkmmmnmmnqqkjmnmpqqqrrqo"
    "pjlqrrqrollqqsrrrkoklmllnmmppooqnqrqqrrrrrsrrrrrqu"
)
_EOS = 256


class _Huffman:
    """Decoding tables of the canonical code: per code length, its first code, its end, its symbols' offset."""

    def __init__(self, lengths: str) -> None:
        bits = [int(c, 36) for c in lengths]
        self.symbols = sorted(range(len(bits)), key=lambda s: (bits[s], s))
        self.first: dict[int, int] = {}
        self.end: dict[int, int] = {}
        self.offset: dict[int, int] = {}
        code, previous = -1, bits[self.symbols[0]]
        for position, symbol in enumerate(self.symbols):
            length = bits[symbol]
            code = (code + 1) << (length - previous)
            previous = length
            if length not in self.first:
                self.first[length] = code
                self.offset[length] = position - code
            self.end[length] = code + 1


_huffman: _Huffman | None = None


def huffman_decode(data: bytes) -> bytes:
    """Decode a Huffman-coded HPACK string (Triton's gRPC server sends none; other servers and proxies may).

    Raises:
        HpackError: The bits are not a valid encoding (EOS inside, or padding longer than 7 bits or not ones).
    """
    global _huffman
    if _huffman is None:
        _huffman = _Huffman(_HUFFMAN_LENGTHS)
    first, end, offset, symbols = _huffman.first, _huffman.end, _huffman.offset, _huffman.symbols
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = code << 1 | (byte >> shift) & 1
            length += 1
            if length in first and first[length] <= code < end[length]:
                symbol = symbols[code + offset[length]]
                if symbol == _EOS:
                    raise HpackError("a Huffman-coded string contains EOS")
                out.append(symbol)
                code = length = 0
    if length > 7 or code != (1 << length) - 1:
        raise HpackError("a Huffman-coded string is not padded with the start of EOS")
    return bytes(out)


def _read_integer(block: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
    """HPACK's integer at ``position`` with a ``prefix_bits``-bit prefix: (value, position after it)."""
    limit = (1 << prefix_bits) - 1
    value = block[position] & limit
    position += 1
    if value < limit:
        return value, position
    shift = 0
    while True:
        if position >= len(block) or shift > 28:
            raise HpackError("an integer runs past the end of its header block")
        byte = block[position]
        position += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def _read_string(block: bytes, position: int) -> tuple[bytes, int]:
    """HPACK's string literal at ``position``: (its bytes, position after it)."""
    if position >= len(block):
        raise HpackError("a string runs past the end of its header block")
    coded = block[position] & 0x80
    length, position = _read_integer(block, position, 7)
    end = position + length
    if end > len(block):
        raise HpackError("a string runs past the end of its header block")
    data = block[position:end]
    return (huffman_decode(data) if coded else data), end


class HeaderDecoder:
    """HPACK's decoder for one connection: the static table, the dynamic table, string literals.

    Every header block the server sends on the connection must pass through it, in order, whatever stream
    it belongs to: the blocks share the dynamic table.

    Args:
        max_size: The largest dynamic table the server may use (this side's ``SETTINGS_HEADER_TABLE_SIZE``).
    """

    def __init__(self, max_size: int = 4096) -> None:
        self._limit = max_size
        self._max_size = max_size
        self._size = 0
        self._table: list[tuple[bytes, bytes]] = []  # newest first: index 62 is self._table[0]

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The fields of one complete header block, in order (names and values as bytes).

        Raises:
            HpackError: The block does not decode.
        """
        fields = []
        position = 0
        while position < len(block):
            byte = block[position]
            if byte & 0x80:  # indexed field
                index, position = _read_integer(block, position, 7)
                fields.append(self._entry(index))
            elif byte & 0x40:  # literal, added to the table
                index, position = _read_integer(block, position, 6)
                field, position = self._literal(block, position, index)
                fields.append(field)
                self._insert(*field)
            elif byte & 0x20:  # dynamic table size update
                size, position = _read_integer(block, position, 5)
                if size > self._limit:
                    raise HpackError(f"a table size update to {size} exceeds the {self._limit} allowed")
                self._max_size = size
                self._evict(0)
            else:  # literal not added to the table (0000: without indexing, 0001: never indexed)
                index, position = _read_integer(block, position, 4)
                field, position = self._literal(block, position, index)
                fields.append(field)
        return fields

    def _literal(self, block: bytes, position: int, index: int) -> tuple[tuple[bytes, bytes], int]:
        if index:
            name = self._entry(index)[0]
        else:
            name, position = _read_string(block, position)
        value, position = _read_string(block, position)
        return (name, value), position

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= len(_STATIC_TABLE):
            return _STATIC_TABLE[index - 1]
        dynamic = index - len(_STATIC_TABLE) - 1
        if index <= 0 or dynamic >= len(self._table):
            raise HpackError(f"header table index {index} is out of range")
        return self._table[dynamic]

    def _insert(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 32
        self._evict(size)
        if size <= self._max_size:
            self._table.insert(0, (name, value))
            self._size += size

    def _evict(self, room: int) -> None:
        """Drop the oldest entries until ``room`` more bytes fit (all of them when it cannot)."""
        while self._table and self._size + room > self._max_size:
            name, value = self._table.pop()
            self._size -= len(name) + len(value) + 32


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """HPACK's integer: ``value`` in a ``prefix_bits``-bit prefix of a byte starting with bits ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(data: bytes) -> bytes:
    return _integer(len(data), 7, 0x00) + data


def encode_headers(fields: list[tuple[str, str]]) -> bytes:
    """A header block of ``fields`` (names in lower case, pseudo-headers first) that never changes a table.

    A field of the static table is indexed; any other is a literal without indexing (its name indexed when
    the static table has it), no string Huffman-coded.
    """
    block = b""
    for name, value in fields:
        key, data = name.encode("latin-1"), value.encode("latin-1")
        if (key, data) in _STATIC_FIELDS:
            block += _integer(_STATIC_FIELDS[key, data], 7, 0x80)
        elif key in _STATIC_NAMES:
            block += _integer(_STATIC_NAMES[key], 4, 0x00) + _literal(data)
        else:
            block += b"\x00" + _literal(key) + _literal(data)
    return block
