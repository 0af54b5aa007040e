"""Stream the records of a big JSON dataset with bounded memory and exact positions.

``JsonStream(path)`` yields ``(value, line, column, offset)`` for every record of

- a JSON array (``[ {...}, {...} ]``, what ``json.load`` reads), or
- a stream of values (JSON Lines: one value per line; also concatenated or pretty-printed
  values, which JSON Lines readers reject: ``multiline_values`` / ``shared_lines`` count them).

``line`` and ``column`` are 1-based (the column counts characters, like ``json``'s own
messages); ``offset`` is the byte offset of the record's first character, for
``read_value_at``. A record that cannot be parsed is yielded as a ``ParseError`` value. In an
array, a syntax error ends the stream (nothing after it is reachable for ``json.load``
either); in a value stream, reading goes on at the next line, as a JSON Lines reader would.
After iteration, ``layout``, ``bom``, ``trailing_comma``, ``fatal``, ``complete`` and the
counters say what the file looked like.

Why not ijson: measured on a 335 MB LLaVA-style array (200k records), ijson's yajl2_c
backend and this chunked ``json.JSONDecoder.raw_decode`` loop both take about 1.5 s (``json.load``
7.5 s, most of it garbage collection over the finished list), but only this loop knows where each
record starts, which every finding needs. ``benchmarks/dataset_bench.py`` measures both.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1 << 20
# One record larger than this (in characters) is reported, not read: a file whose top level is
# one huge object or array would otherwise be loaded whole.
MAX_VALUE_CHARS = 256 << 20

_WS = re.compile(r"[ \t\n\r]*")
_DECODE = json.JSONDecoder().raw_decode


@dataclass(frozen=True)
class ParseError:
    """A record (or the file) that does not parse. ``kind``: syntax, encoding, too-deep,
    too-large."""

    kind: str
    message: str
    line: int
    column: int
    offset: int


class JsonStream:
    """Iterate the records of ``path``; see the module docstring."""

    def __init__(self, path: str | Path, chunk_size: int = CHUNK, max_value_chars: int = MAX_VALUE_CHARS) -> None:
        self.path = Path(path)
        self.chunk_size = chunk_size
        self.max_value_chars = max_value_chars
        self.layout = "unknown"  # array | values | empty
        self.bom = False
        self.trailing_comma: tuple[int, int] | None = None  # (line, column) of the comma
        self.fatal: ParseError | None = None  # the error that ended the stream early
        self.complete = False  # the end of the file was reached
        self.records = 0
        self.errors = 0
        self.multiline_values = 0  # value stream: values spread over several lines
        self.shared_lines = 0  # value stream: values starting on the line another one ended
        self.bytes = 0  # bytes read from the file

    def __iter__(self) -> Iterator[tuple[Any, int, int, int]]:
        with self.path.open("rb") as f:
            reader = _Reader(f, self.chunk_size)
            try:
                yield from self._records(reader)
            finally:
                self.bytes = reader.raw_read

    # ---- top level --------------------------------------------------------------------------
    def _records(self, r: _Reader) -> Iterator[tuple[Any, int, int, int]]:
        try:
            r.fill(0)
            if r.buf.startswith("\ufeff"):
                self.bom = True
                r.pos = 1
            c = r.skip_ws()
            if c == "":
                self.layout = "empty"
                self.complete = True
            elif c == "[":
                self.layout = "array"
                r.pos += 1
                yield from self._array(r)
            else:
                self.layout = "values"
                yield from self._values(r)
        except _EncodingError as e:
            self.fatal = e.error
            self.errors += 1
            yield e.error, e.error.line, e.error.column, e.error.offset

    def _array(self, r: _Reader) -> Iterator[tuple[Any, int, int, int]]:
        c = r.skip_ws()
        if c == "]":
            r.pos += 1
            yield from self._after_array(r)
            return
        ws = _WS.match
        while True:
            item = self._value(r, track_end=False)
            if isinstance(item[0], ParseError):
                self.fatal = item[0]
                self.errors += 1
                yield item
                return
            self.records += 1
            yield item
            # The separator, usually "," after a little whitespace: skip it without a call.
            buf = r.buf
            p = ws(buf, r.pos).end()
            c = buf[p] if p < len(buf) else ""
            if c == ",":
                q = ws(buf, p + 1).end()
                if q < len(buf) and buf[q] != "]":
                    r.pos = q
                    continue
            r.pos = p
            c = r.skip_ws()
            if c == ",":
                comma = r.pos
                r.pos += 1
                if r.skip_ws() == "]":
                    self.trailing_comma = r.position(comma)[:2] if comma >= r.tpos else r.position(r.pos)[:2]
                    r.pos += 1
                    yield from self._after_array(r)
                    return
            elif c == "]":
                r.pos += 1
                yield from self._after_array(r)
                return
            else:
                what = "the end of the file" if c == "" else repr(c)
                err = r.error("syntax", f"Expecting ',' delimiter or ']' after a record, found {what}", r.pos)
                self.fatal = err
                self.errors += 1
                yield err, err.line, err.column, err.offset
                return

    def _after_array(self, r: _Reader) -> Iterator[tuple[Any, int, int, int]]:
        if r.skip_ws() != "":
            err = r.error("syntax", "Extra data after the closing ']' of the array", r.pos)
            self.fatal = err
            self.errors += 1
            yield err, err.line, err.column, err.offset
            return
        self.complete = True

    def _values(self, r: _Reader) -> Iterator[tuple[Any, int, int, int]]:
        last_end_line = 0
        while True:
            c = r.skip_ws()
            if c == "":
                self.complete = True
                return
            item = self._value(r)
            value, line = item[0], item[1]
            if isinstance(value, ParseError):
                self.errors += 1
                yield item
                if value.kind == "too-large":
                    self.fatal = value
                    return
                r.skip_line()
                last_end_line = 0
                continue
            self.records += 1
            if line == last_end_line:
                self.shared_lines += 1
            if r.line != line:
                self.multiline_values += 1
            last_end_line = r.line
            yield item

    def _value(self, r: _Reader, track_end: bool = True) -> tuple[Any, int, int, int]:
        """Decode one value at ``r.pos``; on success ``r.pos`` is just after it."""
        line, column, offset = r.position(r.pos)
        while True:
            p = r.pos
            try:
                value, end = _DECODE(r.buf, p)
            except json.JSONDecodeError as e:
                if not r.eof and (e.msg.startswith("Unterminated string") or e.pos >= len(r.buf) - 8):
                    if len(r.buf) - p > self.max_value_chars:
                        return self._too_large(r, line, column, offset)
                    r.fill(p)
                    continue
                err = r.error("syntax", e.msg, e.pos)
                return err, line, column, offset
            except RecursionError:
                msg = "nested too deeply: Python's json module raises RecursionError (about 1000 levels)"
                return ParseError("too-deep", msg, line, column, offset), line, column, offset
            if not r.eof and (end == len(r.buf) or type(value) in (int, float) and len(r.buf) - end < 64):
                r.fill(p)  # a number may go on in the next chunk ("0" of "0.5", "1" of "1e3")
                continue
            if track_end:
                r.position(end)
            r.pos = end
            return value, line, column, offset

    def _too_large(self, r: _Reader, line: int, column: int, offset: int) -> tuple[Any, int, int, int]:
        msg = f"one JSON value is larger than {self.max_value_chars >> 20} MiB; expected an array of records"
        return ParseError("too-large", msg, line, column, offset), line, column, offset


class _EncodingError(Exception):
    def __init__(self, error: ParseError) -> None:
        self.error = error


class _Reader:
    """A decoded text window over the file that tracks line, column and byte offset."""

    def __init__(self, f: BinaryIO, chunk_size: int) -> None:
        self.f = f
        self.chunk_size = chunk_size
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.ascii = True
        # Position bookkeeping, valid at buffer index ``tpos``.
        self.tpos = 0
        self.line = 1
        self.line_start = 0  # buffer index where the current line starts (may be negative)
        self.byte = 0
        self.raw_read = 0

    def fill(self, keep: int) -> bool:
        """Drop the text before ``keep``, read more; False at the end of the file."""
        if self.eof:
            return False
        self.position(keep)
        size = max(self.chunk_size, len(self.buf) - keep)
        chunk = self.f.read(size)
        try:
            text = self.decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            raise _EncodingError(self._encoding_error(chunk, e)) from None
        self.raw_read += len(chunk)
        if not chunk:
            self.eof = True
        self.buf = self.buf[keep:] + text
        self.ascii = self.buf.isascii()
        self.pos -= keep
        self.tpos -= keep
        self.line_start -= keep
        return bool(chunk)

    def skip_ws(self) -> str:
        """Skip whitespace (reading on as needed); the next character, or "" at the end."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill(self.pos):
                return ""

    def skip_line(self) -> None:
        """Move past the next newline (error recovery in a value stream)."""
        while True:
            nl = self.buf.find("\n", self.pos)
            if nl >= 0:
                self.pos = nl + 1
                return
            self.pos = len(self.buf)
            if not self.fill(self.pos):
                return

    def position(self, p: int) -> tuple[int, int, int]:
        """(line, column, byte offset) of buffer index ``p`` (which must not be before the
        last position asked for)."""
        if p > self.tpos:
            buf = self.buf
            n = buf.count("\n", self.tpos, p)
            if n:
                self.line += n
                self.line_start = buf.rfind("\n", self.tpos, p) + 1
            self.byte += (p - self.tpos) if self.ascii else len(buf[self.tpos:p].encode("utf-8", "surrogatepass"))
            self.tpos = p
        return self.line, p - self.line_start + 1, self.byte

    def error(self, kind: str, message: str, p: int) -> ParseError:
        line, column, offset = self.position(max(p, self.tpos))
        return ParseError(kind, message, line, column, offset)

    def _encoding_error(self, chunk: bytes, e: UnicodeDecodeError) -> ParseError:
        # Everything decoded so far precedes the bad byte; count the chunk's lines up to it.
        # (The decoder prepends the bytes of a character split by the previous chunk.)
        self.position(len(self.buf))
        data = bytes(e.object)
        before = data[: e.start]
        pending = len(data) - len(chunk)
        line = self.line + before.count(b"\n")
        nl = before.rfind(b"\n")
        if nl >= 0:
            column = len(before[nl + 1:].decode("utf-8", "ignore")) + 1
        else:
            column = len(self.buf) - self.line_start + len(before.decode("utf-8", "ignore")) + 1
        offset = self.raw_read - pending + e.start
        msg = f"not valid UTF-8: byte 0x{data[e.start:e.start + 1].hex()} ({e.reason}) at byte offset {offset}"
        return ParseError("encoding", msg, line, column, offset)


def read_value_at(path: str | Path, offset: int, limit: int = MAX_VALUE_CHARS) -> Any:
    """Decode the one JSON value that starts at byte ``offset`` (as reported by ``JsonStream``)."""
    with Path(path).open("rb") as f:
        f.seek(offset)
        data = b""
        size = 64 << 10
        while True:
            chunk = f.read(size)
            data += chunk
            text = data.decode("utf-8", "ignore")
            try:
                return _DECODE(text, 0)[0]
            except json.JSONDecodeError:
                if not chunk or len(data) > limit:
                    raise
                size *= 2
