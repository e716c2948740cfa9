"""Fuzzing parse_response: any body gives reports or ResponseFormatError, never more.

The example count is kept small for CI; ``bench/fuzz.py`` runs the same
properties on tens of thousands of bodies.
"""

from __future__ import annotations

import contextlib
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxr_widgets import ResponseFormatError, parse_response
from cxr_widgets.report import validate_box

EXAMPLES = int(os.environ.get("CXR_FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

grid = st.integers(0, 99).map(lambda k: (k + 0.5) / 100)


@st.composite
def valid_box(draw: st.DrawFn) -> list[float]:
    x0, x1 = sorted((draw(grid), draw(grid)))
    y0, y1 = sorted((draw(grid), draw(grid)))
    return [x0, y0, x1, y1]


valid_finding = st.tuples(
    st.text(max_size=80), st.one_of(st.none(), st.lists(valid_box(), min_size=1, max_size=3))
).map(list)
valid_output = st.lists(valid_finding, max_size=8)

hostile_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
)
json_scalars = st.one_of(st.none(), st.booleans(), hostile_number, st.text(max_size=20))
any_json = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
nearly_valid_box = st.one_of(valid_box(), st.lists(hostile_number, max_size=6), any_json)
nearly_valid_finding = st.one_of(
    valid_finding,
    st.tuples(
        st.one_of(st.text(max_size=20), any_json), st.lists(nearly_valid_box, max_size=3)
    ).map(list),
    st.lists(any_json, max_size=3),
    any_json,
)
nearly_valid_output = st.lists(nearly_valid_finding, max_size=6)


def as_body(output: object, shape: str) -> object:
    if shape == "documented":
        return {"output": output}
    if shape == "documented-string":
        return {"output": json.dumps(output)}
    return [{"output": json.dumps(output)}]


shapes = st.sampled_from(["documented", "documented-string", "records"])
encodings = st.sampled_from(["object", "str", "bytes"])


def encode(body: object, encoding: str) -> object:
    if encoding == "object":
        return body
    text = json.dumps(body)
    return text if encoding == "str" else text.encode()


def check(body: object, strict: bool) -> None:
    try:
        reports = parse_response(body, strict=strict)
    except ResponseFormatError:
        return
    for report in reports:
        for finding in report.findings:
            assert isinstance(finding.text, str)
            for box in finding.boxes:
                assert validate_box(box.as_list()) is None, box


@FUZZ
@given(valid_output, shapes, encodings)
def test_valid_bodies_parse_exactly(output, shape, encoding):
    body = encode(as_body(output, shape), encoding)
    (report,) = parse_response(body, n_studies=1)
    assert [f.to_wire() for f in report.findings] == [
        [text, boxes if boxes else None] for text, boxes in output
    ]
    assert report.warnings == ()


@FUZZ
@given(nearly_valid_output, shapes, encodings, st.booleans())
def test_nearly_valid_bodies_never_leak_invalid_boxes(output, shape, encoding, strict):
    try:
        body = encode(as_body(output, shape), encoding)
    except (ValueError, OverflowError):  # json cannot encode it; try the object itself
        body = as_body(output, "documented")
    check(body, strict)


@FUZZ
@given(any_json, encodings, st.booleans())
def test_hostile_bodies_raise_only_response_format_error(body, encoding, strict):
    with contextlib.suppress(ValueError, OverflowError):  # json cannot encode it
        body = encode(body, encoding)
    check(body, strict)


@FUZZ
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes(body, strict):
    check(body, strict)


def test_deeply_nested_json_is_a_format_error():
    body = "[" * 100_000 + "]" * 100_000
    check(body, strict=True)
    check({"output": body}, strict=True)


def test_very_long_text_is_kept():
    text = "x" * 1_000_000
    (report,) = parse_response({"output": [[text, None]]})
    assert report.findings[0].text == text


def test_huge_integer_coordinate_is_rejected_in_strict_mode():
    body = {"output": [["finding", [[0, 0, 10**400, 1]]]]}
    try:
        parse_response(body)
    except ResponseFormatError as exc:
        assert "finding 1" in str(exc)
    else:
        raise AssertionError("a coordinate of 10**400 was accepted")
