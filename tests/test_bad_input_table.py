"""docs/bad-inputs.md is what scripts/make_bad_input_table.py produces, and every case fails well.

The script runs every bad input for real (files, studies, requests, manifests,
responses, HTTP failures against the local endpoint and a loopback test peer);
this test runs it again, compares the page byte for byte, and checks each
outcome: a cxr_widgets error with a non-empty message and no traceback.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from cxr_widgets.errors import CxrWidgetsError

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "make_bad_input_table.py"
PAGE = ROOT / "docs" / "bad-inputs.md"

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_bad_input_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script()


@pytest.fixture(scope="module")
def generated(script: ModuleType) -> tuple[str, list]:
    return script.generate()


def test_page_matches_the_script(generated: tuple[str, list]) -> None:
    page, _ = generated
    committed = PAGE.read_text(encoding="utf-8")
    if page != committed:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                page.splitlines(keepends=True),
                "docs/bad-inputs.md",
                "generated",
            )
        )
        pytest.fail(
            "docs/bad-inputs.md is out of date: run "
            f".venv/bin/python scripts/make_bad_input_table.py\n{diff}"
        )


def test_every_case_raises_a_package_error_with_a_clean_message(
    generated: tuple[str, list],
) -> None:
    _, cases = generated
    assert len(cases) >= 50
    for case in cases:
        error = case.error
        if case.category == "Image viewer":  # shown, not refused: a note says what was done
            assert error is None and case.note.strip(), case.input
            continue
        assert error is not None, f"{case.input}: nothing was raised"
        assert isinstance(error, CxrWidgetsError), f"{case.input}: {type(error).__name__}"
        message = str(error)
        assert message.strip(), case.input
        assert "Traceback" not in message and not re.search(r'File ".*", line \d+', message)
        assert "\n" not in message, f"{case.input}: a one-line message expected"
        # Raised `from None` (or fresh): no library traceback is chained under it.
        assert error.__cause__ is None, case.input
        assert error.__context__ is None or error.__suppress_context__, case.input


def test_the_catalogue_covers_every_kind_of_bad_input(
    script: ModuleType, generated: tuple[str, list]
) -> None:
    _, cases = generated
    by_category = {
        c: [case.input for case in cases if case.category == c] for c in script.CATEGORIES
    }
    assert all(by_category.values()), by_category
    assert {case.category for case in cases} == set(script.CATEGORIES)
    http = " ".join(by_category["HTTP failures"])
    for status in ("400", "401", "403", "404", "408", "413", "424", "429", "503"):
        assert status in http, f"no HTTP {status} case"
    for words in ("refused", "dropped", "deadline", "read timeout"):
        assert words in http, f"no {words!r} case"
    expected_classes = {
        "ImageError",
        "StudyError",
        "RequestError",
        "RequestTooLargeError",
        "ManifestError",
        "ResponseFormatError",
        "BadRequestError",
        "EndpointAuthError",
        "EndpointNotFoundError",
        "EndpointTimeoutError",
        "ModelError",
        "EndpointBusyError",
        "EndpointServerError",
        "EndpointConnectionError",
        "DeadlineExceededError",
    }
    assert expected_classes <= {case.error_class for case in cases}


def test_page_has_no_volatile_or_secret_text(
    script: ModuleType, generated: tuple[str, list]
) -> None:
    page, cases = generated
    assert "/tmp/" not in page and "cxr-bad-inputs-" not in page
    assert not re.search(r"127\.0\.0\.1:\d", page)
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", page)
    for secret in (script.ENDPOINT_KEY, "not-the-endpoint-key", "a-key"):
        assert all(secret not in str(case.error) for case in cases), secret
        assert secret not in page
    # One table row per case, in the page's six sections.
    assert page.count("\n| ") - len(script.CATEGORIES) == len(cases)  # minus header rows


def test_normalise_replaces_folders_ports_and_ids(script: ModuleType, tmp_path: Path) -> None:
    text = (
        f"{tmp_path}/a.png at http://127.0.0.1:54321/score "
        "(x-request-id: 0b5e3f0e-2f4c-4a53-9d58-3b0d2c1f9a77) <_io.BytesIO object at 0x7f3a2b1c>"
    )
    assert script.normalise(text, tmp_path) == (
        "<dir>/a.png at http://127.0.0.1:<port>/score (x-request-id: <id>) "
        "<_io.BytesIO object at <address>>"
    )
