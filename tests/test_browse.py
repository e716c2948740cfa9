"""The study table (browse.StudyTable) and StudyBrowser in the kernel: rows, sort, filters,
search, finding counts, image sources, bad input, live updates and review actions."""

from __future__ import annotations

import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from study_stores import synthetic_report, write_store

from cxr_widgets import Box, ResultStore, StudyBrowser
from cxr_widgets.browse import Filters, StudyTable
from cxr_widgets.errors import StoreError
from cxr_widgets.review import normalise_text


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    return write_store(tmp_path_factory.mktemp("browse") / "run", 200, failed_every=20)


@pytest.fixture
def fresh(tmp_path: Path):
    return write_store(tmp_path / "run", 40, failed_every=10)


def _reports(path: Path) -> dict[str, list[str]]:
    with ResultStore(path) as store:
        return {r.study_id: [f.text for f in r.report.findings] for r in store.results("ok")}


# --- the table model ------------------------------------------------------------------


def test_rows_and_counts_match_the_store(run) -> None:
    table = StudyTable(run.store)
    reports = _reports(run.store)
    # One row per study, in the order written (the helper writes the failures last).
    assert table.study_ids == [s for s in run.study_ids if s not in run.failed] + run.failed
    assert int((~table.ok).sum()) == len(run.failed) == 10
    for sid in ("S00000", "S00007", "S00150"):
        row = table.index_of[sid]
        assert table.n_findings[row] == len(reports[sid])
    summary = table.summary()
    assert summary["studies"] == 200 and summary["failed"] == 10
    assert summary["findings"] == sum(len(v) for v in reports.values())


def test_normalised_finding_counts(run) -> None:
    assert normalise_text("  No  pneumothorax is seen. ") == "no pneumothorax is seen"
    table = StudyTable(run.store)
    reports = _reports(run.store)
    top = dict(table.top_findings(50))
    for text, count in list(top.items())[:5]:
        expected = sum(any(normalise_text(t) == text for t in texts) for texts in reports.values())
        assert count == expected


def test_filters(run) -> None:
    table = StudyTable(run.store)
    reports = _reports(run.store)
    ids = np.array(table.study_ids)
    failed = set(ids[table.mask(Filters(failed=True))])
    assert failed == set(run.failed)
    empty = set(ids[table.mask(Filters(no_findings=True))])
    assert empty == {sid for sid, texts in reports.items() if not texts}
    boxed = set(ids[table.mask(Filters(has_boxes=True))])
    with ResultStore(run.store) as store:
        expected = {r.study_id for r in store.results("ok") if r.report.n_boxes}
    assert boxed == expected
    finding = table.top_findings(1)[0][0]
    with_finding = set(ids[table.mask(Filters(finding=finding))])
    assert with_finding == {
        sid for sid, texts in reports.items() if finding in {normalise_text(t) for t in texts}
    }
    both = set(ids[table.mask(Filters(finding=finding, has_boxes=False))])
    assert both == with_finding - boxed


def test_search_words_and_regex(run) -> None:
    table = StudyTable(run.store)
    reports = _reports(run.store)
    ids = np.array(table.study_ids)
    words = set(ids[table.mask(Filters(search="LEFT effusion"))])
    assert words == {
        sid
        for sid, texts in reports.items()
        if "left" in " ".join(texts).lower() and "effusion" in " ".join(texts).lower()
    }
    pattern = r"small (right|left) pleural"
    regex = set(ids[table.mask(Filters(search=pattern, regex=True))])
    assert regex == {
        sid for sid, texts in reports.items() if any(re.search(pattern, t, re.I) for t in texts)
    }
    assert regex and regex != words
    # Upper case and escapes: the same as re.IGNORECASE on the original text.
    for pattern in (r"SMALL\s+(LEFT|RIGHT)", r"\bNO\b\S*", r"\N{LATIN SMALL LETTER A} nodule"):
        got = set(ids[table.mask(Filters(search=pattern, regex=True))])
        want = {
            sid for sid, texts in reports.items() if any(re.search(pattern, t, re.I) for t in texts)
        }
        assert got == want and got, pattern
    with pytest.raises(ValueError, match="not a valid regular expression"):
        table.mask(Filters(search="(unclosed", regex=True))


def test_sort_by_any_column(run) -> None:
    table = StudyTable(run.store)
    for column, values in (("n_findings", table.n_findings), ("n_boxes", table.n_boxes)):
        order = table.order(Filters(), column, descending=True)
        assert list(values[order]) == sorted(values, reverse=True)
        ascending = table.order(Filters(), column)
        assert list(values[ascending]) == sorted(values)
    by_id = table.order(Filters(), "study_id", descending=True)
    assert [table.study_ids[i] for i in by_id] == sorted(table.study_ids, reverse=True)
    status = table.order(Filters(), "status")
    assert not table.ok[status[0]] and table.ok[status[-1]]
    with pytest.raises(ValueError, match="sort must be one of"):
        table.order(Filters(), "colour")


def test_refresh_reads_a_store_being_written(fresh) -> None:
    """A writer commits while the table reads: every refresh sees a consistent table."""
    table = StudyTable(fresh.store)
    assert len(table) == 40
    import random

    rng = random.Random(5)
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        try:
            with ResultStore(fresh.store) as store:
                for n in range(60):
                    sid = f"LIVE{n:04d}"
                    store.put_many_ok([(f"live-{n}", synthetic_report(rng, sid), sid)])
                    written.append(sid)
        finally:
            stop.set()  # never leave the reader waiting

    thread = threading.Thread(target=writer)
    thread.start()
    seen = 40
    while not stop.is_set():
        table.refresh()
        assert len(table) >= seen  # never goes back
        seen = len(table)
        assert len(table.n_findings) == len(table.study_ids)
        time.sleep(0.005)
    thread.join()
    table.refresh()
    assert len(table) == 100
    assert set(written) <= set(table.study_ids)
    # A failed study answered later turns ok.
    with ResultStore(fresh.store) as store:
        store.put_many_ok(
            [(f"key-{fresh.failed[0]}", synthetic_report(rng, fresh.failed[0]), fresh.failed[0])]
        )
    assert table.refresh()
    assert table.ok[table.index_of[fresh.failed[0]]]


# --- the widget in the kernel -----------------------------------------------------------


def test_browser_api(run) -> None:
    browser = StudyBrowser(run.store, manifest=run.manifest, reviewer="ada")
    assert browser.study_ids == browser.table.study_ids and len(browser.study_ids) == 200
    hits = browser.search("pleural effusion")
    assert hits and all(
        "pleural effusion" in " ".join(_reports(run.store)[s]).lower() for s in hits
    )
    assert browser._table.count == len(hits)
    assert browser.search("(bad", regex=False) == []  # plain words: no regex error
    with pytest.raises(ValueError, match="regular expression"):
        browser.search("(bad", regex=True)
    browser.search("")
    assert browser.filter(failed=True) == run.failed
    browser.filter(failed=None)
    browser.select("S00005")
    assert browser.next() == "S00006" and browser.previous() == "S00005"
    assert browser._panel.study["study_id"] == "S00005"
    # The order travels as little-endian int32 row indices.
    order = np.frombuffer(browser._table.order, dtype="<i4")
    assert [browser.table.study_ids[i] for i in order] == browser.study_ids
    browser.close()


def test_next_study_is_prepared_ahead(run) -> None:
    browser = StudyBrowser(run.store, manifest=run.manifest)
    browser.select("S00010")
    ahead = browser._images.get("S00011")
    assert ahead is not None
    ahead.result(timeout=30)
    started = time.perf_counter()
    browser.next()
    assert browser.selected == "S00011"
    assert browser.viewer.widget.frontal_pixels  # its overview, read ahead
    assert time.perf_counter() - started < 5  # sanity only; the bench measures speed
    browser.close()


def test_failed_study_shows_its_error_and_can_be_resent(fresh) -> None:
    browser = StudyBrowser(fresh.store, manifest=fresh.manifest)
    sid = fresh.failed[0]
    browser.select(sid)
    assert browser.report is None
    assert browser._panel.study["ok"] is False
    assert "424: the model failed" in browser._panel.study["error"]
    result = browser.resend().result(timeout=60)
    assert result.ok == 1
    browser.refresh()
    assert browser.report is not None and browser.report.study_id == sid
    browser.close()


def act(browser: StudyBrowser, **content) -> None:
    """What the review controls in the page send."""
    browser.review._on_action(None, content, None)


def test_review_actions_from_the_page_are_saved_at_once(fresh) -> None:
    browser = StudyBrowser(fresh.store, manifest=fresh.manifest, reviewer="ada")
    sid = next(s for s in browser.study_ids if browser.table.n_findings[browser.table.index_of[s]])
    browser.select(sid)
    browser.review_mode = True
    panel = browser.review.panel
    act(browser, action="verdict", index=0, verdict="disagree")
    assert panel.error == "" and panel.saved.startswith("saved #1")
    with ResultStore(fresh.store) as store:  # another connection sees it: committed
        assert store.reviews.findings(sid, reviewer="ada")[0].verdict == "disagree"
    assert panel.findings[0]["verdict"] == "disagree"
    assert browser.table.review[browser.table.index_of[sid]] == 1  # started
    act(browser, action="text", index=0, text="Edited finding.")
    assert browser.viewer.widget.report.findings[0].text == "Edited finding."
    act(browser, action="add", text="Missed rib fracture.")
    added = panel.findings[-1]
    assert added["source"] == "added" and added["text"] == "Missed rib fracture."
    assert panel.active == added["position"]  # selected: its boxes are drawn next
    act(browser, action="note", note="check the apex")
    act(browser, action="done", done=True)
    assert panel.reviewed and panel.note == "check the apex"
    assert browser.table.review[browser.table.index_of[sid]] == 2
    assert np.frombuffer(browser._table.review, dtype=np.uint8)[browser.table.index_of[sid]] == 2
    act(browser, action="undo")
    assert not panel.reviewed and not panel.done
    assert browser.table.review[browser.table.index_of[sid]] == 1
    act(browser, action="verdict", index=0, verdict="sure")
    assert "verdict must be one of" in panel.error
    browser.close()


def test_a_box_dragged_in_the_viewer_is_stored_where_it_was_dropped(fresh) -> None:
    browser = StudyBrowser(fresh.store, manifest=fresh.manifest, reviewer="ada")
    sid = next(s for s in browser.study_ids if browser.table.n_boxes[browser.table.index_of[s]])
    browser.select(sid)
    viewer = browser.viewer.widget
    assert not viewer.editable  # only in review mode
    browser.review_mode = True
    assert viewer.editable
    shape = viewer.boxes[0]
    moved = [shape["x0"] + 12, shape["y0"] + 7, shape["x1"] + 12, shape["y1"] + 7]
    content = {"kind": "box_edit", "finding": shape["finding"], "box": shape["box"]}
    viewer._on_custom_msg(viewer, {**content, "rect": moved}, [])
    panel = browser.review.panel
    assert panel.error == "" and panel.saved.startswith("saved")
    with ResultStore(fresh.store) as store:  # another connection sees it: committed
        stored = store.reviews.findings(sid, reviewer="ada")[shape["finding"]].boxes[shape["box"]]
    assert stored == Box.from_pixels(*moved, viewer.width, viewer.height, viewer.frame)
    assert [viewer.boxes[0][k] for k in ("x0", "y0", "x1", "y1")] == pytest.approx(moved, abs=0.05)
    assert browser.table.review[browser.table.index_of[sid]] == 1
    browser.close()


def test_review_needs_review_mode_and_a_reviewer_name(fresh) -> None:
    browser = StudyBrowser(fresh.store, manifest=fresh.manifest)
    browser.select(
        next(s for s in browser.study_ids if browser.table.n_findings[browser.table.index_of[s]])
    )
    act(browser, action="verdict", index=0, verdict="agree")
    assert "enter your name as reviewer" in browser.review.panel.error
    browser.reviewer = "bea"
    act(browser, action="verdict", index=0, verdict="agree")
    assert "switch on Review mode" in browser.review.panel.error
    browser.review_mode = True
    act(browser, action="verdict", index=0, verdict="agree")
    assert browser.review.panel.error == ""
    assert browser.reviews.reviewers() == ["bea"]
    assert browser._table.reviewers == ["bea"]
    browser.close()


# --- bad input ----------------------------------------------------------------------------


def test_store_of_another_program_or_version(tmp_path: Path, fresh) -> None:
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE measurements (x REAL)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match="not a cxr-widgets result store"):
        StudyBrowser(other)
    assert other.read_bytes() == before
    conn = sqlite3.connect(fresh.store)
    conn.execute("UPDATE meta SET value='99' WHERE name='schema'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema 99"):
        StudyBrowser(fresh.store)
    with pytest.raises(StoreError, match="does not exist"):
        StudyBrowser(tmp_path / "nothing.sqlite")


def test_moved_images_are_named_and_can_be_found_again(fresh, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "images"
    shutil.move(str(fresh.images[0].parent), moved)
    browser = StudyBrowser(fresh.store, manifest=fresh.manifest)
    missing = browser.missing_images()
    assert set(missing) == set(fresh.study_ids)  # every study used these images
    assert any(
        "images of 40 studies are not where they were recorded" in w for w in browser.warnings
    )
    assert "browser.relocate(" in browser._table.message
    browser.select("S00000")
    assert "is missing (moved?)" in browser._panel.study["problems"]["frontal"]
    assert browser.relocate(tmp_path / "elsewhere") > 0
    assert browser.missing_images() == {}
    browser.select("S00001")
    assert browser.viewer.widget.frontal_pixels
    assert browser.viewer.widget.frontal_source.values.shape == (512, 600)  # read ahead
    browser.close()


def test_manifest_that_does_not_match_the_store(fresh, tmp_path: Path) -> None:
    other = write_store(tmp_path / "other", 30, failed_every=0)
    rows = fresh.manifest.read_text().splitlines()
    partial = tmp_path / "partial.csv"
    # Keep the header and 10 of the 40 studies, and rename 5 of those.
    kept = [rows[0], *rows[1:6], *(r.replace("S000", "X000", 1) for r in rows[6:11])]
    partial.write_text("\n".join(kept) + "\n")
    browser = StudyBrowser(fresh.store, manifest=partial)
    assert any("lists 10 studies and the store 40; 5 match" in w for w in browser.warnings)
    browser.close()
    browser = StudyBrowser(fresh.store, manifest=other.manifest)
    assert any("lists 30 studies and the store 40; 30 match" in w for w in browser.warnings)
    browser.close()


def test_an_image_that_no_longer_decodes(fresh) -> None:
    fresh.images[1].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    browser = StudyBrowser(fresh.store, manifest=fresh.manifest, reviewer="ada")
    browser.select("S00001")  # uses image 1
    problem = browser._panel.study["problems"]["frontal"]
    assert "could not be read" in problem
    assert browser.viewer.widget.message.startswith("the frontal image could not be read")
    # The study can still be reviewed.
    browser.review_mode = True
    if browser.report and browser.report.findings:
        act(browser, action="verdict", index=0, verdict="unsure")
        assert browser.review.panel.error == ""
    browser.close()


def test_two_browsers_on_one_file(fresh) -> None:
    one = StudyBrowser(fresh.store, manifest=fresh.manifest, reviewer="ada")
    two = StudyBrowser(fresh.store, manifest=fresh.manifest, reviewer="bob")
    sid = next(s for s in one.study_ids if one.table.n_findings[one.table.index_of[s]])
    for browser in (one, two):
        browser.select(sid)
        browser.review_mode = True
    act(one, action="verdict", index=0, verdict="agree")
    act(two, action="verdict", index=0, verdict="disagree")
    two.refresh()
    assert set(two._table.reviewers) == {"ada", "bob"}
    assert two.filter(reviewer="ada") == [sid]
    frame = one.reviews.to_dataframe()
    frame = frame[frame.finding_index == 0]
    verdicts = dict(zip(frame.reviewer, frame.verdict, strict=True))
    assert verdicts == {"ada": "agree", "bob": "disagree"}
    one.close()
    two.close()


def test_browser_from_a_batch_result_or_folder(tmp_path: Path, rg1_path: Path) -> None:
    from cxr_widgets import DemoBackend, Study, run_batch

    studies = [Study(rg1_path, indication=f"case {n}", study_id=f"D{n}") for n in range(3)]
    result = run_batch(
        studies, DemoBackend(), store=tmp_path / "out" / "results.sqlite", progress=False
    )
    browser = StudyBrowser(result)
    assert sorted(browser.study_ids) == ["D0", "D1", "D2"]
    # The viewer gets the DICOM's own values (read ahead), so window/level is the file's.
    browser.select("D1")
    pixels = browser.viewer.widget.pixels["frontal"]
    assert pixels.values.max() > 255 and pixels.window == (15000.0, 30000.0)
    assert list(browser.viewer.widget.window) == [15000.0, 30000.0]
    browser.close()
    browser = StudyBrowser(tmp_path / "out")
    assert len(browser.study_ids) == 3
    browser.close()
    no_store = run_batch(studies[:1], DemoBackend(), progress=False)
    with pytest.raises(StoreError, match="kept no store"):
        StudyBrowser(no_store)
