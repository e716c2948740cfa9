"""The wire contract: the model documentation's examples, every response shape, limits.

The JSON below is copied verbatim from "How to use CXRReportGen" (the
request examples use a 2x2 PNG, base64 with MIME line breaks).
"""

from __future__ import annotations

import base64
import io
import json
import math

import numpy as np
import pytest
from doc_examples import DOC_PNG_B64, DOC_REQUEST_FRONTAL, DOC_REQUEST_FULL, DOC_RESPONSE
from PIL import Image

from cxr_widgets import (
    Box,
    Finding,
    RequestError,
    ResponseFormatError,
    Study,
    StudyError,
    build_request,
    parse_response,
)
from cxr_widgets.contract import (
    MAX_STUDIES_PER_REQUEST,
    format_response,
    prepare_request,
    validate_request,
)
from cxr_widgets.images import prepare_image
from cxr_widgets.study import COLUMNS

DOC_FINDINGS = [
    ["The heart size is normal.", None],
    ["Lungs demonstrate blunting of both costophrenic angles.", [[0.005, 0.555, 0.965, 0.865]]],
    [
        "There is an area of increased radiodensity overlying the left lower lung.",
        [[0.555, 0.405, 0.885, 0.745]],
    ],
    [
        "Healed fractures of the left fourth, fifth, sixth, seventh, and eighth posterior ribs "
        "are noted.",
        [[0.585, 0.135, 0.925, 0.725]],
    ],
]

DOC_PNG = base64.b64decode(DOC_PNG_B64)


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        return np.asarray(image)


def doc_gray() -> np.ndarray:
    """The documentation's RGBA pixel as 8-bit grayscale (it is opaque)."""
    with Image.open(io.BytesIO(DOC_PNG)) as image:
        assert image.mode == "RGBA" and image.size == (2, 2)
        return np.asarray(image.convert("L"))


def wire(findings: list) -> list:
    return [[f.text, [b.as_list() for b in f.boxes] or None] for f in findings]


# --- the documentation's requests ---------------------------------------------------


def test_documented_requests_are_accepted_as_written():
    (row,) = validate_request(json.loads(DOC_REQUEST_FRONTAL))
    assert list(row) == ["frontal_image"]
    assert row["frontal_image"] == DOC_PNG
    (row,) = validate_request(json.loads(DOC_REQUEST_FULL))
    assert row["frontal_image"] == row["lateral_image"] == DOC_PNG
    assert row["indication"] == "Cough and wheezing for 5 months"
    assert row["technique"] == "PA and lateral views of the chest were obtained"


def test_frontal_only_request_is_reproduced():
    documented = json.loads(DOC_REQUEST_FRONTAL)
    built = build_request(Study(DOC_PNG, empty_comparison=""))  # the example sends no comparison
    assert list(built) == list(documented) == ["input_data"]
    assert list(built["input_data"]) == ["columns", "index", "data"]
    assert built["input_data"]["columns"] == documented["input_data"]["columns"]
    assert built["input_data"]["index"] == documented["input_data"]["index"] == [0]
    assert len(built["input_data"]["data"]) == 1 and len(built["input_data"]["data"][0]) == 1
    sent = base64.b64decode(built["input_data"]["data"][0][0])
    assert sent.startswith(b"\x89PNG")
    np.testing.assert_array_equal(pixels(sent), doc_gray())
    validate_request(built)  # what we build passes the same check as the documented one


def test_full_request_is_reproduced():
    documented = json.loads(DOC_REQUEST_FULL)["input_data"]
    study = Study(
        frontal_image=DOC_PNG,
        lateral_image=DOC_PNG,
        indication="Cough and wheezing for 5 months",
        technique="PA and lateral views of the chest were obtained",
        empty_comparison="",
    )
    built = build_request(study)["input_data"]
    assert built["columns"] == documented["columns"]
    assert built["index"] == documented["index"]
    (row,) = built["data"]
    (doc_row,) = documented["data"]
    assert len(row) == len(doc_row) == 4
    assert row[2:] == doc_row[2:]  # the text columns, exactly
    for ours, theirs in zip(row[:2], doc_row[:2], strict=True):
        np.testing.assert_array_equal(pixels(base64.b64decode(ours)), doc_gray())
        assert base64.b64decode(theirs) == DOC_PNG


# --- the documentation's response, in every shape -----------------------------------


def test_documented_response_parses():
    (report,) = parse_response(DOC_RESPONSE, n_studies=1)
    assert wire(report.findings) == DOC_FINDINGS
    assert report.findings[0].boxes == () and not report.findings[0].grounded
    assert report.findings[1].boxes == (Box(0.005, 0.555, 0.965, 0.865),)
    assert report.warnings == ()


def documented_output() -> list:
    return json.loads(DOC_RESPONSE)["output"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json.loads(DOC_RESPONSE), id="dict"),
        pytest.param(DOC_RESPONSE, id="str"),
        pytest.param(DOC_RESPONSE.encode(), id="bytes"),
        pytest.param(bytearray(DOC_RESPONSE.encode()), id="bytearray"),
        pytest.param({"output": json.dumps(DOC_FINDINGS)}, id="dict-output-json-string"),
        pytest.param([{"output": json.dumps(DOC_FINDINGS)}], id="records"),
        pytest.param(json.dumps([{"output": json.dumps(DOC_FINDINGS)}]), id="records-str"),
        pytest.param(json.dumps([{"output": json.dumps(DOC_FINDINGS)}]).encode(), id="records-b"),
        pytest.param([{"output": DOC_FINDINGS}], id="records-output-list"),
        pytest.param(json.dumps(DOC_RESPONSE), id="double-encoded-body"),
        pytest.param(
            [{"output": json.dumps(json.dumps(DOC_FINDINGS))}], id="double-encoded-output"
        ),
    ],
)
def test_every_response_shape_gives_the_same_report(body):
    (report,) = parse_response(body, n_studies=1)
    assert wire(report.findings) == DOC_FINDINGS
    (again,) = parse_response(body)  # n_studies unknown
    assert wire(again.findings) == DOC_FINDINGS


def test_notebook_decoding_agrees():
    body = json.dumps([{"output": json.dumps(DOC_FINDINGS)}])
    notebook = json.loads(json.loads(body)[0]["output"])  # what the official notebooks do
    (report,) = parse_response(body)
    assert wire(report.findings) == notebook


def test_records_with_several_studies():
    other = [["No acute findings.", None]]
    body = [{"output": json.dumps(DOC_FINDINGS)}, {"output": json.dumps(other)}]
    first, second = parse_response(json.dumps(body), n_studies=2)
    assert wire(first.findings) == DOC_FINDINGS
    assert wire(second.findings) == other


@pytest.mark.parametrize("n_studies", [2, None])
@pytest.mark.parametrize("encode", [False, True], ids=["lists", "json-strings"])
def test_documented_shape_with_several_studies(n_studies, encode):
    other = [["No acute findings.", None]]
    outputs = [DOC_FINDINGS, other, []]
    if encode:
        outputs = [json.dumps(o) for o in outputs]
    reports = parse_response({"output": outputs}, n_studies=None if n_studies is None else 3)
    assert [wire(r.findings) for r in reports] == [DOC_FINDINGS, other, []]


def test_empty_output_is_one_report_without_findings():
    (report,) = parse_response({"output": []}, n_studies=1)
    assert report.findings == ()
    assert parse_response([], n_studies=0) == []


@pytest.mark.parametrize(
    ("body", "n_studies"),
    [
        ([{"output": "[]"}, {"output": "[]"}], 1),
        ([{"output": "[]"}], 2),
        ({"output": DOC_FINDINGS}, 2),
        ([], 1),
    ],
)
def test_wrong_number_of_reports_raises(body, n_studies):
    with pytest.raises(ResponseFormatError, match=f"for {n_studies} stud"):
        parse_response(body, n_studies=n_studies)


def test_format_response_round_trips():
    findings = [
        Finding(text, [Box.from_list(b) for b in boxes or []]) for text, boxes in DOC_FINDINGS
    ]
    records = format_response([findings, []])
    assert isinstance(records, list) and isinstance(records[0]["output"], str)
    first, second = parse_response(json.dumps(records), n_studies=2)
    assert wire(first.findings) == DOC_FINDINGS and second.findings == ()
    documented = format_response([findings], shape="documented")
    assert documented == json.loads(DOC_RESPONSE)
    with pytest.raises(ValueError):
        format_response([findings, findings], shape="documented")


# --- validation of findings -----------------------------------------------------------

BAD_FINDINGS = {
    "nan": ["x", [[math.nan, 0.1, 0.2, 0.3]]],
    "inf": ["x", [[0.1, 0.1, math.inf, 0.3]]],
    "negative inf": ["x", [[-math.inf, 0.1, 0.2, 0.3]]],
    "above one": ["x", [[0.1, 0.1, 1.5, 0.3]]],
    "below zero": ["x", [[-0.1, 0.1, 0.2, 0.3]]],
    "x_min > x_max": ["x", [[0.6, 0.1, 0.2, 0.3]]],
    "y_min > y_max": ["x", [[0.1, 0.6, 0.2, 0.3]]],
    "three numbers": ["x", [[0.1, 0.1, 0.2]]],
    "five numbers": ["x", [[0.1, 0.1, 0.2, 0.3, 0.4]]],
    "strings for numbers": ["x", [["0.1", "0.1", "0.2", "0.3"]]],
    "bool": ["x", [[True, 0.1, 0.2, 0.3]]],
    "null coordinate": ["x", [[None, 0.1, 0.2, 0.3]]],
    "text not a string": [42, None],
    "text null": [None, [[0.1, 0.1, 0.2, 0.3]]],
    "flat box": ["x", [0.1, 0.1, 0.2, 0.3]],
    "boxes a dict": ["x", {"x_min": 0.1}],
    "boxes a string": ["x", "0.1 0.1 0.2 0.3"],
    "box a dict": ["x", [{"x_min": 0.1}]],
    "finding a string": "x",
    "finding of one item": ["x"],
    "finding of three items": ["x", None, None],
}


def body_with(bad: object) -> str:
    """Two studies; study 1's second finding is ``bad``. NaN/inf as Python's json writes them."""
    good = ["Fine.", [[0.1, 0.1, 0.2, 0.2]]]
    return json.dumps([{"output": json.dumps([good])}, {"output": json.dumps([good, bad])}])


@pytest.mark.parametrize("bad", BAD_FINDINGS.values(), ids=BAD_FINDINGS.keys())
def test_strict_mode_names_study_and_finding(bad):
    with pytest.raises(ResponseFormatError) as info:
        parse_response(body_with(bad), n_studies=2)
    message = str(info.value)
    assert message.startswith("study 1, finding 2")


@pytest.mark.parametrize("bad", BAD_FINDINGS.values(), ids=BAD_FINDINGS.keys())
def test_lenient_mode_keeps_the_valid_parts(bad):
    first, second = parse_response(body_with(bad), n_studies=2, strict=False)
    assert first.warnings == ()
    assert wire(first.findings) == [["Fine.", [[0.1, 0.1, 0.2, 0.2]]]]
    assert wire(second.findings)[0] == ["Fine.", [[0.1, 0.1, 0.2, 0.2]]]
    assert len(second.warnings) == 1 and second.warnings[0].startswith("finding 2")
    for finding in second.findings:
        assert all(0 <= v <= 1 for box in finding.boxes for v in box.as_list())
    if isinstance(bad, list) and len(bad) == 2 and isinstance(bad[0], str):
        # a finding with a valid text keeps its text, without the bad boxes
        assert wire(second.findings)[1] == ["x", None]
    else:
        assert len(second.findings) == 1


def test_lenient_mode_keeps_the_valid_boxes_of_a_finding():
    body = {"output": [["x", [[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1], [0, 0, 1, 1]]]]}
    (report,) = parse_response(body, strict=False)
    assert wire(report.findings) == [["x", [[0.1, 0.1, 0.2, 0.2], [0.0, 0.0, 1.0, 1.0]]]]
    assert report.warnings == (
        "finding 1, box 2: box has min > max (expected x_min, y_min, x_max, y_max); box dropped",
    )


def test_integer_coordinates_and_empty_box_lists_are_valid():
    (report,) = parse_response({"output": [["a", [[0, 0, 1, 1]]], ["b", []]]})
    assert report.findings[0].boxes == (Box(0.0, 0.0, 1.0, 1.0),)
    assert report.findings[1].boxes == ()


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        b"\xff\xfe\x00",
        "",
        42,
        None,
        "42",
        {"error": "model failed"},
        {"output": 3},
        {"output": "not json"},
        [1, 2],
        [{"result": "[]"}],
        [{"output": "{"}],
        [{"output": None}],
    ],
)
def test_malformed_bodies_raise_response_format_error(body):
    with pytest.raises(ResponseFormatError):
        parse_response(body)


def test_lenient_mode_turns_a_non_list_output_into_a_warning():
    first, second = parse_response(
        [{"output": json.dumps(DOC_FINDINGS)}, {"output": json.dumps({"x": 1})}],
        n_studies=2,
        strict=False,
    )
    assert wire(first.findings) == DOC_FINDINGS
    assert second.findings == () and "must be a list" in second.warnings[0]


def test_missing_output_names_the_keys():
    with pytest.raises(ResponseFormatError, match='no "output" \\(keys: error\\)'):
        parse_response({"error": "model failed"})


# --- building requests ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (40, 30), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def test_columns_follow_the_documented_order_and_only_used_ones(small_png):
    study = Study(
        prior_report="Prior: clear lungs.",
        comparison="2020-01-01",
        frontal_image=small_png,
        lateral_image=small_png,
        indication="   ",  # blank text is left out
    )
    data = build_request(study)["input_data"]
    assert data["columns"] == ["frontal_image", "lateral_image", "comparison", "prior_report"]
    assert data["columns"] == [c for c in COLUMNS if c in data["columns"]]
    assert data["data"][0][2:] == ["2020-01-01", "Prior: clear lungs."]


def test_every_column(small_png):
    texts = {c: f"{c} text" for c in COLUMNS[3:]}
    study = Study(small_png, small_png, small_png, **texts)
    data = build_request(study)["input_data"]
    assert data["columns"] == list(COLUMNS)
    assert data["data"][0][3:] == list(texts.values())
    (row,) = validate_request(build_request(study))
    assert list(row) == list(COLUMNS)


@pytest.mark.parametrize("count", [1, 2, MAX_STUDIES_PER_REQUEST])
def test_one_to_ten_studies(small_png, count):
    studies = [Study(small_png, indication=f"case {i}") for i in range(count)]
    data = build_request(studies)["input_data"]
    assert data["index"] == list(range(count))
    assert [row[1] for row in data["data"]] == [f"case {i}" for i in range(count)]
    assert len(validate_request({"input_data": data})) == count


def test_eleven_studies_raise(small_png):
    studies = [Study(small_png)] * (MAX_STUDIES_PER_REQUEST + 1)
    with pytest.raises(RequestError, match="at most 10"):
        build_request(studies)


def test_no_study_raises():
    with pytest.raises(RequestError, match="at least one"):
        build_request([])


def test_mixed_column_sets_raise(small_png):
    studies = [Study(small_png), Study(small_png, indication="Cough")]
    with pytest.raises(RequestError, match="same columns"):
        build_request(studies)


@pytest.mark.parametrize("studies", ["frontal.png", b"\x89PNG", 3])
def test_not_studies_raise(studies):
    with pytest.raises(RequestError, match="Study"):
        build_request(studies)


def test_body_is_the_payload_as_json(small_png):
    request = prepare_request(Study(small_png, technique="PA"))
    assert json.loads(request.body) == request.payload
    assert request.columns == ("frontal_image", "technique", "comparison")


def test_empty_comparison_is_sent_as_none_like_the_official_clients(small_png):
    (row,) = build_request(Study(small_png, indication="Cough."))["input_data"]["data"]
    assert row[1:] == ["Cough.", "None"]
    blank = Study(small_png, comparison="   ")
    assert blank.comparison == "None" and blank.columns == ("frontal_image", "comparison")
    kept = Study(small_png, comparison="Prior film.")
    assert kept.comparison == "Prior film."
    opted_out = Study(small_png, empty_comparison="")
    assert opted_out.columns == ("frontal_image",)
    assert build_request(opted_out)["input_data"]["columns"] == ["frontal_image"]


def test_request_size_is_exact_for_non_ascii_and_quoted_text(small_png):
    from cxr_widgets.contract import (
        assemble_request,
        encode_study,
        frame_bytes,
        request_size,
        row_bytes,
    )

    texts = [
        "Plain ASCII.",
        'She said "cough" \\ twice.',
        "Épanchement pleural, fièvre 39 °C — 患者 😷",
        "",
    ]
    encoded = [
        encode_study(Study(small_png, indication=text or "x", technique=text or "y"))
        for text in texts
    ]
    for n in range(1, len(encoded) + 1):
        body = assemble_request(encoded[:n]).body
        assert request_size(encoded[:n]) == len(body)
    one = encoded[2]
    assert one.size == row_bytes(one.row)
    assert frame_bytes(one.columns, 1) + one.size == len(assemble_request([one]).body)
    with pytest.raises(RequestError):
        request_size([])


# --- studies -------------------------------------------------------------------------------


def test_study_without_frontal_names_the_field():
    with pytest.raises(StudyError, match="frontal_image is required") as info:
        Study(None)
    assert info.value.field == "frontal_image"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"frontal_image": 42}, "frontal_image"),
        ({"frontal_image": b""}, "frontal_image"),
        ({"frontal_image": ""}, "frontal_image"),
        ({"frontal_image": b"png", "lateral_image": 3.5}, "lateral_image"),
        ({"frontal_image": b"png", "prior_image": ["a"]}, "prior_image"),
        ({"frontal_image": b"png", "indication": 5}, "indication"),
        ({"frontal_image": b"png", "technique": b"PA"}, "technique"),
        ({"frontal_image": b"png", "comparison": ["x"]}, "comparison"),
        ({"frontal_image": b"png", "prior_report": 1.0}, "prior_report"),
    ],
)
def test_study_type_errors_name_the_field(kwargs, field):
    with pytest.raises(StudyError) as info:
        Study(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)


def test_study_repr_has_no_patient_text():
    study = Study(b"png", indication="Cough and wheezing for 5 months")
    assert "Cough" not in repr(study)
    assert "indication=<31 chars>" in repr(study)


# --- validate_request refuses what the endpoint refuses ------------------------------------


def doc_payload() -> dict:
    return json.loads(DOC_REQUEST_FULL)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("input_data"), "input_data"),
        (lambda p: p["input_data"]["columns"].append("age"), "unknown column"),
        (lambda p: p["input_data"]["columns"].__setitem__(0, "lateral_image"), "twice"),
        (lambda p: p["input_data"].__setitem__("index", [0, 1]), "index"),
        (lambda p: p["input_data"]["data"][0].pop(), "has 3 values"),
        (lambda p: p["input_data"]["data"][0].__setitem__(2, 5), "must be strings"),
        (lambda p: p["input_data"]["data"][0].__setitem__(0, "aGVsbG8="), "not PNG or JPEG"),
        (lambda p: p["input_data"]["data"][0].__setitem__(1, "***"), "not PNG or JPEG"),
        (lambda p: p["input_data"].__setitem__("data", {"0": []}), "list of rows"),
        (
            lambda p: p["input_data"].update(
                index=list(range(11)), data=p["input_data"]["data"] * 11
            ),
            "at most 10",
        ),
    ],
)
def test_validate_request_refuses(change, message):
    payload = doc_payload()
    change(payload)
    with pytest.raises(RequestError, match=message):
        validate_request(payload)


def test_validate_request_needs_a_frontal_image():
    payload = {"input_data": {"columns": ["indication"], "index": [0], "data": [["Cough"]]}}
    with pytest.raises(RequestError, match="frontal_image"):
        validate_request(payload)


def test_validate_request_accepts_params_beside_input_data():
    payload = doc_payload()
    payload["params"] = {}
    assert len(validate_request(payload)) == 1


# --- lossless round trip ---------------------------------------------------------------------


def sent_images(payload: dict) -> list[np.ndarray]:
    (row,) = validate_request(payload)
    return [pixels(row[c]) for c in COLUMNS[:3] if c in row]


def test_rg1_round_trip_is_lossless(rg1_path):
    request = prepare_request(Study(rg1_path))
    prepared = request.studies[0].frontal
    (decoded,) = sent_images(request.payload)
    np.testing.assert_array_equal(decoded, np.asarray(prepared.image))
    assert decoded.dtype == np.uint8 and decoded.ndim == 2
    assert prepared.original_size == (1841, 1955)


def generated_pngs() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    sources = {
        "gray8-noise": Image.fromarray(rng.integers(0, 256, (333, 257), dtype=np.uint8)),
        "gray16": Image.fromarray(rng.integers(0, 4096, (120, 90), dtype=np.uint16)),
        "rgb": Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)),
        "rgba": Image.fromarray(rng.integers(0, 256, (50, 40, 4), dtype=np.uint8)),
        "large-gray": Image.fromarray(
            np.tile(np.arange(1200, dtype=np.uint16) % 256, (900, 1)).astype(np.uint8)
        ),
    }
    out = {}
    for name, image in sources.items():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out[name] = buffer.getvalue()
    return out


@pytest.mark.parametrize(("name", "png"), generated_pngs().items(), ids=generated_pngs().keys())
def test_generated_png_round_trip_is_lossless(name, png):
    study = Study(png, lateral_image=png, prior_image=png)
    request = prepare_request(study)
    expected = prepare_image(png)
    for decoded in sent_images(request.payload):
        np.testing.assert_array_equal(decoded, np.asarray(expected.image))


def test_full_resolution_round_trip_keeps_every_pixel():
    original = next(iter(generated_pngs().values()))  # 8-bit grayscale noise
    payload = build_request(Study(original), full_resolution=True)
    (decoded,) = sent_images(payload)
    np.testing.assert_array_equal(decoded, pixels(original))


def test_plain_text_findings_are_not_mistaken_for_studies():
    body = {"output": ["The heart size is normal.", "No effusion."]}
    with pytest.raises(ResponseFormatError, match="study 0, finding 1: expected \\[text, boxes\\]"):
        parse_response(body)
    (report,) = parse_response(body, strict=False)
    assert report.findings == () and len(report.warnings) == 2


def test_request_bytes_is_the_exact_body_size(rg1_path) -> None:
    from cxr_widgets.contract import request_bytes

    study = Study(rg1_path, prior_image=rg1_path, indication="Cough.", technique="  ")
    request = prepare_request(study)
    (encoded,) = request.studies
    texts = {"indication": "Cough.", "technique": "  ", "comparison": ""}
    assert request_bytes(encoded.images, texts) == len(request.body)
    assert request_bytes({}, {"indication": "x"}) < 100  # no image yet: still a number


@pytest.mark.parametrize("body", ["The heart size is normal.", b"No acute findings.\n"])
def test_lenient_mode_turns_a_plain_text_answer_into_one_ungrounded_finding(body):
    from cxr_widgets.contract import PLAIN_TEXT_WARNING

    (report,) = parse_response(body, strict=False)
    text = body.decode() if isinstance(body, bytes) else body
    assert wire(report.findings) == [[text.strip(), None]]
    assert report.warnings == (PLAIN_TEXT_WARNING,)
    with pytest.raises(ResponseFormatError, match="not valid JSON"):
        parse_response(body)  # strict: refused
    with pytest.raises(ResponseFormatError):
        parse_response(body, n_studies=2, strict=False)  # one text cannot be two reports


def test_repair_boxes_keeps_the_finding_and_says_what_it_did():
    body = {"output": [["x", [[0.5, 0.5, 0.1, 0.1], [0.2, -0.1, 0.4, 0.3], ["a", 0, 1, 1]]]]}
    (report,) = parse_response(body, repair_boxes=True)
    assert wire(report.findings) == [["x", [[0.1, 0.1, 0.5, 0.5], [0.2, 0.0, 0.4, 0.3]]]]
    assert [w.rsplit("; ", 1)[1] for w in report.warnings] == [
        "box repaired",
        "box repaired",
        "box dropped",
    ]
    with pytest.raises(ResponseFormatError):
        parse_response(body)  # strict without repair refuses the answer
