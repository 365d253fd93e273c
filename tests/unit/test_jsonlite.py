"""The CLI's JSON (``_json`` driven directly) gives what ``json.dumps``/``json.loads`` give."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kapal.cli import jsonlite

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_same_text_and_values_as_json(value: object) -> None:
    text = jsonlite.dumps(value)
    assert text == json.dumps(value)
    assert jsonlite.loads(text) == json.loads(text)
    assert jsonlite.loads(text.encode()) == json.loads(text)
    assert jsonlite.loads(f" \n{text}\t ") == value


@given(st.text(max_size=20))
def test_whatever_json_refuses_jsonlite_refuses(text: str) -> None:
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            jsonlite.loads(text)
    else:
        assert jsonlite.loads(text) == expected or (expected != expected)  # NaN


def test_raw_decode_reads_one_value_of_a_stream() -> None:
    stream = '{"status": "a"}\r\n{"status": "b"}'
    first, end = jsonlite.raw_decode(stream)
    second, _ = jsonlite.raw_decode(stream, end)
    assert (first, second) == ({"status": "a"}, {"status": "b"})
    with pytest.raises(ValueError):
        jsonlite.raw_decode('{"status": ')
    assert math.isinf(jsonlite.loads("Infinity"))
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsonlite.dumps({"a": object()})
