"""``cxr-widgets evaluate GENERATED REFERENCES``: the evaluation from the command line.

Prints the summary (metric, value, 95 % interval, studies) and the counts;
with ``--out FOLDER`` also writes ``summary.json``, ``per_study.csv``,
``per_finding.csv``, ``problems.csv`` and ``evaluation.png``. Exit codes as
the other commands: 0 done, 2 bad input or arguments.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

EPILOG = """\
GENERATED: a results store (.sqlite, from `cxr-widgets run`) or a .jsonl export.
REFERENCES: a reference set (.json, see docs/evaluation.md), a .csv with study_id,
  text and optionally finding, x_min, y_min, x_max, y_max, or a results store
  whose reviews (from the study browser) are the references.

judges: exact (normalised text), review (the reader's verdicts; REFERENCES must be
  reviews), chat (an OpenAI-compatible chat endpoint; --chat-url, key from the
  environment variable named by --chat-key-env, never on the command line).

example:
  cxr-widgets evaluate ./cxr-sample/results.sqlite references.json --out eval/
"""


def add_parser(commands: Any) -> None:
    """Register ``evaluate`` on the main parser's subparsers."""
    parser = commands.add_parser(
        "evaluate",
        help="score generated reports against references (RadFact-style, boxes, ROUGE-L)",
        description="Evaluate a run against references: logical, grounding and spatial "
        "precision/recall (RadFact-style), box IoU and precision/recall at IoU thresholds, "
        "ROUGE-L, with bootstrap 95 % intervals over studies. For research only.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("generated", metavar="GENERATED")
    parser.add_argument("references", metavar="REFERENCES")
    parser.add_argument("--judge", choices=("exact", "review", "chat"), default="exact")
    parser.add_argument("--out", metavar="FOLDER", help="write the tables, JSON and figure here")
    parser.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N", help="resamples (0: no intervals)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reviewer", help="whose reviews are the references (several reviewers)")
    chat = parser.add_argument_group("chat judge")
    chat.add_argument(
        "--chat-url", metavar="URL", help="chat-completions URL (https, or http to 127.0.0.1)"
    )
    chat.add_argument("--chat-model", metavar="NAME", help="model name sent in the request")
    chat.add_argument(
        "--chat-key-env",
        metavar="VAR",
        default="CXR_JUDGE_KEY",
        help="environment variable holding the key",
    )
    chat.add_argument(
        "--chat-cache",
        metavar="FILE",
        help="SQLite cache of the judge's answers (default: judge-cache.sqlite in --out or here)",
    )
    chat.add_argument("--chat-timeout", type=float, default=60.0, metavar="SECONDS")


def _references(args: argparse.Namespace) -> Any:
    path = Path(args.references)
    if path.suffix.lower() in (".sqlite", ".sqlite3", ".db") or args.reviewer:
        from ..errors import EvaluationError
        from ..store import ResultStore
        from .inputs import from_reviews

        if not path.is_file():
            raise EvaluationError(f"no results store at {path}")
        reviews = getattr(ResultStore(path), "reviews", None)
        if reviews is None:
            raise EvaluationError(f"{path.name}: this version of cxr-widgets reads no reviews")
        return from_reviews(reviews, reviewer=args.reviewer)
    return path


def _judge(args: argparse.Namespace) -> Any:
    if args.judge != "chat":
        return args.judge
    from ..errors import EvaluationError
    from .chat import ChatJudge

    if not args.chat_url:
        raise EvaluationError("--judge chat needs --chat-url (the chat-completions URL)")
    cache = args.chat_cache or str(Path(args.out or ".") / "judge-cache.sqlite")
    return ChatJudge(
        args.chat_url,
        model=args.chat_model,
        key_env=args.chat_key_env,
        cache=cache,
        timeout=args.chat_timeout,
    )


def _write_csv(frame: Any, path: Path) -> None:
    from ..report import csv_safe  # one neutraliser of formula cells for every CSV

    frame = frame.map(csv_safe) if hasattr(frame, "map") else frame.applymap(csv_safe)
    frame.to_csv(path, index=False)


def run(args: argparse.Namespace) -> int:
    """Carry out ``cxr-widgets evaluate``; returns the exit code."""
    from ..errors import ConfigError, EvaluationError, StoreError
    from ..folders import make_folder
    from .api import evaluate

    if args.bootstrap < 0:
        print("cxr-widgets evaluate: error: --bootstrap must be >= 0", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    try:
        if out is not None:  # before the (maybe long) evaluation, not after it
            make_folder(out, purpose="--out", fix="choose another --out folder.", error=ConfigError)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            result = evaluate(
                args.generated,
                _references(args),
                judge=_judge(args),
                bootstrap=args.bootstrap,
                seed=args.seed,
            )
    except (EvaluationError, ConfigError, StoreError) as exc:
        print(f"cxr-widgets evaluate: error: {exc}", file=sys.stderr)
        return 2
    table = result.table()
    print(
        f"{result.counts['evaluated']} studies evaluated ({result.provenance['judge']['name']} judge)"
    )
    print(f"{'metric':<22} {'value':>7}  {'95 % CI':<17} {'n':>6}")
    for row in table.itertuples(index=False):
        value = "    n/a" if row.value is None or row.value != row.value else f"{row.value:7.3f}"
        ci = (
            ""
            if row.ci_low is None or row.ci_low != row.ci_low
            else f"[{row.ci_low:.3f}, {row.ci_high:.3f}]"
        )
        print(f"{row.metric:<22} {value}  {ci:<17} {row.n:>6}")
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.counts.items() if v)
    print(f"counts: {counts}")
    if result.problems:
        print(f"{len(result.problems)} problems (see problems.csv with --out):", file=sys.stderr)
        for problem in result.problems[:10]:
            where = f" finding {problem.finding}" if problem.finding else ""
            print(
                f"  {problem.side} {problem.study_id!r}{where}: {problem.reason}", file=sys.stderr
            )
    if out is not None:
        result.to_json(out / "summary.json")
        _write_csv(result.per_study, out / "per_study.csv")
        _write_csv(result.per_finding, out / "per_finding.csv")
        _write_csv(result.problems_frame, out / "problems.csv")
        result.plot().savefig(out / "evaluation.png", dpi=110)
        print(
            f"wrote summary.json, per_study.csv, per_finding.csv, problems.csv, evaluation.png to {out}"
        )
    return 0
