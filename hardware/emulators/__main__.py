"""Serve one emulated device on a pty until killed.

    python -m hardware.emulators gsm --link /tmp/ttyGSM0
    python -m hardware.emulators tetra --link /tmp/ttyPEI0 --echo

``PATH`` becomes a symlink to the pty's slave side, so dispatchd (or
minicom) opens it like a USB serial adapter.  SIGINT/SIGTERM remove the link
and exit 0.  A line ``ready <path> -> <pty>`` on stderr says it is serving.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from hardware.emulators import EMULATORS

log = logging.getLogger("hardware.emulators")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m hardware.emulators",
                                     description="Serve an emulated AT device on a pty.")
    parser.add_argument("name", choices=sorted(EMULATORS))
    parser.add_argument("--link", required=True, type=Path,
                        help="symlink to create, pointing at the pty slave")
    echo = parser.add_mutually_exclusive_group()
    echo.add_argument("--echo", dest="echo", action="store_true", default=None,
                      help="echo commands (ATE1); default: the device's own default")
    echo.add_argument("--no-echo", dest="echo", action="store_false")
    return parser.parse_args(argv)


async def serve(name: str, link: Path, echo: bool | None) -> None:
    """Open the emulator, link it, and wait for SIGINT/SIGTERM."""
    emulator = EMULATORS[name]()
    if echo is not None:
        emulator.echo = echo
    slave = emulator.open()
    link.unlink(missing_ok=True)
    os.symlink(slave, link)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("ready %s -> %s", link, slave)
    try:
        await stop.wait()
    finally:
        link.unlink(missing_ok=True)
        emulator.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: serve until a signal; return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    asyncio.run(serve(args.name, args.link, args.echo))
    return 0


if __name__ == "__main__":
    sys.exit(main())
