"""doctor.io.jsonstream: records, exact positions, errors, and no traceback on any input.

The reference for "what parses" is Python's own ``json`` (what LLaVA's train.py uses): every
valid array must give exactly ``json.loads``'s records, at any chunk size."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import doctor
from doctor.io.jsonstream import JsonStream, ParseError, read_value_at


def stream(tmp_path, data: bytes | str, chunk: int = 7, name: str = "d.json"):
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    s = JsonStream(path, chunk_size=chunk)
    return s, list(s), path


def test_array_records_lines_columns_and_offsets(tmp_path):
    text = '[\n  {"a": 1},\n  {"b": "é"},\n  [3]\n]\n'
    s, items, path = stream(tmp_path, text)
    assert [v for v, *_ in items] == json.loads(text)
    assert [(line, col) for _, line, col, _ in items] == [(2, 3), (3, 3), (4, 3)]
    assert s.layout == "array" and s.complete and s.fatal is None
    for value, _line, _col, offset in items:
        assert read_value_at(path, offset) == value  # byte offsets, with a 2-byte "é" before one


def test_json_lines_and_recovery_after_a_bad_line(tmp_path):
    s, items, _ = stream(tmp_path, '{"a": 1}\n{"b": 2,,}\n\n{"c": 3}\n', name="d.jsonl")
    values = [v for v, *_ in items]
    assert values[0] == {"a": 1} and values[2] == {"c": 3}
    err = values[1]
    assert isinstance(err, ParseError) and err.kind == "syntax" and (err.line, err.column) == (2, 9)
    assert s.layout == "values" and s.complete and s.errors == 1


def test_pretty_printed_and_shared_lines_are_counted(tmp_path):
    s, items, _ = stream(tmp_path, '{"a": 1}\n{"b":\n 2}\n{"c": 3} {"d": 4}\n')
    assert len(items) == 4 and s.multiline_values == 1 and s.shared_lines == 1


def test_trailing_comma_is_reported_not_fatal(tmp_path):
    s, items, _ = stream(tmp_path, '[\n  {"a": 1},\n  {"b": 2},\n]\n')
    assert len(items) == 2 and s.complete and s.trailing_comma == (3, 11)
    with pytest.raises(json.JSONDecodeError):
        json.loads('[\n  {"a": 1},\n  {"b": 2},\n]\n')  # what json.load does with it


@pytest.mark.parametrize(
    "text, message, where",
    [
        ('[{"a": 1} {"b": 2}]', "Expecting ',' delimiter", (1, 11)),
        ('[{"a": 1}, {"b": 2}', "end of the file", (1, 20)),
        ('[{"a": 1}, {"b": "abc', "Unterminated string", (1, 18)),
        ('[1] [2]', "Extra data", (1, 5)),
    ],
)
def test_array_syntax_errors_stop_with_position(tmp_path, text, message, where):
    s, items, _ = stream(tmp_path, text)
    err = items[-1][0]
    assert isinstance(err, ParseError) and message in err.message and (err.line, err.column) == where
    assert s.fatal is err and not s.complete


def test_bom_encoding_and_depth(tmp_path):
    s, items, _ = stream(tmp_path, "\ufeff[{}]")
    assert s.bom and items[0][0] == {}
    s, items, _ = stream(tmp_path, b'[{"a": "x"},\n {"b": "\xff"}]')
    err = items[-1][0]
    assert err.kind == "encoding" and (err.line, err.column, err.offset) == (2, 9, 21)
    s, items, _ = stream(tmp_path, "[" + "[" * 5000 + "]" * 5000 + "]")
    assert items[0][0].kind == "too-deep"


def test_too_large_single_value_is_refused(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"data": ["x" * 100] * 200}))
    s = JsonStream(path, chunk_size=64, max_value_chars=4096)
    items = list(s)
    assert items[0][0].kind == "too-large" and s.fatal is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(json_values, max_size=6), indent=st.sampled_from([None, 0, 2]),
       chunk=st.integers(min_value=1, max_value=64))
def test_any_valid_array_streams_like_json_loads(tmp_path, records, indent, chunk):
    text = json.dumps(records, indent=indent, ensure_ascii=bool(chunk % 2))
    path = tmp_path / "h.json"
    path.write_text(text, encoding="utf-8")
    s = JsonStream(path, chunk_size=chunk)
    got = [v for v, *_ in s]
    assert got == json.loads(text) and s.complete and s.fatal is None


def _mutate(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(4)
        pos = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            del b[min(pos, len(b) - 1)]
        elif op == 1:
            b[pos:pos] = bytes([rnd.choice(b'[]{},:"\\\n 0a\xff\xc3')])
        elif op == 2:
            b = b[:pos]
        else:
            b[pos:pos] = b[pos:pos + rnd.randint(0, 8)]
    return bytes(b)


SEED = b'[{"id": "a", "image": "x.png", "conversations": [{"from": "human", "value": "<image>\\nHi"}, ' \
       b'{"from": "gpt", "value": "Yo"}]}, {"messages": [{"role": "user", "content": "q"}]}]'


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200), st.integers(0, 2**32).map(lambda s: _mutate(SEED, random.Random(s)))),
       suffix=st.sampled_from([".json", ".jsonl"]))
def test_random_and_mutated_bytes_give_findings_never_a_traceback(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    items = list(JsonStream(path, chunk_size=16))  # must not raise: bad input is a ParseError value
    try:
        expected = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        expected = None
    if isinstance(expected, list):  # what json.load accepts, the stream reads the same
        assert [v for v, *_ in items] == expected
    elif expected is None and data.strip():
        assert any(isinstance(v, ParseError) for v, *_ in items) or not data.lstrip().startswith(b"[")
    report = doctor.check(str(path), select=["DAT"], images="exists", image_folder=str(tmp_path))
    assert not report.internal_errors, [f.message for f in report.internal_errors]
    assert all(f.code.startswith(("DAT", "ENV")) for f in report.findings)


KEYS = ["id", "image", "images", "conversations", "messages", "from", "value", "role", "content", "type", "text",
        "path"]
leaf = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(
    ["human", "gpt", "user", "assistant", "system", "<image>", "<image>\nq", "", " ", "a.png", "../x.png", "/abs.png",
     "image", "text"])
shaped = st.recursive(leaf, lambda children: st.lists(children, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS), children, max_size=5), max_leaves=20)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(shaped, min_size=1, max_size=5), lines=st.booleans())
def test_record_shaped_garbage_checks_and_fixes_without_a_crash(tmp_path, records, lines):
    path = tmp_path / ("g.jsonl" if lines else "g.json")
    path.write_text("".join(json.dumps(r) + "\n" for r in records) if lines else json.dumps(records))
    report = doctor.check(str(path), select=["DAT"], images="header", image_folder=str(tmp_path),
                          fix=True, unsafe_fixes=True)
    assert not report.internal_errors, [f.message for f in report.internal_errors]
    for outcome in report.fixes:
        assert not outcome.error or outcome.error.startswith(str(path)), outcome.error
