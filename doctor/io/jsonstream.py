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


def is_url(path: Any) -> bool:
    """A dataset given as an fsspec URL (``s3://...``, ``memory://...``, ``file://...``)."""
    return isinstance(path, str) and "://" in path


URL_HINT = "install the fsspec package for this protocol: s3fs (s3://), gcsfs (gs://), huggingface_hub (hf://)"


def open_binary(path: Any) -> BinaryIO:
    """``open(path, "rb")`` for a local path or an fsspec URL. Every failure is an ``OSError``
    (FileNotFoundError for a missing object) whose message names the URL, never a backend's own
    exception or an ImportError."""
    if not is_url(path):
        return Path(path).open("rb")
    try:
        import fsspec

        return fsspec.open(path, "rb").open()
    except FileNotFoundError:
        raise FileNotFoundError(2, f"no such object: {path}") from None
    except ImportError as e:
        raise OSError(f"cannot open {path}: {e} ({URL_HINT})") from None
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - an unknown protocol, bad credentials, ...: each backend its own
        raise OSError(f"cannot open {path}: {type(e).__name__}: {e}") from None


def file_size(path: Any) -> int:
    """The size of a local file or an fsspec URL's object (``OSError`` as ``open_binary``)."""
    if not is_url(path):
        return Path(path).stat().st_size
    with open_binary(path) as f:
        return f.seek(0, 2)


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

    def __init__(self, path: str | Path, chunk_size: int = CHUNK, max_value_chars: int = MAX_VALUE_CHARS,
                 fast: bool = True, part: tuple[int, int, int] | None = None,
                 array_part: tuple[int, int, int, int] | None = None) -> None:
        self.path = path if is_url(path) else Path(path)
        # A byte range of a JSON Lines file, (start, end, line of start): read as a value stream
        # with positions of the whole file (``--engine ray`` scans a file in such parts). ``start``
        # must be the first byte of a line.
        self.part = part
        # A byte range of a JSON array, (start, end, line, column of start): ``start`` is the first
        # byte of one of its elements; the elements that start before ``end`` are yielded (the last
        # one read whole, past ``end``), positioned as in the whole file; then ``next_start`` is
        # (offset, line, column) of the element after them, or None when the array ended.
        self.array_part = array_part
        self.next_start: tuple[int, int, int] | None = None
        self.fast = fast  # the compiled path for arrays (msgspec), when installed
        # A msgspec decoder for a list of typed records: windows that decode with it are yielded
        # whole, as ``Window`` values (the dataset scan sets it once it knows the format).
        self.typed: Any = None
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
        if self.part is not None:
            yield from self._part()
            return
        if self.array_part is not None:
            yield from self._array_part()
            return
        with open_binary(self.path) as f:
            if self.fast and _msgspec() is not None:
                fast = _FastArray(self, f)
                if fast.start():
                    yield from fast.records()
                    if fast.handover is None:
                        return
                    # The rest (the last records, anything unusual) goes through the exact reader.
                    offset, line, column = fast.handover
                    f.seek(offset)
                    reader = _Reader(f, self.chunk_size)
                    reader.raw_read = reader.byte = offset
                    reader.line, reader.line_start = line, -(column - 1)
                    try:
                        yield from self._array(reader)
                    except _EncodingError as e:
                        self.fatal = e.error
                        self.errors += 1
                        yield e.error, e.error.line, e.error.column, e.error.offset
                    finally:
                        self.bytes = reader.raw_read
                    return
                f.seek(0)
            reader = _Reader(f, self.chunk_size)
            try:
                yield from self._records(reader)
            finally:
                self.bytes = reader.raw_read

    def _part(self) -> Iterator[tuple[Any, int, int, int]]:
        assert self.part is not None
        start, end, line = self.part
        with open_binary(self.path) as raw:
            raw.seek(start)
            reader = _Reader(_Bounded(raw, end - start), self.chunk_size)
            reader.raw_read = reader.byte = start
            reader.line = line
            self.layout = "values"
            try:
                yield from self._values(reader)
            except _EncodingError as e:
                self.fatal = e.error
                self.errors += 1
                yield e.error, e.error.line, e.error.column, e.error.offset
            finally:
                self.bytes = reader.raw_read - start

    def _array_part(self) -> Iterator[tuple[Any, int, int, int]]:
        assert self.array_part is not None
        start, end, line, column = self.array_part
        with open_binary(self.path) as f:
            self.layout = "array"
            if self.fast and _msgspec() is not None:  # windows of elements, until the last before ``end``
                fast = _FastArray(self, f, stop=end)
                if fast.start_at(start, line, column):
                    yield from fast.records()
                    start, line, column = fast.handover or (start, line, column)
            f.seek(start)
            reader = _Reader(f, self.chunk_size)
            reader.raw_read = reader.byte = start
            reader.line, reader.line_start = line, -(column - 1)
            try:
                yield from self._array(reader, stop=end)
            except _EncodingError as e:
                self.fatal = e.error
                self.errors += 1
                yield e.error, e.error.line, e.error.column, e.error.offset
            finally:
                self.bytes = reader.raw_read - start

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

    def _array(self, r: _Reader, stop: int | None = None) -> Iterator[tuple[Any, int, int, int]]:
        c = r.skip_ws()
        if c == "]":
            r.pos += 1
            yield from self._after_array(r)
            return
        ws = _WS.match
        while True:
            if stop is not None:  # a part of the array: stop before the first element at or after ``stop``
                at = r.position(r.pos)
                if at[2] >= stop:
                    self.next_start = at
                    return
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
                comma = r.position(r.pos)[:2]  # now: reading on may shift the buffer
                r.pos += 1
                if r.skip_ws() == "]":
                    self.trailing_comma = comma
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


class _Bounded:
    """A binary file seen only up to ``size`` more bytes (one part of a file)."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n) if n > 0 else b""
        self.left -= len(data)
        return data


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


# ---- the compiled path -------------------------------------------------------------------------
FAST_CHUNK = 256 << 10
_SEP = re.compile(rb"[ \t\n\r]*,[ \t\n\r]*")
_BWS = re.compile(rb"[ \t\n\r]*")
_KEY = re.compile(rb'\{[ \t\n\r]*"[^"\\]{0,64}"')
_MSGSPEC: Any = False


def _msgspec() -> Any:
    global _MSGSPEC
    if _MSGSPEC is False:
        try:
            import msgspec
        except ImportError:  # optional: the exact reader alone gives the same results, slower
            _MSGSPEC = None
        else:
            _MSGSPEC = (msgspec.json.Decoder(list[msgspec.Raw]), msgspec.json.Decoder(), msgspec.DecodeError)
    return _MSGSPEC


def raw_list_decoder() -> Any:
    """A decoder of a list of ``msgspec.Raw`` (as ``JsonStream.typed``: windows whose elements are
    split, not built; for counting them)."""
    return _msgspec()[0]


def compiled_available() -> bool:
    """Is the compiled path (msgspec) installed? Without it every file goes through the exact
    reader, with the same results."""
    return _msgspec() is not None


class Window:
    """A run of records the compiled path decoded into typed structs in one call (see
    ``JsonStream.typed``): ``items`` are the structs; positions are computed only when asked
    (``positions``), from the window's bytes (kept until the consumer is done with the window)."""

    __slots__ = ("items", "offset", "line", "column", "size", "body")

    def __init__(self, items: list, offset: int, line: int, column: int, body: bytes) -> None:
        self.items, self.offset, self.line, self.column, self.size = items, offset, line, column, len(body)
        self.body: bytes | None = body

    def records(self) -> list[tuple[Any, int, int, int]]:
        """Every record of the window as the exact reader yields it: (dict, line, column, offset)."""
        assert self.body is not None
        raw_list, one, _ = _msgspec()
        raws = raw_list.decode(b"[" + self.body + b"]")
        pos = window_positions(self.body, raws, self.offset, self.line, self.column)
        return [(one.decode(r), line, col, off) for r, (line, col, off) in zip(raws, pos, strict=True)]


def window_positions(body: bytes, raws: list, offset: int, line: int, column: int) -> list[tuple[int, int, int]]:
    """(line, column, byte offset) of every record of a window whose first record starts at
    ``offset`` (line ``line``, column ``column``); ``raws`` are its records as msgspec.Raw."""
    out = []
    start = mark = 0
    sep = _SEP.match
    for raw in raws:
        n = body.count(b"\n", mark, start)
        if n:
            line += n
            ls = body.rfind(b"\n", mark, start) + 1
            column = 1 + _chars(body[ls:start])
        else:
            column += _chars(body[mark:start])
        mark = start
        out.append((line, column, offset + start))
        m = sep(body, start + len(raw))
        start = m.end() if m else len(body)
    return out


def read_window_positions(path: str | Path, offset: int, size: int, line: int,
                          column: int) -> list[tuple[int, int, int]]:
    """Positions of the records of a ``Window`` read earlier (asked for after the window was
    consumed: only for records that have a finding)."""
    raw_list = _msgspec()[0]
    with open_binary(path) as f:
        f.seek(offset)
        body = f.read(size)
    return window_positions(body, raw_list.decode(b"[" + body + b"]"), offset, line, column)


class _FastArray:
    """A JSON array read with msgspec, a window of records at a time, yielding exactly what the
    exact reader yields (values, 1-based line, column in characters, byte offset).

    Each window ends at a record boundary found from the first record's context (the indentation
    before its ``{`` and its first key, e.g. ``\\n  {\\n    "id"``); a window is accepted only when
    ``[`` + window + ``]`` decodes, which is proof that it ends between two top-level records (a
    cut inside a string leaves it unterminated, a cut inside a nested value leaves it unbalanced).
    With ``stream.typed`` set (a msgspec decoder for a list of structs), a window that decodes
    into those types is yielded as one ``Window``; otherwise its records are yielded one by one.
    Whatever does not fit (the last records, a syntax error, NaN, lone surrogates, invalid UTF-8,
    records that do not share the pattern) is handed to the exact reader at the next record, with
    its position, so the results are identical."""

    def __init__(self, stream: JsonStream, f: BinaryIO, stop: int | None = None) -> None:
        self.stream = stream
        self.f = f
        self.stop = stop  # a part of the array: windows hold only elements that start before this offset
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.eof = False
        self.handover: tuple[int, int, int] | None = None
        self.pattern = b""
        self.line = 1  # line of buf[self.mark]
        self.mark = 0
        self.col = 1  # column of buf[self.mark]
        self.pos = 0

    def _read(self) -> bool:
        chunk = self.f.read(FAST_CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def start(self) -> bool:
        """Read up to the first record; False unless the file is an array this path can take."""
        self._read()
        buf = self.buf
        p = _BWS.match(buf).end()
        if buf[:3] == b"\xef\xbb\xbf" or p >= len(buf) or buf[p:p + 1] != b"[":
            return False
        q = _BWS.match(buf, p + 1).end()
        m = _KEY.match(buf, q)
        if m is None:
            return False
        nl = buf.rfind(b"\n", p, q)
        self.pattern = (buf[nl:q] if nl >= 0 else b"") + m.group()
        self.stream.layout = "array"
        self._advance(q)
        self.pos = q
        return True

    def start_at(self, start: int, line: int, column: int) -> bool:
        """Begin at element ``start`` (line, column) of an array read in parts; False when its
        first key gives no pattern to find window ends by (the exact reader takes it all)."""
        back = max(start - 256, 0)
        self.f.seek(back)
        self._read()
        buf, q = self.buf, start - back
        m = _KEY.match(buf, q)
        if m is None:
            return False
        ws = q
        while ws > 0 and buf[ws - 1] in b" \t\n\r":
            ws -= 1
        nl = buf.rfind(b"\n", ws, q)
        self.pattern = (buf[nl:q] if nl >= 0 else b"") + m.group()
        self.base, self.pos, self.mark, self.line, self.col = back, q, q, line, column
        return True

    def _advance(self, p: int) -> None:
        """Move the line/column bookkeeping to buffer index ``p``."""
        buf, mark = self.buf, self.mark
        n = buf.count(b"\n", mark, p)
        if n:
            self.line += n
            ls = buf.rfind(b"\n", mark, p) + 1
            self.col = 1 + _chars(buf[ls:p])
        else:
            self.col += _chars(buf[mark:p])
        self.mark = p

    def records(self) -> Iterator[tuple[Any, int, int, int]]:
        raw_list, one, error = _msgspec()
        stream = self.stream
        while True:
            if len(self.buf) - self.pos < FAST_CHUNK and not self.eof:
                self._read()
            cut = self._cut()
            if cut is None:
                break
            body = self.buf[self.pos:cut]
            self._advance(self.pos)
            offset = self.base + self.pos
            typed = stream.typed
            window = None
            if typed is not None:
                try:
                    window = Window(typed.decode(b"[" + body + b"]"), offset, self.line, self.col, body)
                except error:
                    window = None
            if window is not None:
                stream.records += len(window.items)
                yield window, self.line, self.col, offset
                window.body = None
                end = cut
            else:
                try:
                    raws = raw_list.decode(b"[" + body + b"]")
                    values = [one.decode(r) for r in raws]
                except error:
                    break
                positions = window_positions(body, raws, offset, self.line, self.col)
                for value, (line, col, off) in zip(values, positions, strict=True):
                    stream.records += 1
                    yield value, line, col, off
                end = cut
            self.pos = _SEP.match(self.buf, end).end()
            if self.pos > FAST_CHUNK:  # drop what was read
                self._advance(self.pos)
                self.buf = self.buf[self.pos:]
                self.base += self.pos
                self.mark -= self.pos
                self.pos = 0
        self._advance(self.pos)
        self.handover = (self.base + self.pos, self.line, self.col)
        stream.bytes = self.base + len(self.buf)

    def _cut(self) -> int | None:
        """The index of the comma before the last record start in the buffer that follows the
        window, or None when there is none (the exact reader takes over)."""
        buf, pattern, lo = self.buf, self.pattern, self.pos + 1
        hi = len(buf) if self.stop is None else min(len(buf), self.stop - self.base)
        for _ in range(8):
            k = buf.rfind(pattern, lo, hi)
            if k < 0:
                return None
            brace = buf.index(b"{", k)
            j = brace - 1
            while j >= lo and buf[j] in b" \t\n\r":
                j -= 1
            if j >= lo and buf[j] == 0x2C:  # ","
                return j
            hi = k
        return None


def _chars(b: bytes) -> int:
    return len(b) if b.isascii() else len(b.decode("utf-8", "replace"))


def read_value_at(path: str | Path, offset: int, limit: int = MAX_VALUE_CHARS) -> Any:
    """Decode the one JSON value that starts at byte ``offset`` (as reported by ``JsonStream``)."""
    with open_binary(path) as f:
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


# ---- a JSON array cut into byte ranges (``--engine ray``) ---------------------------------------
START_WINDOW = 1 << 20  # bytes after a cut searched for the first element that starts there
START_TRIES = 256  # candidate starts tried before a part gives up (the driver then places it)
LOOKBACK = 4096  # bytes before a cut read to see what precedes a candidate
PLAUSIBLE_WINDOW = 256 << 10  # bytes from a candidate in which its elements must parse in sequence


def chars(data: bytes) -> int:
    """Characters in ``data`` counted as its UTF-8 lead bytes: additive over any split of the bytes,
    so the column of a byte range's end follows from its start's without decoding."""
    if data.isascii():
        return len(data)
    import numpy as np

    a = np.frombuffer(data, dtype=np.uint8)
    return len(data) - int(np.count_nonzero((a & 0xC0) == 0x80))


def segment_stats(f: BinaryIO, start: int, end: int) -> tuple[int, int]:
    """(newlines, characters after the last newline, or all of them without one) of bytes
    [start, end): the line and column at ``end`` follow from those at ``start``."""
    f.seek(start)
    newlines = tail = 0
    left = end - start
    while left > 0:
        chunk = f.read(min(left, 4 << 20))
        if not chunk:
            break
        left -= len(chunk)
        n = chunk.count(b"\n")
        if n:
            newlines += n
            tail = chars(chunk[chunk.rfind(b"\n") + 1:])
        else:
            tail += chars(chunk)
    return newlines, tail


def advance(line: int, column: int, stats: tuple[int, int]) -> tuple[int, int]:
    """The (line, column) after a byte range with ``segment_stats`` ``stats`` that starts at (line, column)."""
    newlines, tail = stats
    return (line + newlines, tail + 1) if newlines else (line, column + tail)


def find_array_start(f: BinaryIO, cut: int, end: int) -> int | None:
    """The byte offset of the first plausible element of a JSON array at or after ``cut`` (and
    before ``end``): a ``{`` whose preceding non-blank byte is ``,``, from which a few elements
    parse in sequence with ``,`` between them (or the array's last one, then ``]`` and the end of
    the file). A guess: one inside a string or a nested list of objects may pass, and the caller
    verifies it (the element before it must end there); None when nothing plausible was found."""
    base = max(cut - LOOKBACK, 0)
    f.seek(base)
    data = f.read(cut - base + START_WINDOW)
    at_eof = len(data) < cut - base + START_WINDOW
    p = cut - base - 1
    limit = min(end, cut + START_WINDOW) - base
    for _ in range(START_TRIES):
        p = data.find(b"{", p + 1, limit)
        if p < 0:
            return None
        j = p - 1
        while j >= 0 and data[j] in b" \t\n\r":
            j -= 1
        window = data[p:p + PLAUSIBLE_WINDOW]
        if j >= 0 and data[j] == 0x2C and _plausible(window.decode("utf-8", "replace"),
                                                     at_eof and p + len(window) >= len(data)):
            return base + p
    return None


def _plausible(text: str, at_eof: bool, elements: int = 64) -> bool:
    """Do array elements follow in sequence from the start of ``text`` (a window of the file)?"""
    ws = _WS.match
    pos = 0
    for _ in range(elements):
        try:
            _, pos = _DECODE(text, pos)
        except json.JSONDecodeError as e:  # cut off by the window's end: cannot tell, say yes
            return not at_eof and (e.msg.startswith("Unterminated string") or e.pos >= len(text) - 8)
        except RecursionError:
            return False
        pos = ws(text, pos).end()
        if pos >= len(text):
            return not at_eof
        c = text[pos]
        if c == "]":
            return text[pos + 1:].strip(" \t\n\r") == ""  # only blanks may follow the array
        if c != ",":
            return False
        pos = ws(text, pos + 1).end()
        if pos < len(text) and text[pos] == "]":  # a trailing comma: the array's end
            return text[pos + 1:].strip(" \t\n\r") == ""  # only blanks may follow the array
    return True
