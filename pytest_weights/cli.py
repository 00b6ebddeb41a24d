"""The ``pytest-weights`` command: check or diff checkpoints, validate specs, inspect a checkpoint.

::

    pytest-weights check model.safetensors           # one-screen verdict: healthy, or what is wrong
    pytest-weights diff base.safetensors ft.safetensors --atol 1e-6   # what changed, tensor by tensor
    pytest-weights validate specs/*.weights.yaml     # OK path (N assertions) | file:line: message
    pytest-weights inspect model.safetensors         # per-tensor table of statistics
    pytest-weights inspect model.safetensors --roles --stats std,ks --json
    pytest-weights specs                             # bundled specs

Statistics are computed by the same one-pass engine as the pytest plugin and share its
persistent cache (``.pytest_cache/d/pytest-weights``), so inspecting a checkpoint that
``pytest --checkpoint`` already checked reads nothing it does not have to.

Exit codes: 0 success (``check``: healthy; ``diff``: identical within tolerance); 1 ``validate``
found invalid specs, ``check`` a failed check, ``diff`` a difference; 2 usage error or a
checkpoint or spec that cannot be read (one line ``pytest-weights: error: <file>: <cause>`` on
stderr; ``--debug`` prints the Python traceback of an unexpected error above it). Nothing here
imports torch until a command runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .errors import FATAL, SpecError, WeightsError, describe, format_traceback, is_internal

PROG = "pytest-weights"
#: Statistics shown when ``--stats`` is not given (those present in SCALARS, in this order).
DEFAULT_STATS = ("mean", "std", "absmax", "kurtosis", "ks", "weibull_k", "weibull_lambda")
#: Where the pytest plugin keeps its statistics: ``config.cache.mkdir("pytest-weights")``.
DEFAULT_CACHE_DIR = Path(".pytest_cache") / "d" / "pytest-weights"
ID_COLUMNS = ("name", "shape", "dtype", "role", "depth")
DEBUG_HELP = "on an unexpected error, print its Python traceback (for bug reports)"


class CliError(Exception):
    """A usage problem reported as one line, exit status 2."""


# ---------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Check and inspect the statistics of neural-network checkpoint weights.",
        epilog="Exit status: 0 ok (check: healthy, diff: identical); 1 validate: invalid spec, check: a failed "
        "check, diff: a difference; 2 usage error or unreadable file.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_check(sub)
    _add_diff(sub)

    p = sub.add_parser(
        "validate",
        help="check spec files without a checkpoint",
        description="Load each spec and report every error as file:line: message.",
    )
    p.add_argument("specs", nargs="*", metavar="SPEC", help="spec file or bundled spec name")
    p.add_argument(
        "--schema",
        action="store_true",
        help="print the JSON Schema of the spec format instead (for editors: > specs/weights.schema.json)",
    )

    p = sub.add_parser(
        "inspect",
        help="per-tensor statistics of a checkpoint",
        description="A table of every tensor of CHECKPOINT with its role, depth and scalar statistics, "
        "computed in one streamed pass (cached like the pytest plugin's).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file or model directory")
    p.add_argument(
        "--stats",
        metavar="NAMES",
        help=f"comma-separated statistics, or 'all' (default: {','.join(DEFAULT_STATS)}; every name is listed "
        "in docs/kinds.md, 'Statistics', and by an unknown name's error)",
    )
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="only tensors whose name matches GLOB ('*' matches dots too); repeatable",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON list of objects (NaN as null)")
    fmt.add_argument("--csv", action="store_true", help="print CSV with a header row")
    p.add_argument("--roles", action="store_true", help="one row per role: count, depths, median of each statistic")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto (default), cpu, cuda or cuda:N")
    _add_cache_options(p)

    sub.add_parser("specs", help="list bundled specs", description="List the specs shipped with pytest-weights.")

    p = sub.add_parser(
        "init",
        help="generate a baseline spec from a known-good checkpoint",
        description="Profile CHECKPOINT in one pass and write a commented spec of what it looks like: finiteness, "
        "and per role std bands, Gaussian KS tolerance, Weibull k band, depth trends that hold, sibling "
        "consistency (observed values widened by --margin; observed values in comments).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file or model directory")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the spec to FILE (and weights.schema.json next to it if missing); default: stdout",
    )
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.add_argument(
        "--margin", type=float, default=0.5, metavar="M", help="widen observed ranges by M (default 0.5: ÷/× 1.5)"
    )
    p.add_argument(
        "--preset",
        choices=("llama", "gpt2", "bert", "vit", "generic"),
        default=None,
        help="architecture preset (default: detected from tensor names)",
    )
    p.add_argument(
        "--schema-ref",
        default="weights.schema.json",
        metavar="REF",
        help="path or URL of the JSON Schema on the spec's first line (default: weights.schema.json)",
    )
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto (default), cpu, cuda or cuda:N")
    _add_cache_options(p)
    for command in sub.choices.values():  # also accepted after the command: pytest-weights inspect X --debug
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: return instead of exiting
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return run_command(args)
    except BrokenPipeError:  # e.g. `pytest-weights inspect m.safetensors | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (WeightsError, CliError, OSError) as e:
        return _error(str(e), e, args.debug)
    except KeyboardInterrupt:
        _clear_progress()
        return 130
    except FATAL:
        raise
    except BaseException as e:  # a bug, or an error a reader did not expect: one line, never a traceback
        return _error(_on(_subject(args), describe(e)), e, args.debug)


def _add_check(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="one-screen health verdict of checkpoints (the plugin's checks, no pytest)",
        description="Check each CHECKPOINT against the specs (default: the bundled default spec) with the same "
        "engine as `pytest --checkpoint`, and print one screen per checkpoint: a plain-English headline (facts, "
        "and a guess at the cause, labelled as one), the failing checks, and what was checked and left out. "
        "Exit status: 0 healthy, 1 a check failed, 2 usage error or unreadable input.",
    )
    p.add_argument(
        "checkpoints",
        nargs="+",
        metavar="CHECKPOINT",
        help="checkpoint file, model directory, or URL (s3://, https://)",
    )
    p.add_argument(
        "--spec",
        action="append",
        default=[],
        metavar="SPEC",
        help="spec file or bundled spec name; repeatable (default: default)",
    )
    p.add_argument(
        "--reference",
        metavar="PATH",
        help="the checkpoint `view: delta` subtracts and reference kinds (reference_ratio, unchanged) compare with",
    )
    p.add_argument("--json", metavar="PATH", help="write every result and verdict as JSON to PATH ('-': stdout)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the statistics pass on a Dask cluster: a scheduler address (tcp://host:8786) or local:N "
        "(a LocalCluster of N processes); 'off': here (default: $DASK_SCHEDULER_ADDRESS; 'distributed' extra)",
    )
    _add_cache_options(p)


def _add_diff(sub: Any) -> None:
    p = sub.add_parser(
        "diff",
        help="what changed between two checkpoints, tensor by tensor",
        description="Compare every tensor of A with its counterpart in B (names matched, DDP/compile/Lightning "
        "wrapper prefixes stripped when that pairs them): changed or not at the tolerance (an element changed "
        "when |a − b| > atol + rtol·|b|; NaN in both at the same place is not a change), changed fraction, "
        "max and mean |Δ|, ‖A−B‖/‖B‖, tensors only in A or B, shape and dtype changes, a rollup by role and "
        "layer. One pair of tensors in memory at a time. Exit status: 0 identical within tolerance, 1 something "
        "differs, 2 usage error or unreadable input.",
    )
    p.add_argument("a", metavar="A", help="checkpoint file or model directory")
    p.add_argument("b", metavar="B", help="checkpoint to compare with (the reference of rtol)")
    p.add_argument("--atol", type=float, default=0.0, metavar="X", help="absolute tolerance (default 0)")
    p.add_argument("--rtol", type=float, default=0.0, metavar="Y", help="tolerance relative to |b| (default 0)")
    p.add_argument("--json", metavar="PATH", help="write the full comparison as JSON to PATH ('-': stdout)")
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="only tensors whose name (in A or B) matches GLOB ('*' matches dots too); repeatable",
    )


def _add_cache_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="do not read or write cached statistics (nor check's and inspect's output)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"where cached statistics live (default: {DEFAULT_CACHE_DIR}, shared with the pytest plugin)",
    )


def run_command(args: argparse.Namespace) -> int:
    if args.command == "check":
        return replayable(args, cmd_check)
    if args.command == "diff":
        return cmd_diff(args)
    if args.command == "validate":
        if args.schema:
            from .schema import schema_json

            if args.specs:
                raise CliError("validate --schema prints the schema: give no SPEC")
            sys.stdout.write(schema_json())
            return 0
        if not args.specs:
            raise CliError("validate: give at least one SPEC (or --schema)")
        return cmd_validate(args.specs, args.debug)
    if args.command == "init":
        return cmd_init(args)
    if args.command == "inspect":
        return replayable(args, cmd_inspect)
    return cmd_specs()


def replayable(args: argparse.Namespace, command: Any) -> int:
    """``command(args)``, or its stored output when its options and every file they name are
    unchanged (:func:`pytest_weights.replay.replay_output`: no torch import); ``--no-cache`` and
    ``--json PATH`` (a file to write) always run it."""
    json_file = getattr(args, "json", None)
    if args.no_cache or (isinstance(json_file, str) and json_file != "-"):
        return command(args)
    from .replay import output_key, replay_output

    cache_dir = Path(args.cache_dir or DEFAULT_CACHE_DIR)
    if cache_dir == DEFAULT_CACHE_DIR:
        _ensure_pytest_cache_root(DEFAULT_CACHE_DIR.parent.parent)
    key = output_key(args.command, vars(args), skip=[cache_dir])
    return replay_output(key, cache_dir / "outputs", lambda: command(args))


def _subject(args: argparse.Namespace) -> str:
    """The file a command works on, to name in an error."""
    return _shown(str(getattr(args, "checkpoint", None) or getattr(args, "current", None) or ""))


def _shown(path: str) -> str:
    """``path`` as printed: a URL without its credentials (``user:password@``, signatures)."""
    if "://" not in path:
        return path
    from .readers.source import redact

    return redact(path)


def _on(subject: str, message: str) -> str:
    return f"{subject}: {message}" if subject and not message.startswith(subject) else message


def _error(message: str, exc: BaseException | None = None, debug: bool = False) -> int:
    """Print ``pytest-weights: error: message`` (one line; the traceback above it with --debug); return 2."""
    _clear_progress()
    hint = ""
    if exc is not None and is_internal(exc) and not isinstance(exc, (CliError, OSError)):
        if debug:
            print(format_traceback(exc), file=sys.stderr)
        else:
            hint = " (--debug for the traceback)"
    print(f"{PROG}: error: {' '.join(message.split())}{hint}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    """One screen per checkpoint; 0 healthy, 1 a check failed, 2 a checkpoint could not be read."""
    from .runner import Checker, open_or_raise

    assertions = _load_assertions(args.spec or ["default"])
    cache_dir = None if args.no_cache else (args.cache_dir or DEFAULT_CACHE_DIR)
    if cache_dir is not None and Path(cache_dir) == DEFAULT_CACHE_DIR:
        _ensure_pytest_cache_root(DEFAULT_CACHE_DIR.parent.parent)
    cache = _stat_cache(cache_dir)
    reference = open_or_raise(args.reference) if args.reference else None
    progress = _progress if sys.stderr.isatty() else None
    from .executors.base import scheduler_setting

    scheduler = scheduler_setting(args.scheduler)
    checker = Checker(_device(args.device), progress=progress, cache=cache, reference=reference, scheduler=scheduler)
    keep: list[Any] = []  # every checkpoint stays referenced: the checker keys its ΔW views by id()
    status, verdicts, results = 0, [], []
    try:
        for i, path in enumerate(args.checkpoints):
            args.current = path
            try:
                v = _check_path(checker, path, assertions, keep)
            except WeightsError as e:
                _error(str(e))
                verdicts.append({"checkpoint": _shown(path), "healthy": False, "error": describe(e)})
                status = 2
                continue
            if args.json != "-":
                print(("\n" if i else "") + _render(v), flush=True)
            verdicts.append(v.to_dict())
            results += v.results
            status = max(status, 0 if v.healthy else 1)
    finally:
        checker.close()
        if reference is not None:
            reference.close()
    if args.json:
        _write_json(args.json, _check_json([_shown(p) for p in args.checkpoints], results, verdicts))
    return status


def _check_path(checker: Any, path: str, assertions: Sequence[Any], keep: list[Any]) -> Any:
    """Open ``path``, judge it (:func:`check_checkpoint`), close it (the object is kept in ``keep``)."""
    from .runner import open_or_raise

    ckpt = open_or_raise(path)
    keep.append(ckpt)
    try:
        return check_checkpoint(checker, ckpt, assertions)
    finally:
        ckpt.close()


def _load_assertions(refs: Sequence[str]) -> list[Any]:
    """Every assertion of the specs ``refs``; an unreadable or invalid spec is a usage error."""
    from .spec import load_spec

    out = []
    for ref in refs:
        spec = load_spec(ref)  # SpecError: not found, unreadable YAML
        if spec.errors:
            more = f" (and {len(spec.errors) - 1} more: pytest-weights validate {ref})" if len(spec.errors) > 1 else ""
            raise CliError(f"{spec.errors[0]}{more}")
        out += spec.assertions
    return out


def _device(name: str) -> Any:
    from .device import resolve_device

    try:
        return resolve_device(name)
    except WeightsError as e:
        raise CliError(str(e).replace("--weights-device", "--device")) from None


def _stat_cache(cache_dir: Path | None) -> Any:
    from .cache import StatCache

    return StatCache(cache_dir) if cache_dir is not None else None


def check_checkpoint(checker: Any, ckpt: Any, assertions: Sequence[Any]) -> Any:
    """The :class:`~pytest_weights.verdict.Verdict` on ``ckpt``; raises a :class:`WeightsError`
    when it (or the reference) cannot be read, or for a usage problem."""
    from .readers.derived import DeltaCheckpoint
    from .runner import error_result
    from .verdict import Checked, coverage, verdict

    checker.prepare((ckpt, a) for a in assertions)
    for c in (ckpt, checker.reference):
        unreadable = checker.pass_error(c) if c is not None else None
        if unreadable is not None:
            raise unreadable
    results, checked, notes = [], [], []
    for a in assertions:
        try:
            results.append(checker.evaluate(ckpt, a))
            target = checker.target(ckpt, a)
        except (WeightsError, *FATAL):  # a usage problem, e.g. view: delta without --reference
            raise
        except BaseException as e:  # the assertion could not judge these values: a failed result
            results.append(error_result(a, ckpt.label, e))
            continue
        checked.append(Checked(a.assertion.kind, a.selection.min_numel, _names(checker, target, a)))
        if isinstance(target, DeltaCheckpoint):
            notes += [n for n in target.notes() if n not in notes]
    return verdict(ckpt.label, results, coverage(ckpt.tensors(), checked), notes)


def _names(checker: Any, target: Any, spec: Any) -> set[str]:
    return {i.name for i in checker.select(target, spec).tensors}


def _render(v: Any) -> str:
    from .verdict import render

    return render(v)


def _check_json(paths: Sequence[str], results: Sequence[Any], verdicts: Sequence[Any]) -> dict[str, Any]:
    """The ``--weights-json`` record (version 1) of every result, plus one verdict per checkpoint."""
    summary = {
        "passed": sum(r.passed and not r.skipped for r in results),
        "failed": sum(not r.passed for r in results),
        "skipped": sum(r.skipped for r in results),
    }
    return {
        "version": 1,
        "checkpoints": list(paths),
        "summary": summary,
        "results": [r.to_dict() for r in results],
        "verdicts": list(verdicts),
    }


def _write_json(dest: str, doc: Any) -> None:
    """``doc`` as JSON (NaN/Inf as null) to the file ``dest``, or stdout for ``-``."""
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    if dest == "-":
        sys.stdout.write(text)
        return
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------- diff


def cmd_diff(args: argparse.Namespace) -> int:
    """Print (or write as JSON) what differs between A and B; 0 identical, 1 something differs."""
    from .diff import diff_checkpoints

    for name in ("atol", "rtol"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise CliError(f"--{name} must be a finite number ≥ 0, got {value}")
    report = diff_checkpoints(args.a, args.b, atol=args.atol, rtol=args.rtol, include=args.include)
    if args.include and not report.tensors:
        raise CliError(f"no tensor of {args.a} or {args.b} matches --include {' '.join(args.include)}")
    if args.json != "-":
        print(report.format())
    if args.json:
        _write_json(args.json, report.to_dict())
    return 0 if report.identical else 1


# ---------------------------------------------------------------------------- validate


def cmd_validate(refs: Sequence[str], debug: bool = False) -> int:
    from .spec import load_spec, resolve_spec

    status = 0
    for ref in refs:
        try:
            path = resolve_spec(ref)
        except SpecError as e:  # not a file nor a bundled name: nothing to validate
            _error(str(e))
            status = 2
            continue
        try:
            spec = load_spec(path)
        except SpecError as e:
            print(e)
            status = max(status, 1)
            continue
        except FATAL:
            raise
        except BaseException as e:  # the loader failed unexpectedly: say so, validate the others
            _error(_on(str(path), describe(e)), e, debug)
            status = 2
            continue
        if spec.errors:
            for err in spec.errors:
                print(err)
            status = max(status, 1)
        else:
            n = len(spec.assertions)
            print(f"OK {spec.path} ({n} assertion{'s' if n != 1 else ''})")
    return status


# ---------------------------------------------------------------------------- init


def cmd_init(args: argparse.Namespace) -> int:
    from .authoring import init_spec
    from .schema import SCHEMA_FILENAME, write_schema
    from .spec import parse_spec

    out: Path | None = args.output
    if out is not None and out.exists() and not args.force:
        raise CliError(
            f"{out} exists: --force overwrites it; pytest --checkpoint ... --weights-regen updates its numbers"
        )
    cache_dir = None if args.no_cache else (args.cache_dir or DEFAULT_CACHE_DIR)
    if cache_dir is not None and Path(cache_dir) == DEFAULT_CACHE_DIR:
        _ensure_pytest_cache_root(DEFAULT_CACHE_DIR.parent.parent)
    start = time.perf_counter()
    try:
        text = init_spec(
            args.checkpoint,
            margin=args.margin,
            preset=args.preset,
            device=args.device,
            cache_dir=cache_dir,
            schema=args.schema_ref,
        )
    except WeightsError as e:
        raise CliError(str(e).replace("--weights-device", "--device")) from None
    if out is None:
        sys.stdout.write(text)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    n = len(parse_spec(text, str(out)).assertions)
    print(f"wrote {out}: {n} assertions in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    schema = out.parent / SCHEMA_FILENAME
    if args.schema_ref == SCHEMA_FILENAME and not schema.exists():
        write_schema(schema)
        print(f"wrote {schema} (JSON Schema of the spec format, for editors)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- specs


def cmd_specs() -> int:
    from .spec import bundled_specs, load_spec

    rows = []
    for name, path in bundled_specs().items():
        try:
            description = load_spec(path).description
        except FATAL:
            raise
        except BaseException as e:
            description = f"(invalid: {describe(e)})"
        rows.append((name, str(path), description))
    print_table(("name", "path", "description"), rows, sys.stdout)
    return 0


# ---------------------------------------------------------------------------- inspect


@dataclass
class Row:
    """One tensor of the inspected checkpoint and its statistics (None: not computed)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str
    depth: int | None
    group: str
    values: dict[str, float | None] = field(default_factory=dict)


def stat_names(spec: str | None) -> list[str]:
    """The statistics to show: ``--stats`` validated against SCALARS, or the defaults present."""
    from .assertions.base import suggest
    from .stats.scalars import SCALARS

    if spec is None:
        return [s for s in DEFAULT_STATS if s in SCALARS]
    if spec.strip() == "all":
        return list(SCALARS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise CliError("--stats: no statistic given")
    for name in names:
        if name not in SCALARS:
            raise CliError(
                f"--stats: unknown statistic {name!r}{suggest(name, SCALARS)}; available: {', '.join(SCALARS)}"
            )
    return list(dict.fromkeys(names))


def cmd_inspect(args: argparse.Namespace) -> int:
    names = stat_names(args.stats)
    rows, label = inspect_checkpoint(
        args.checkpoint,
        names,
        include=args.include,
        device=args.device,
        cache_dir=None if args.no_cache else (args.cache_dir or DEFAULT_CACHE_DIR),
    )
    if args.include and not rows:
        raise CliError(f"{label}: no tensor matches --include {' '.join(args.include)}")
    if args.roles:
        columns, records = role_records(rows, names)
    else:
        columns, records = tensor_records(rows, names, table=not (args.json or args.csv))
    if args.json:
        json.dump([{c: _json_value(r[c]) for c in columns} for r in records], sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_csv_value(c, r[c]) for c in columns] for r in records)
    else:
        print_table(columns, [[_text_value(c, r[c]) for c in columns] for r in records], sys.stdout)
    return 0


def inspect_checkpoint(
    path: str | Path,
    names: Sequence[str],
    include: Sequence[str] = (),
    device: str = "auto",
    cache_dir: str | Path | None = None,
) -> tuple[list[Row], str]:
    """Every tensor of the checkpoint at ``path`` (matching ``include``) with the scalar
    statistics ``names``, computed in one pass; returns (rows, checkpoint label)."""
    from .cache import StatCache
    from .device import resolve_device
    from .engine import StatStore, compute_pass
    from .readers import open_checkpoint
    from .selection import Selection
    from .stats.scalars import SCALARS

    try:
        dev = resolve_device(device)
    except WeightsError as e:
        raise CliError(str(e).replace("--weights-device", "--device")) from None
    scalars = [SCALARS[n] for n in names]
    wanted = list(dict.fromkeys(s.statistic for s in scalars))
    if cache_dir is not None and Path(cache_dir) == DEFAULT_CACHE_DIR:
        _ensure_pytest_cache_root(DEFAULT_CACHE_DIR.parent.parent)
    cache = StatCache(cache_dir) if cache_dir is not None else None
    selection = Selection()
    store = StatStore()
    with open_checkpoint(path) as ckpt:
        cid = ckpt.identity()
        infos = [i for i in ckpt.tensors() if not include or any(fnmatchcase(i.name, g) for g in include)]
        requests = {i.name: wanted for i in infos if i.is_float and i.numel > 0}
        progress = _progress if sys.stderr.isatty() else None
        compute_pass(ckpt, requests, store, dev, progress, cache=cache)  # cached values in, computed ones saved
        rows = []
        for info in infos:
            row = Row(
                info.name,
                tuple(info.shape),
                info.dtype_name,
                selection.role(info.name),
                selection.depth(info.name),
                info.group,
            )
            if info.name in requests:
                computed = store.get(cid, info.name)
                row.values = {s.name: s.read(computed[s.statistic]) for s in scalars}
            rows.append(row)
        return rows, ckpt.label


def _ensure_pytest_cache_root(root: Path) -> None:
    """Create ``.pytest_cache`` as pytest does (with a ``.gitignore``), so it is never committed."""
    if root.exists():
        return
    try:
        root.mkdir(parents=True)
        (root / ".gitignore").write_text("# Created by pytest automatically.\n*\n", encoding="utf-8")
        (root / "CACHEDIR.TAG").write_text(
            "Signature: 8a477f597d28d172789f06886806bc55\n"
            "# This file is a cache directory tag created by pytest.\n"
            "# For information about cache directory tags, see:\n"
            "#\thttps://bford.info/cachedir/spec.html\n",
            encoding="utf-8",
        )
    except OSError:
        pass  # a read-only directory: the cache then simply does not save


def tensor_records(
    rows: Sequence[Row], names: Sequence[str], table: bool = False
) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and one record per tensor; the table shows ``group`` only when optimizer
    state is present, JSON and CSV always have it."""
    columns = list(ID_COLUMNS)
    if not table or any(r.group != "weights" for r in rows):
        columns.append("group")
    columns += names
    records = []
    for r in rows:
        rec: dict[str, Any] = {"name": r.name, "shape": list(r.shape), "dtype": r.dtype, "role": r.role}
        rec.update(depth=r.depth, group=r.group)
        rec.update({n: r.values.get(n) for n in names})
        records.append(rec)
    return columns, records


def role_records(rows: Sequence[Row], names: Sequence[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows grouped by role (in storage order of first appearance); medians over finite values."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.role, []).append(r)
    records = []
    for role, members in groups.items():
        rec: dict[str, Any] = {
            "role": role,
            "count": len(members),
            "depths": sorted({m.depth for m in members if m.depth is not None}),
        }
        for n in names:
            finite = [v for m in members if (v := m.values.get(n)) is not None and math.isfinite(v)]
            computed = any(m.values.get(n) is not None for m in members)
            rec[n] = statistics.median(finite) if finite else (math.nan if computed else None)
        records.append(rec)
    return ["role", "count", "depths", *names], records


# ---------------------------------------------------------------------------- output


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/Inf
    return v


def _csv_value(column: str, v: Any) -> Any:
    if isinstance(v, float):
        return repr(v)  # round-trips exactly; nan/inf parse with float()
    return _text_value(column, v)


def _text_value(column: str, v: Any) -> str:
    if v is None:
        return ""
    if column == "shape":
        return "x".join(map(str, v)) if v else "()"
    if column == "depths":
        return _ranges(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.7g}"
    return str(v)


def _ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` → ``0-2,5``."""
    spans: list[list[int]] = []
    for v in sorted(values):
        if spans and v == spans[-1][1] + 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Left-aligned text columns, right-aligned numbers, a dashed rule under the header."""
    from .formatting import table

    out.write("\n".join(table(header, rows, numbers_right=True)) + "\n")


# ---------------------------------------------------------------------------- progress

_line: Any = None  # the live line, once a pass has shown one


def _progress(p: Any) -> None:
    """One rewritten status line on stderr, at most 10 times a second (only installed when stderr
    is a TTY): :class:`~pytest_weights.formatting.LiveLine`, the plugin's line too."""
    global _line
    if _line is None:
        from .formatting import LiveLine

        _line = LiveLine(interval=0.1)
    _line(p)


def _clear_progress() -> None:
    if _line is not None:
        _line.clear()


if __name__ == "__main__":
    sys.exit(main())
