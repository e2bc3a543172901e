"""``trtdeploy <command>``: parse arguments, call the Python API, map errors to exit codes.

Each command is a module in this folder that defines ``register(subparsers)``; it is
found by name, so adding a command touches one file.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ..version import __version__
from ..errors import TrtDeployError
from ..utils.logging import LOG_LEVELS, logger, setup_logging

EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70  # EX_SOFTWARE


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser, or only ``command``'s when it names one (``check-env``: cmd_check_env.py): each
    command module is imported to register itself, and importing all of them is 0.03-0.04 s of every start-up."""
    parser = argparse.ArgumentParser(
        prog="trtdeploy",
        description="Deploy PyTorch models to TensorRT and ONNX Runtime: convert, run, test, profile, "
                    "compare, inspect, check-env.",
        epilog="Run `trtdeploy <command> --help` for the arguments of each command.")
    parser.add_argument("--version", action="version", version=f"trtdeploy {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                        help="how much to print; 'debug' also shows tracebacks (default: info)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import __path__ as cli_path

    modules = {info.name[4:].replace("_", "-"): info.name for info in pkgutil.iter_modules(cli_path)
               if info.name.startswith("cmd_")}
    for name in [modules[command]] if command in modules else sorted(modules.values()):
        importlib.import_module(f"{__package__}.{name}").register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    setup_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except TrtDeployError as e:
        if args.log_level == "debug":
            logger.exception("error")
        print(f"trtdeploy {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"trtdeploy {args.command}: interrupted; no partial file was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug of ours: say so in one line; the traceback is one flag away
        if args.log_level == "debug":
            logger.exception("internal error")
        print(f"trtdeploy {args.command}: internal error ({type(e).__name__}: {e}); no partial file was left "
              f"behind; rerun with --log-level debug and report the traceback", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
