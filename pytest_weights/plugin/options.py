"""The plugin's command-line options and ini values (registered by :func:`add_options`)."""

from __future__ import annotations

import pytest

#: Options that take a value: given as ``--option VALUE``, pytest's rootdir search mistakes the
#: value for a test path (it runs before plugins register options; see :mod:`.rootdir`).
VALUE_OPTIONS = (
    "--checkpoint",
    "--reference",
    "--weights-spec",
    "--weights-device",
    "--weights-workers",
    "--weights-scheduler",
    "--weights-json",
    "--weights-report",
    "--weights-regen-margin",
)


def add_options(parser: pytest.Parser) -> None:
    """Register the command-line options and ini values."""
    group = parser.getgroup("weights", "pytest-weights: checkpoint weight assertions")
    group.addoption(
        "--checkpoint",
        action="append",
        default=[],
        metavar="PATH",
        dest="weights_checkpoints",
        help="checkpoint to check (any supported format, a model directory, or a run directory "
        "of step checkpoints; or a URL: s3://, gs://, http(s)://, read by byte range); repeatable",
    )
    group.addoption(
        "--weights-latest",
        action="store_true",
        default=False,
        dest="weights_latest",
        help="for a run directory, check only its newest checkpoint",
    )
    group.addoption(
        "--reference",
        default=None,
        metavar="PATH",
        dest="weights_reference",
        help="a checkpoint (path or URL) to compare against (e.g. the base model of a fine-tune)",
    )
    group.addoption(
        "--weights-spec",
        action="append",
        default=[],
        metavar="SPEC",
        dest="weights_specs",
        help="spec file (any name) or bundled spec name to run; repeatable. "
        "Default when no test paths are given: the 'weights_specs' ini value, else 'default'",
    )
    group.addoption(
        "--weights-device",
        default=None,
        metavar="DEVICE",
        dest="weights_device",
        help="where statistics run: auto (CUDA if available), cpu, cuda, cuda:N",
    )
    group.addoption(
        "--weights-workers",
        type=int,
        default=None,
        metavar="N",
        dest="weights_workers",
        help="CPU threads for the statistics pass (default: torch's intra-op thread count)",
    )
    group.addoption(
        "--weights-scheduler",
        default=None,
        metavar="ADDRESS",
        dest="weights_scheduler",
        help="run the statistics pass on a Dask cluster: its scheduler address (tcp://host:8786), or local:N "
        "for a LocalCluster of N worker processes; 'off': in this process. Default: the 'weights_scheduler' "
        "ini value, else $DASK_SCHEDULER_ADDRESS (needs the 'distributed' extra)",
    )
    group.addoption(
        "--weights-no-cache",
        action="store_true",
        default=False,
        dest="weights_no_cache",
        help="do not read or write cached statistics or replayed outcomes (kept in pytest's cache dir)",
    )
    group.addoption(
        "--weights-json",
        default=None,
        metavar="PATH",
        dest="weights_json",
        help="write every assertion's result as JSON (for dashboards; written once, also under xdist)",
    )
    group.addoption(
        "--weights-report",
        default=None,
        metavar="PATH",
        dest="weights_report",
        help="write a self-contained HTML report (plots need the 'report' extra: matplotlib)",
    )
    group.addoption(
        "--weights-regen",
        action="store_true",
        default=False,
        dest="weights_regen",
        help="rewrite, in the collected spec files, the baseline numbers (min/max, tol, k_min/k_max …) that the "
        "checkpoint violates, in place (comments kept); the rewritten items fail once, saying what changed",
    )
    group.addoption(
        "--weights-regen-margin",
        type=float,
        default=None,
        metavar="M",
        dest="weights_regen_margin",
        help="margin for --weights-regen (default: the one 'pytest-weights init' recorded in the spec, else 0.5)",
    )
    group.addoption(
        "--weights-debug",
        action="store_true",
        default=False,
        dest="weights_debug",
        help="show the Python traceback of internal errors (for bug reports) under their one-line message",
    )
    parser.addini("weights_specs", "specs to run with --checkpoint when no paths are given", type="args")
    parser.addini("weights_device", "default for --weights-device", default="auto")
    parser.addini("weights_scheduler", "default for --weights-scheduler", default="")
