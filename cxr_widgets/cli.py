"""The ``cxr-widgets`` command: ``serve`` a local endpoint, ``run`` a batch manifest,
write a ``sample`` manifest, drive an Azure ML ``batch-endpoint``, ``evaluate`` a run.

Exit codes: 0 everything answered; 1 some studies failed (or the endpoint
refused the run); 2 a usage, manifest or configuration error, reported before
any request; 130 interrupted (Ctrl-C; the store keeps what was answered).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .batch import DEFAULT_MAX_IN_FLIGHT
from .config import DEFAULT_KEY_ENV
from .contract import DEFAULT_REQUEST_BUDGET, MAX_STUDIES_PER_REQUEST
from .errors import (
    ConfigError,
    CxrWidgetsError,
    ImageError,
    ManifestError,
    RequestError,
    StoreError,
)
from .folders import make_folder, writable_file
from .images import DEFAULT_SHORTEST_SIDE
from .signals import stop_signals_as_interrupt

__all__ = ["check_outputs", "main", "write_sample"]

#: Errors that mean "fix the command or its inputs" (exit 2), not "the endpoint failed".
USAGE_ERRORS = (ManifestError, ConfigError, StoreError, RequestError, ImageError)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

RUN_EPILOG = f"""\
manifest columns (CSV, header row first): frontal (required), lateral, prior
  (image paths: DICOM, PNG or JPEG, relative to the manifest's folder),
  indication, technique, comparison, prior_report, study_id (optional).

endpoint: --demo (the default when no endpoint is given) answers offline with
  canned example findings; --scoring-uri for an Azure ML endpoint or
  `cxr-widgets serve`; --endpoint-name to look the endpoint up in an Azure ML
  workspace (config.json). Keys are read from an environment variable
  (--key-env, default {DEFAULT_KEY_ENV}), never from the command line.

resuming: results are committed to --store as each request completes; run the
  same command again after an interruption (Ctrl-C, kill, a full disk) to send
  only what is missing. Run it with --out to export what is stored.

outputs: --out never overwrites the manifest, an image or a file cxr-widgets did
  not write (unless --force); every output path is checked before anything is sent.

example:
  cxr-widgets sample ./cxr-sample
  cxr-widgets run ./cxr-sample/manifest.csv --out ./cxr-sample/reports.csv
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr-widgets",
        description="Grounded chest X-ray report generation (CXRReportGen): a local "
        "endpoint and resumable batch runs. For research only, not for clinical use.",
    )
    parser.add_argument("--version", action="version", version=f"cxr-widgets {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser(
        "serve",
        help="start a local CXRReportGen-compatible endpoint (demo findings)",
        description="Start a local CXRReportGen-compatible endpoint inside "
        "azureml-inference-server-http, on 127.0.0.1 unless --host says otherwise. It "
        "checks requests as the real service does and answers with canned demo findings. "
        "Fault options add latency, a bandwidth cap, a pending-request cap and random "
        "failures, for testing clients.",
    )
    serve.add_argument("--port", type=int, default=5001, help="TCP port (default: 5001)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1); 0.0.0.0 exposes the endpoint "
        "to your network",
    )
    serve.add_argument(
        "--key-env",
        metavar="VAR",
        default=None,
        help="require a key: the name of an environment variable holding it "
        "(callers then send 'Authorization: Bearer <key>'; default: no key)",
    )
    serve.add_argument(
        "--max-request-bytes",
        type=_positive_int,
        default=DEFAULT_REQUEST_BUDGET,
        metavar="N",
        help=f"answer 413 above this body size (default: {DEFAULT_REQUEST_BUDGET:,}, "
        "the older Azure ML limit)",
    )
    serve.add_argument(
        "--response-shape",
        choices=("records", "documented"),
        default="records",
        help="records: what the deployed service sends (default); documented: the "
        "model documentation's shape",
    )
    serve.add_argument(
        "--verbose",
        action="store_true",
        help="also show the server's own logs (gunicorn, azureml-inference-server-http)",
    )
    _add_fault_arguments(serve)

    run = commands.add_parser(
        "run",
        help="send the studies in a CSV manifest; resumable",
        description="Send every study in a CSV manifest to an endpoint, up to "
        f"{MAX_STUDIES_PER_REQUEST} per request with several requests in flight, storing "
        "each answer as it arrives.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("manifest", metavar="MANIFEST.csv", help="the manifest (CSV)")
    where = run.add_argument_group("endpoint (default: --demo)")
    where.add_argument(
        "--demo", action="store_true", help="offline demo backend: canned example findings"
    )
    where.add_argument(
        "--scoring-uri",
        metavar="URI",
        help="e.g. https://EP.REGION.inference.ml.azure.com/score or http://127.0.0.1:5001/score",
    )
    where.add_argument(
        "--deployment", metavar="NAME", help="pin a deployment (azureml-model-deployment)"
    )
    where.add_argument(
        "--key-env",
        metavar="VAR",
        default=DEFAULT_KEY_ENV,
        help=f"environment variable holding the endpoint key (default: {DEFAULT_KEY_ENV})",
    )
    where.add_argument("--key", help=argparse.SUPPRESS)  # refused with advice, see _run
    where.add_argument(
        "--endpoint-name",
        metavar="NAME",
        help="look the endpoint up in the Azure ML workspace (scoring URI, auth, key)",
    )
    where.add_argument(
        "--workspace-config",
        metavar="PATH",
        help="the workspace's config.json for --endpoint-name (default: searched from here)",
    )
    out = run.add_argument_group("results")
    out.add_argument(
        "--store",
        metavar="PATH",
        help="SQLite result store (default: MANIFEST.results.sqlite next to the manifest)",
    )
    out.add_argument("--no-store", action="store_true", help="keep nothing (not resumable)")
    out.add_argument(
        "--force",
        action="store_true",
        help="overwrite an --out file that cxr-widgets did not write (never an input)",
    )
    out.add_argument(
        "--out",
        metavar="PATH",
        action="append",
        default=[],
        help="write the reports to a .jsonl or .csv file (may be repeated)",
    )
    tuning = run.add_argument_group("tuning")
    tuning.add_argument(
        "--max-in-flight",
        type=_positive_int,
        default=None,
        metavar="N",
        help="a cap on requests in flight (default: none but this machine's, "
        f"{DEFAULT_MAX_IN_FLIGHT}); the number in flight is found from the endpoint's answers",
    )
    tuning.add_argument(
        "--batch-size",
        type=_positive_int,
        default=MAX_STUDIES_PER_REQUEST,
        metavar="N",
        help=f"studies per request, 1 to {MAX_STUDIES_PER_REQUEST}, within the endpoint's "
        f"request budget ({DEFAULT_REQUEST_BUDGET / 1e6:g} MB by default; default: "
        f"{MAX_STUDIES_PER_REQUEST})",
    )
    tuning.add_argument(
        "--shortest-side",
        type=_positive_int,
        metavar="PX",
        help=f"resize images to this shortest side before sending (default: "
        f"{DEFAULT_SHORTEST_SIDE})",
    )
    tuning.add_argument("--no-progress", action="store_true", help="no progress bar")

    sample = commands.add_parser(
        "sample",
        help="write a small manifest with the NEMA chest radiograph",
        description="Copy the NEMA chest radiograph (RG1, from pydicom-data) into FOLDER "
        "and write FOLDER/manifest.csv with three studies, ready for `cxr-widgets run`.",
    )
    sample.add_argument("folder", metavar="FOLDER", help="created if missing")
    sample.add_argument(
        "--force",
        action="store_true",
        help="overwrite a manifest.csv or sample image already in FOLDER that differs",
    )

    from .cli_batch_endpoint import add_parser as add_batch_endpoint

    add_batch_endpoint(commands, _positive_int)

    from .evaluate.cli import add_parser as add_evaluate

    add_evaluate(commands)
    return parser


def _add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    from .local.faults import FaultConfig

    group = parser.add_argument_group("fault injection (for tests and benchmarks)")
    FaultConfig.add_arguments(group)


# --- serve -------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from .local import server
    from .local.faults import FaultConfig

    key = None
    if args.key_env:
        key = os.environ.get(args.key_env)
        if not key:
            raise ConfigError(
                f"--key-env {args.key_env}: that environment variable is not set or empty; "
                f"set it (export {args.key_env}=...) or leave --key-env out for no key."
            )
    faults = FaultConfig.from_args(args)
    # `kill PID` (SIGTERM) stops the server too (server.serve turns it into Ctrl-C).
    server.serve(
        port=args.port,
        host=args.host,
        key=key,
        faults=faults,
        max_request_bytes=args.max_request_bytes,
        response_shape=args.response_shape,
        verbose=args.verbose,
    )
    return EXIT_OK


# --- run ---------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    from .backends import backend_from_choice

    options: dict[str, Any] = {}
    if args.shortest_side:
        options["shortest_side"] = args.shortest_side
    return backend_from_choice(
        "demo" if args.demo else None,
        scoring_uri=args.scoring_uri,
        deployment=args.deployment,
        key_env=args.key_env,
        endpoint_name=args.endpoint_name,
        workspace_config=args.workspace_config,
        image_options=options,
    )


def _default_store(manifest: Path) -> Path:
    return manifest.resolve().parent / f"{manifest.stem}.results.sqlite"


def _written_by_us(path: Path) -> bool:
    """True when ``path`` looks like an export cxr-widgets wrote (JSONL lines or CSV header)."""
    from .report import RECORD_FIELDS

    try:
        with open(path, encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return False
    if not first:
        return True  # an empty file holds nothing to lose
    if path.suffix.lower() == ".csv":
        return first.rstrip("\r\n").split(",")[:2] == list(RECORD_FIELDS[:2])
    try:
        line = json.loads(first)
    except ValueError:
        return False
    return isinstance(line, dict) and "status" in line and ("key" in line or "index" in line)


def check_outputs(outs: Sequence[str], inputs: set[Path], store: Path | None, force: bool) -> None:
    """Refuse, before anything is sent, an --out that would overwrite an input, the store
    or a file cxr-widgets did not write; create missing folders; check they are writable."""
    seen: set[Path] = set()
    for out in outs:
        path = Path(out)
        if path.suffix.lower() not in (".jsonl", ".json", ".ndjson", ".csv"):
            raise ConfigError(f"--out {out}: use a file name ending in .jsonl or .csv")
        resolved = path.resolve()
        if resolved in seen:
            raise ConfigError(f"--out {out} is given twice")
        seen.add(resolved)
        if resolved in inputs:
            raise ConfigError(
                f"--out {out} is an input of this run (the manifest or one of its images); "
                "it is never overwritten. Choose another file name. Nothing was sent."
            )
        if store is not None and resolved == store.resolve():
            raise ConfigError(f"--out {out} is the result store; choose another file name.")
        if path.exists() and not path.is_file():
            raise ConfigError(
                f"--out {out} is a folder, device or FIFO, not a file; give a file name."
            )
        if path.exists() and not force and not _written_by_us(path):
            raise ConfigError(
                f"--out {out} already exists and was not written by cxr-widgets; give another "
                "file name, or add --force to overwrite it. Nothing was sent."
            )
        writable_file(
            resolved,
            purpose=f"--out {out}",
            fix="choose another --out path. Nothing was sent.",
            error=ConfigError,
        )


def _write_outputs(result: Any, outs: Sequence[str]) -> list[str]:
    """Write each --out; a failure (a full disk) is reported, the others still written."""
    problems = []
    for path in outs:
        try:
            result.export(path)
        except OSError as exc:
            problems.append(f"could not write --out {path} ({exc.strerror or exc})")
    return problems


def _print_summary(
    result: Any, label: str, manifest: Path, out: Sequence[str], problems: Sequence[str]
) -> None:
    rows = [
        ("endpoint", label),
        ("studies", result.studies),
        ("ok", result.ok),
        ("failed", result.failed),
        ("skipped (from store)", result.skipped),
        *([("duplicates (sent once)", result.duplicates)] if result.duplicates else []),
        ("requests", result.requests),
        ("retries / 429 seen", f"{result.retries} / {result.busy}"),
        ("wall time", f"{result.wall_time:.1f} s"),
        *([("in flight (peak)", result.peak_limit)] if result.requests else []),
        *([("limited by", result.limited_by)] if result.requests and result.limited_by else []),
    ]
    if result.store_path:
        rows.append(("stored", f"{result.stored} in {result.store_path}"))
    rows.extend(("output", path) for path in out if not any(path in p for p in problems))
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    if result.store_path and not out:
        print(
            f"\nTo export: cxr-widgets run {manifest} --out reports.csv (or .jsonl); answered "
            "studies are read from the store, not sent again. In Python: "
            f"ResultStore({result.store_path!r}).export_csv('reports.csv')."
        )
    if result.burned_in:
        shown = ", ".join(result.burned_in[:10])
        more = f" and {len(result.burned_in) - 10} more" if len(result.burned_in) > 10 else ""
        print(
            f"\nwarning: {len(result.burned_in)} stud{'y has' if len(result.burned_in) == 1 else 'ies have'} "
            f"burned-in annotation (DICOM BurnedInAnnotation YES): the pixels sent may show "
            f"a name or other patient data: {shown}{more}."
        )
    for problem in problems:
        print(f"\nerror: {problem}. Everything answered is in the store; run again with --out.")
    shown_failures = result.failures[:10]
    if shown_failures:
        print("\nfailed studies:")
        for failure in shown_failures:
            print(
                f"  {failure.study_id or f'#{failure.index}'}: {failure.error_type}: {failure.message}"
            )
        if len(result.failures) > len(shown_failures):
            print(f"  ... and {len(result.failures) - len(shown_failures)} more (see --out)")
        print("Run the same command again to retry the failed studies.")


def _run(args: argparse.Namespace) -> int:
    from .batch import run_batch
    from .manifest import read_manifest
    from .study import IMAGE_COLUMNS

    if args.key is not None:
        raise ConfigError(
            "--key is not accepted: a key typed on the command line stays in your shell "
            f"history. Put it in an environment variable instead: export {args.key_env}=... "
            "(or name another variable with --key-env)."
        )
    if args.batch_size > MAX_STUDIES_PER_REQUEST:
        raise ConfigError(
            f"--batch-size {args.batch_size}: the endpoint takes at most {MAX_STUDIES_PER_REQUEST}"
        )
    if args.no_store and args.store:
        raise ConfigError("give either --store or --no-store, not both")
    manifest = Path(args.manifest)
    studies = read_manifest(manifest)
    store = (
        None if args.no_store else (Path(args.store) if args.store else _default_store(manifest))
    )
    inputs = {manifest.resolve()}
    for study in studies:
        for column in IMAGE_COLUMNS:
            value = getattr(study, column)
            if isinstance(value, (str, os.PathLike)):
                inputs.add(Path(value).resolve())
    if store is not None and store.resolve() in inputs:
        raise ConfigError(f"--store {store} is an input of this run; choose another file name.")
    check_outputs(args.out, inputs, store, args.force)
    client = _client(args)
    print(
        f"{len(studies)} studies from {manifest} -> {client.label}"
        + (" (DEMO: canned findings)" if getattr(client, "is_demo", False) else ""),
        file=sys.stderr,
    )
    stopped: CxrWidgetsError | None = None
    try:
        with stop_signals_as_interrupt():
            result = run_batch(
                studies,
                client,
                store=store,
                max_in_flight=args.max_in_flight,
                batch_size=args.batch_size,
                progress=not args.no_progress,
            )
    except CxrWidgetsError as exc:
        if getattr(exc, "result", None) is None:
            raise
        stopped, result = exc, exc.result  # type: ignore[attr-defined]
    finally:
        client.close()
    problems = _write_outputs(result, args.out)
    _print_summary(result, client.label, manifest, args.out, problems)
    if stopped is not None:
        print(f"\ncxr-widgets run: stopped: {stopped}", file=sys.stderr)
        return EXIT_FAILED
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result.failures or problems else EXIT_OK


# --- sample ------------------------------------------------------------------------


def _sample(args: argparse.Namespace) -> int:
    manifest = write_sample(Path(args.folder), force=args.force)
    print(f"wrote {manifest} (3 studies of the NEMA chest radiograph RG1; made-up texts)")
    print(f"next: cxr-widgets run {manifest}")
    return EXIT_OK


def write_sample(folder: Path, *, force: bool = False) -> Path:
    """Copy the NEMA radiograph into ``folder`` and write its manifest; never replaces a
    different file already there unless ``force``. Returns the manifest's path."""
    from .manifest import format_manifest
    from .samples import (
        SAMPLE_COMPARISON,
        SAMPLE_FRONTAL,
        SAMPLE_INDICATION,
        SAMPLE_PRIOR,
        SAMPLE_PRIOR_REPORT,
        SAMPLE_TECHNIQUE,
        sample_path,
    )

    images = folder / "images"
    frontal = images / SAMPLE_FRONTAL
    prior = images / SAMPLE_PRIOR
    copies = [(sample_path(SAMPLE_FRONTAL), frontal), (sample_path(SAMPLE_PRIOR), prior)]
    for source, target in copies:
        _refuse_to_replace(target, Path(source).read_bytes(), force)
    rows = [
        {"study_id": "rg1-frontal", "frontal": frontal},
        {
            "study_id": "rg1-indication",
            "frontal": frontal,
            "indication": SAMPLE_INDICATION,
            "technique": SAMPLE_TECHNIQUE,
        },
        {
            "study_id": "rg1-with-prior",
            "frontal": frontal,
            "prior": prior,
            "indication": SAMPLE_INDICATION,
            "technique": SAMPLE_TECHNIQUE,
            "comparison": SAMPLE_COMPARISON,
            "prior_report": SAMPLE_PRIOR_REPORT,
        },
    ]
    manifest = folder / "manifest.csv"
    text = format_manifest(rows, folder)
    _refuse_to_replace(manifest, text.encode("utf-8"), force)
    make_folder(images, purpose="the sample's images", fix="choose another folder.")
    for source, target in copies:
        shutil.copyfile(source, target)
    manifest.write_text(text, encoding="utf-8", newline="")
    return manifest


def _refuse_to_replace(target: Path, content: bytes, force: bool) -> None:
    """A file already at ``target`` with other content is the user's: keep it (unless --force)."""
    if not target.exists() or force:
        return
    if not target.is_file() or target.read_bytes() != content:
        raise ConfigError(
            f"{target} already exists and differs from what `cxr-widgets sample` writes; "
            "nothing was changed. Choose another folder, or add --force to overwrite it."
        )


# --- entry point -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .cli_batch_endpoint import run as _batch_endpoint
    from .evaluate.cli import run as _evaluate

    handlers = {
        "serve": _serve,
        "run": _run,
        "sample": _sample,
        "batch-endpoint": _batch_endpoint,
        "evaluate": _evaluate,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USAGE_ERRORS as exc:
        print(f"cxr-widgets {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CxrWidgetsError as exc:
        print(f"cxr-widgets {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
