"""ReviewStore: verdicts, edits, added findings, undo, reviewers apart, crash safety, exports."""

from __future__ import annotations

import csv
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
from study_stores import write_store

from cxr_widgets import Box, ResultStore
from cxr_widgets.errors import ReviewError, StoreError
from cxr_widgets.review import ReviewStore

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "docs/reference-set.schema.json").read_text())


@pytest.fixture
def synthetic(tmp_path: Path):
    return write_store(tmp_path / "run", 60, failed_every=20)


@pytest.fixture
def reviews(synthetic) -> ReviewStore:
    store = ReviewStore(synthetic.store, reviewer="ada")
    yield store
    store.close()


def _with_findings(reviews: ReviewStore, ids: list[str], minimum: int = 2) -> list[str]:
    out = []
    for sid in ids:
        try:
            if len(reviews.model_findings(sid)) >= minimum:
                out.append(sid)
        except ReviewError:
            pass
    return out


def _results_digest(path: Path) -> str:
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT * FROM results ORDER BY key").fetchall()
    conn.close()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def test_result_store_gives_the_same_reviews(synthetic) -> None:
    with ResultStore(synthetic.store) as store:
        assert store.reviews is store.reviews
        sid = _with_findings(store.reviews, synthetic.study_ids)[0]
        store.reviews.set_verdict(sid, 0, "agree", reviewer="ada")
    with ReviewStore(synthetic.store) as again:
        assert again.findings(sid, reviewer="ada")[0].verdict == "agree"


def test_verdicts_edits_and_added_findings(reviews, synthetic) -> None:
    sid = _with_findings(reviews, synthetic.study_ids, 3)[0]
    model = reviews.model_findings(sid)
    before = _results_digest(synthetic.store)
    reviews.set_verdict(sid, 0, "agree")
    reviews.set_verdict(sid, 1, "disagree")
    reviews.set_text(sid, 0, "Heart size at the upper limit of normal.")
    reviews.set_boxes(sid, 0, [Box(0.1, 0.2, 0.3, 0.4), [0.5, 0.5, 0.6, 0.7]])
    added = reviews.add_finding(sid, "Small left apical pneumothorax.", [[0.6, 0.05, 0.8, 0.2]])
    assert added == len(model)
    found = reviews.findings(sid)
    assert [f.source for f in found] == ["model"] * len(model) + ["added"]
    assert found[0].text == "Heart size at the upper limit of normal." and found[0].edited
    assert found[0].model_text == model[0].text
    assert [b.as_list() for b in found[0].boxes] == [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.7]]
    assert found[1].verdict == "disagree" and not found[1].edited
    # The model's answer is never overwritten.
    assert _results_digest(synthetic.store) == before
    assert reviews.model_findings(sid)[0].text == model[0].text
    state = reviews.study(sid)
    assert not state["reviewed"]  # finding 2 has no verdict yet
    for i in range(2, len(model)):
        reviews.set_verdict(sid, i, "unsure")
    assert reviews.study(sid)["reviewed"]
    (entry,) = reviews.reference_set()
    assert entry == {
        "study_id": sid,
        "findings": [
            {
                "text": "Heart size at the upper limit of normal.",
                "boxes": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.7]],
            },
            {"text": "Small left apical pneumothorax.", "boxes": [[0.6, 0.05, 0.8, 0.2]]},
        ],
    }


def test_done_without_verdicts_and_note(reviews, synthetic) -> None:
    sid = _with_findings(reviews, synthetic.study_ids)[1]
    reviews.set_note(sid, "Poor inspiration.")
    assert reviews.reference_set() == []
    reviews.mark_done(sid)
    assert reviews.reference_set() == [{"study_id": sid, "findings": []}]
    assert reviews.study(sid)["note"] == "Poor inspiration."
    assert reviews.status()[sid] == "reviewed"


def test_undo_restores_the_last_change_step_by_step(reviews, synthetic) -> None:
    sid = _with_findings(reviews, synthetic.study_ids)[0]
    reviews.set_verdict(sid, 0, "agree")
    reviews.set_verdict(sid, 0, "disagree")
    added = reviews.add_finding(sid, "Missed nodule.", [])
    reviews.delete_finding(sid, added)
    assert all(f.source == "model" for f in reviews.findings(sid))
    assert reviews.undo()["action"] == "delete"
    assert reviews.findings(sid)[-1].text == "Missed nodule."
    assert reviews.undo()["action"] == "add"
    assert all(f.source == "model" for f in reviews.findings(sid))
    assert reviews.undo()["action"] == "verdict"
    assert reviews.findings(sid)[0].verdict == "agree"
    reviews.undo()
    assert reviews.findings(sid)[0].verdict is None
    assert reviews.undo() is None  # nothing left


def test_reviewers_are_kept_apart(reviews, synthetic) -> None:
    sid = _with_findings(reviews, synthetic.study_ids)[0]
    reviews.set_verdict(sid, 0, "agree")
    reviews.set_verdict(sid, 0, "disagree", reviewer="bob")
    reviews.undo(reviewer="bob")  # undoes bob's change only
    assert reviews.findings(sid)[0].verdict == "agree"
    assert reviews.findings(sid, reviewer="bob")[0].verdict is None
    reviews.set_verdict(sid, 1, "unsure", reviewer="bob")
    assert reviews.reviewers() == ["ada", "bob"]
    frame = reviews.to_dataframe()
    assert list(frame.columns)[:7] == [
        "study_id",
        "reviewer",
        "finding_index",
        "source",
        "verdict",
        "text",
        "boxes",
    ]
    assert set(frame["reviewer"]) == {"ada", "bob"}
    assert (
        frame[(frame.reviewer == "ada") & (frame.finding_index == 0)]["verdict"].item() == "agree"
    )
    anonymous = ReviewStore(synthetic.store)
    with pytest.raises(ReviewError, match=r"2 readers reviewed this store \(ada, bob\)"):
        anonymous.reference_set()
    anonymous.close()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda r, s: r.set_verdict(s, 0, "maybe"),
            "verdict must be one of agree, disagree, unsure",
        ),
        (lambda r, s: r.set_verdict(s, 99, "agree"), "has no finding 99"),
        (lambda r, s: r.set_verdict("nope", 0, "agree"), "no stored report for study 'nope'"),
        (lambda r, s: r.set_boxes(s, 0, [[0.5, 0.5, 0.2, 0.9]]), "box 1: box has min > max"),
        (lambda r, s: r.set_boxes(s, 0, [[0, 0, 1.5, 1]]), "outside 0..1"),
        (lambda r, s: r.add_finding(s, "  "), "needs its text"),
        (lambda r, s: r.delete_finding(s, 0), "is the model's"),
        (lambda r, s: r.set_verdict(s, 0, "agree", reviewer=" "), "name the reviewer"),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(reviews, synthetic, call, message) -> None:
    sid = _with_findings(reviews, synthetic.study_ids)[0]
    with pytest.raises(ReviewError, match=message):
        call(reviews, sid)
    assert reviews.reviewers() == []


def test_a_failed_study_has_nothing_to_review(reviews, synthetic) -> None:
    with pytest.raises(ReviewError, match="failed studies have no findings"):
        reviews.set_verdict(synthetic.failed[0], 0, "agree")


def test_another_programs_database_is_refused_untouched(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE patients (id INTEGER)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match=r"no 'results' table \(its tables: patients\)"):
        ReviewStore(other)
    assert other.read_bytes() == before
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database at all " * 100)
    with pytest.raises(StoreError, match="not a cxr-widgets result store"):
        ReviewStore(text)
    with pytest.raises(StoreError, match="does not exist"):
        ReviewStore(tmp_path / "missing.sqlite")


def test_reviews_of_another_version_are_refused(synthetic) -> None:
    with ReviewStore(synthetic.store, reviewer="ada") as reviews:
        sid = _with_findings(reviews, synthetic.study_ids)[0]
        reviews.set_verdict(sid, 0, "agree")
    conn = sqlite3.connect(synthetic.store)
    conn.execute("UPDATE review_meta SET value='7' WHERE name='schema'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"reviews in .* have layout 7; .* reads layout 1"):
        ReviewStore(synthetic.store)
    conn = sqlite3.connect(synthetic.store)
    assert conn.execute("SELECT verdict FROM review_findings").fetchall() == [("agree",)]
    conn.close()


def test_two_stores_on_one_file_write_in_turn(synthetic) -> None:
    one = ReviewStore(synthetic.store, reviewer="ada")
    two = ReviewStore(synthetic.store, reviewer="bob")
    ids = _with_findings(one, synthetic.study_ids)
    version = one.data_version()
    for n, sid in enumerate(ids[:10]):
        (one if n % 2 else two).set_verdict(sid, 0, "agree")
    assert one.data_version() != version  # the other connection's commits are visible
    assert len(one.to_dataframe().query("verdict == 'agree'")) == 10
    assert set(two.status(None)) == set(ids[:10])
    one.close()
    two.close()


WRITER = textwrap.dedent(
    """
    import sys
    from cxr_widgets.review import ReviewStore

    reviews = ReviewStore(sys.argv[1], reviewer="crash")
    ids = sys.argv[2].split(",")
    n = 0
    while True:
        sid = ids[n % len(ids)]
        verdict = ("agree", "disagree", "unsure")[n % 3]
        if n % 4 == 3:
            reviews.add_finding(sid, f"added {n}", [[0.1, 0.1, 0.2, 0.2]])
        else:
            reviews.set_verdict(sid, 0, verdict)
        print(f"ack {n} {sid} {verdict}", flush=True)
        n += 1
    """
)


def test_sigkill_mid_session_keeps_every_acknowledged_edit(synthetic, tmp_path: Path) -> None:
    with ReviewStore(synthetic.store) as probe:
        ids = _with_findings(probe, synthetic.study_ids)[:5]
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(synthetic.store), ",".join(ids)],
        stdout=subprocess.PIPE,
        text=True,
    )
    acks = []
    assert proc.stdout is not None
    while len(acks) < 60:
        line = proc.stdout.readline()
        assert line, "the writer stopped before the kill"
        acks.append(line.split())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    with ReviewStore(synthetic.store, reviewer="crash") as reviews:
        last_verdict: dict[str, str] = {}
        added: set[str] = set()
        for _, n, sid, verdict in acks:
            if int(n) % 4 == 3:
                added.add(f"added {n}")
            else:
                last_verdict[sid] = verdict
        stored_added = set()
        for sid in ids:
            found = reviews.findings(sid)
            stored_added |= {f.text for f in found if f.source == "added"}
            if sid in last_verdict:
                # An edit after the last ack may have committed too; never fewer.
                assert found[0].verdict is not None
        assert added <= stored_added
        # Every acknowledged change is in the log, in order.
        (count,) = reviews._read("SELECT COUNT(*) FROM review_log WHERE reviewer='crash'")[0]
        assert count >= len(acks)
        conn = sqlite3.connect(synthetic.store)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()


# --- exports ---------------------------------------------------------------------------


@pytest.fixture
def reviewed(reviews, synthetic) -> tuple[ReviewStore, list[str]]:
    ids = _with_findings(reviews, synthetic.study_ids, 2)[:4]
    a, b, c, d = ids
    for i, _ in enumerate(reviews.model_findings(a)):
        reviews.set_verdict(a, i, "agree")
    reviews.set_boxes(a, 0, [[0.2, 0.2, 0.4, 0.5]])
    reviews.set_verdict(b, 0, "disagree")
    reviews.set_text(b, 1, '=HYPERLINK("http://x")')  # a formula-looking edit
    reviews.mark_done(b)
    reviews.add_finding(c, "Right apical pneumothorax.", [[0.1, 0.05, 0.3, 0.25]])
    reviews.mark_done(c)
    reviews.set_verdict(d, 0, "agree")  # started, not reviewed: not exported
    return reviews, ids


def test_json_export_validates_against_the_documented_schema(reviewed, tmp_path) -> None:
    reviews, (a, b, c, _) = reviewed
    path = tmp_path / "reference.json"
    assert reviews.export(path, format="json") == 3
    data = json.loads(path.read_text())
    jsonschema.validate(data, SCHEMA)
    by_id = {entry["study_id"]: entry for entry in data}
    assert set(by_id) == {a, b, c}
    assert by_id[b]["excluded"][0]["verdict"] == "disagree"
    assert by_id[c]["findings"][-1]["source"] == "added"
    # The export's findings are exactly the reference set.
    assert [
        {
            "study_id": e["study_id"],
            "findings": [{"text": f["text"], "boxes": f["boxes"]} for f in e["findings"]],
        }
        for e in data
    ] == reviews.reference_set()
    broken = json.loads(path.read_text())
    broken[0]["findings"][0]["boxes"] = [[0.1, 0.2, 0.3]]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_radfact_export_round_trips(reviewed, tmp_path) -> None:
    reviews, (a, *_) = reviewed
    path = tmp_path / "radfact.json"
    reviews.export(path, format="radfact")
    data = json.loads(path.read_text())
    for example in data:
        for phrase in example["prediction"] + example["target"]:
            assert set(phrase) == {"text", "boxes"}
            assert phrase["boxes"] is None or (
                phrase["boxes"]
                and all(set(b) == {"x_min", "y_min", "x_max", "y_max"} for b in phrase["boxes"])
            )
    back = [
        {
            "study_id": example["example_id"],
            "findings": [
                {
                    "text": p["text"],
                    "boxes": [
                        [b["x_min"], b["y_min"], b["x_max"], b["y_max"]] for b in p["boxes"] or []
                    ],
                }
                for p in example["target"]
            ],
        }
        for example in data
    ]
    assert back == reviews.reference_set()
    predictions = {e["example_id"]: [p["text"] for p in e["prediction"]] for e in data}
    assert predictions[a] == [f.text for f in reviews.model_findings(a)]


def test_csv_export_lists_every_verdict_and_neutralises_formulas(reviewed, tmp_path) -> None:
    reviews, (a, b, c, _) = reviewed
    path = tmp_path / "reference.csv"
    reviews.export(path, format="csv")
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["study_id"] for r in rows} == {a, b, c}
    assert any(r["verdict"] == "disagree" and r["in_reference"] == "False" for r in rows)
    edited = [r for r in rows if r["study_id"] == b and r["finding_index"] == "1"]
    assert edited and not edited[0]["text"].startswith("=")
    boxed = [r for r in rows if r["study_id"] == a and r["finding_index"] == "0"]
    assert [boxed[0][k] for k in ("x_min", "y_min", "x_max", "y_max")] == [
        "0.2",
        "0.2",
        "0.4",
        "0.5",
    ]


def test_unknown_export_format(reviews, tmp_path) -> None:
    with pytest.raises(ReviewError, match="format must be one of json, csv, radfact"):
        reviews.export(tmp_path / "x.xml", format="xml")
