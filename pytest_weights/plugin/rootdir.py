"""Keep ``--checkpoint PATH`` (space form) from choosing pytest's rootdir.

pytest determines the rootdir and ini file from the command line *before* it loads plugins
(the ini file may name them), so at that moment ``--checkpoint`` is an unknown option and the
``PATH`` after it looks like a test path: the rootdir becomes the common ancestor of the
tests and the checkpoint, or the checkpoint's repository, with the node ids, the cache
directory and the ini file that follow (pytest-dev/pytest#8846; ``--checkpoint=PATH`` is
not affected). Once the plugin's options are registered, pytest re-parses the command line
and the value is no longer a path argument; :func:`correct_rootdir` then runs pytest's own
:func:`determine_setup` again on the real path arguments and, if the answer differs, puts it
in place before conftest files are loaded, as if the value had never been there.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest

from .options import VALUE_OPTIONS


def spaced_value_options(args: Sequence[str]) -> bool:
    """Whether ``args`` give one of this plugin's value options as ``--option VALUE``."""
    return any(arg in VALUE_OPTIONS for arg in args[:-1])


def correct_rootdir(config: pytest.Config, args: list[str]) -> None:
    """Re-determine rootdir, ini file and ini values without the option values (in place)."""
    ns = config.known_args_namespace
    if ns.rootdir or ns.inifilename or not spaced_value_options(args):
        return  # the rootdir or ini file is explicit, or nothing was mistaken for a path
    from _pytest.config.findpaths import determine_setup

    rootpath, inipath, inicfg, ignored = determine_setup(
        inifile=None,
        override_ini=ns.override_ini,
        args=ns.file_or_dir,
        rootdir_cmd_arg=None,
        invocation_dir=config.invocation_params.dir,
    )
    if rootpath == config.rootpath and inipath == config.inipath:
        return
    old_confcutdir = str(config.inipath.parent if config.inipath else config.rootpath)
    old_addopts = list(config.getini("addopts"))
    config._rootpath = rootpath
    config._inipath = inipath
    config._inicfg = inicfg
    config._ignored_config_files = ignored
    config._inicache.clear()
    config._parser.extra_info["rootdir"] = str(rootpath)
    config._parser.extra_info["inifile"] = str(inipath)
    _swap_addopts(config, args, old_addopts)
    if config.known_args_namespace.confcutdir == old_confcutdir and not _given(args, "--confcutdir"):
        config.known_args_namespace.confcutdir = str(inipath.parent if inipath else rootpath)


def _swap_addopts(config: pytest.Config, args: list[str], old: list[str]) -> None:
    """Replace the ``addopts`` of the ini file found by mistake with those of the right one."""
    new = list(config.getini("addopts"))
    if new == old or args[: len(old)] != old:
        return
    args[: len(old)] = new
    config.pluginmanager.consider_preparse(new, exclude_only=False)
    config.known_args_namespace = config._parser.parse_known_args(args, namespace=copy.copy(config.option))


def _given(args: Sequence[str], option: str) -> bool:
    return any(arg == option or arg.startswith(option + "=") for arg in args)
