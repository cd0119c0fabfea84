"""The ``dispatchd`` command: run the daemon and administer it.

Exit codes: 0 success; 1 the daemon (or a command) failed at run time;
2 a usage or configuration mistake (each problem printed on its own line,
naming the file and key) - never a traceback for a user's mistake.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dispatch.config import ConfigError, Settings, effective_settings, load_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")


class UsageError(Exception):
    """A mistake in how the command was called; exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dispatchd", description="Emergency command centre communications daemon."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("-c", "--config", metavar="FILE",
                        help="configuration file (default: embedded defaults)")

    run = sub.add_parser("run", parents=[config], help="run the daemon in the foreground")
    run.add_argument("--simulate", action="store_true",
                     help="add emulated radios on 127.0.0.1 (a RoIP talkgroup 'sim-roip')")
    check = sub.add_parser("check-config", parents=[config],
                           help="validate a configuration and print the effective settings")
    check.add_argument("file", nargs="?", help="the file to check (or -c FILE)")

    classify = sub.add_parser(
        "classify", parents=[config],
        help="classify JSON lines ({\"text\": ...}) from FILE or stdin into JSON lines")
    classify.add_argument("file", nargs="?", help="input file (default: standard input)")
    classify.add_argument("--rules", metavar="DIR",
                          help="intake rules directory (default: intake.rules_dir, else built-in)")

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command",
                                                                     metavar="ACTION")
    db.add_parser("upgrade", parents=[config], help="apply every pending migration")
    db.add_parser("current", parents=[config], help="show the schema revision")

    user = sub.add_parser("user", help="users and tokens").add_subparsers(dest="user_command",
                                                                          metavar="ACTION")
    add = user.add_parser("add", parents=[config], help="create a user (asks for a password)")
    add.add_argument("name")
    add.add_argument("--role", required=True,
                     choices=["call_taker", "dispatcher", "supervisor", "commander", "admin"])
    add.add_argument("--display-name", default="")
    add.add_argument("--password-file", metavar="FILE",
                     help="read the password from FILE instead of prompting")
    user.add_parser("list", parents=[config], help="list users")
    passwd = user.add_parser("passwd", parents=[config], help="set a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-file", metavar="FILE")
    for action in ("disable", "enable"):
        p = user.add_parser(action, parents=[config], help=f"{action} a user")
        p.add_argument("name")
    key = user.add_parser("key", parents=[config],
                          help="let a user log in to the SSH console with a public key")
    key.add_argument("name")
    key.add_argument("keyfile", help="an OpenSSH public key file (id_ed25519.pub)")
    key.add_argument("--label", default="")
    token = user.add_parser("token", parents=[config], help="issue an API token for a program")
    token.add_argument("name")
    token.add_argument("--label", required=True)

    residents = sub.add_parser("residents", help="the broadcast registry").add_subparsers(
        dest="residents_command", metavar="ACTION")
    imp = residents.add_parser("import", parents=[config],
                               help="replace the registry with a CSV file (per-row errors)")
    imp.add_argument("file", help="CSV with a header: phone,name,language,address,lat,lon,"
                                  "district,groups,opt_out")
    imp.add_argument("--opt-out", metavar="FILE",
                     help="a file of numbers (one per line) that asked for no broadcasts")
    imp.add_argument("--strict", action="store_true",
                     help="exit 1 (and store nothing) if any row is refused")
    residents.add_parser("count", parents=[config], help="how many residents are stored")
    sip = sub.add_parser("sip", help="SIP accounts").add_subparsers(dest="sip_command",
                                                                    metavar="WHAT")
    account = sip.add_parser("account", help="SIP accounts of softphones and digest trunks")
    acct = account.add_subparsers(dest="account_command", metavar="ACTION")
    sadd = acct.add_parser("add", parents=[config],
                           help="create an account (password prompted, or one line on stdin)")
    sadd.add_argument("name")
    sadd.add_argument("--display-name", default="")
    sadd.add_argument("--password-file", metavar="FILE")
    spw = acct.add_parser("passwd", parents=[config], help="set an account's password")
    spw.add_argument("name")
    spw.add_argument("--password-file", metavar="FILE")
    acct.add_parser("list", parents=[config], help="list accounts")
    for action in ("disable", "enable"):
        p = acct.add_parser(action, parents=[config], help=f"{action} an account")
        p.add_argument("name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dispatchd`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from dispatch.daemon import dispatchd_version

        print(f"dispatchd {dispatchd_version()}")
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "run":
            return _run(_settings(args.config), args.config, simulate=args.simulate)
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "classify":
            return _classify(args)
        if args.command == "db":
            return _db(args)
        if args.command == "user":
            return _user(args)
        if args.command == "residents":
            return _residents(args)
        if args.command == "sip":
            return _sip(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    parser.print_help()
    return EXIT_USAGE


def _settings(path: str | None) -> Settings:
    return load_settings(path)


def _run(settings: Settings, config_path: str | None, *, simulate: bool = False) -> int:
    from dispatch import logs

    logs.configure(settings.log.level, settings.log.format)
    from dispatch.runtime import new_event_loop

    tls = settings.sip.enabled and any(x.transport == "tls" for x in settings.sip.listen)
    loop = new_event_loop(settings.node.event_loop, tls=tls)  # asyncio unless chosen
    asyncio.set_event_loop(loop)
    from dispatch.daemon import install_reactor

    # Twisted's reactor must be the asyncio one before anything imports it.
    reactor = install_reactor(loop)
    from dispatch.daemon import Daemon

    simulation = None
    try:
        if simulate:
            from dispatch.simulate import start_simulation

            try:
                settings, simulation = loop.run_until_complete(start_simulation(settings))
            except ValueError as exc:
                raise UsageError(str(exc)) from exc
        daemon = Daemon(settings, config_path, reactor=reactor)
        return loop.run_until_complete(daemon.serve())
    finally:
        if simulation is not None:
            simulation.close()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _check_config(args: argparse.Namespace) -> int:
    path = args.file or args.config
    if path is None:
        raise UsageError("check-config needs a FILE (or -c FILE)")
    settings = load_settings(path)
    from dispatch.dispatchconf import load_dispatch_files

    # Units, plans (预案) and roster files: one line per mistake, exit 2, as at start-up.
    files = load_dispatch_files(settings.dispatch)
    effective = effective_settings(settings)
    effective["dispatch_files"] = {"units": len(files.units), "depots": len(files.depots),
                                   "plans": [p.id for p in files.plans],
                                   "officials": len(files.officials)}
    print(json.dumps(effective, indent=2, ensure_ascii=False))
    return EXIT_OK


def _classify(args: argparse.Namespace) -> int:
    from intake.cli import run_classify

    rules = args.rules or _settings(args.config).intake.rules_dir
    if args.file is None:
        return run_classify(sys.stdin, sys.stdout, rules, sys.stderr)
    try:
        with open(args.file, encoding="utf-8") as stream:
            return run_classify(stream, sys.stdout, rules, sys.stderr)
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None


def _async(coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(coro())


def _db(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from dispatch.storage import Database

    if args.db_command is None:
        raise UsageError("db needs an action: upgrade or current")
    settings = _settings(args.config)

    async def go() -> int:
        db = Database(settings.database_url())
        try:
            if args.db_command == "upgrade":
                before = await db.schema_status()
                after = await db.upgrade()
                print(f"schema {before.current or 'empty'} -> {after.current}")
            else:
                status = await db.schema_status()
                state = "up to date" if status.up_to_date else "needs `dispatchd db upgrade`"
                print(f"current {status.current or 'empty'}, head {status.head}: {state}")
            return EXIT_OK
        except (SQLAlchemyError, OSError) as exc:
            print(f"dispatchd: database error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            await db.close()

    return _async(go)


def _read_password(path: str | None) -> str:
    if path is not None:
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read password file {path}: {exc.strerror}") from None
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise UsageError("passwords do not match")
    return first


def _user(args: argparse.Namespace) -> int:
    from dispatch.daemon import Daemon

    if args.user_command is None:
        raise UsageError("user needs an action: add, list, passwd, disable, enable or token")
    settings = _settings(args.config)
    password = None
    if args.user_command in ("add", "passwd"):
        password = _read_password(args.password_file)

    async def go() -> int:
        from dispatch.storage import SchemaOutOfDate

        # A daemon that is composed but not started: its database and user
        # store, with the same schema rules as `run`.
        daemon = Daemon(settings, args.config)
        try:
            url = settings.database_url()
            await daemon.db.ensure_schema(settings.auto_migrate(url))
            return await _user_action(daemon, args, password)
        except SchemaOutOfDate as exc:
            raise UsageError(str(exc)) from None
        finally:
            await daemon.db.close()

    return _async(go)


async def _user_action(daemon: Any, args: argparse.Namespace, password: str | None) -> int:
    from dispatch.auth import Role, UserExists

    users = daemon.users
    actor = f"cli:{getpass.getuser()}"
    try:
        if args.user_command == "add":
            assert password is not None
            await users.add_user(args.name, Role(args.role), password, actor=actor,
                                 display_name=args.display_name)
            print(f"user {args.name} added with role {args.role}")
        elif args.user_command == "list":
            for u in await users.all_users():
                flag = " (disabled)" if u.disabled else ""
                print(f"{u.name:<24} {u.role:<12} {u.display_name}{flag}")
        elif args.user_command == "passwd":
            await users.update(args.name, actor=actor, password=password)
            print(f"password of {args.name} changed")
        elif args.user_command in ("disable", "enable"):
            await users.update(args.name, actor=actor, disabled=args.user_command == "disable")
            print(f"user {args.name} {args.user_command}d")
        elif args.user_command == "key":
            import asyncssh

            try:
                text = Path(args.keyfile).read_text(encoding="utf-8").strip()
                if "PRIVATE KEY" in text:
                    raise ValueError("that is a private key; give the .pub file")
                parsed = asyncssh.import_public_key(text)
            except (OSError, asyncssh.KeyImportError, ValueError) as exc:
                raise UsageError(f"cannot use {args.keyfile} as a public key: {exc}") from None
            await users.add_key(args.name, parsed.export_public_key("openssh").decode().strip(),
                                parsed.get_fingerprint("sha256"), actor=actor,
                                label=args.label or parsed.get_comment() or "")
            print(f"key {parsed.get_fingerprint('sha256')} added for {args.name}")
        elif args.user_command == "token":
            issued = await users.issue_api_token(args.name, args.label, actor=actor)
            print(issued.token)
    except UserExists as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyError:
        print(f"dispatchd: no user {args.name!r}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def _residents(args: argparse.Namespace) -> int:
    from dispatch.daemon import Daemon

    if args.residents_command is None:
        raise UsageError("residents needs an action: import or count")
    settings = _settings(args.config)
    opt_out: list[str] = []
    if getattr(args, "opt_out", None):
        try:
            opt_out = Path(args.opt_out).read_text(encoding="utf-8-sig").splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read {args.opt_out}: {exc.strerror}") from None

    async def go() -> int:
        from dispatch.storage import SchemaOutOfDate
        from sms.errors import SmsError

        daemon = Daemon(settings, args.config)
        try:
            await daemon.db.ensure_schema(settings.auto_migrate(settings.database_url()))
            if args.residents_command == "count":
                print(await daemon.residents.count())
                return EXIT_OK
            if args.strict:
                from sms.recipients import import_registry, open_registry

                with open_registry(args.file) as stream:
                    report = import_registry(stream,
                                             default_country=settings.sms.default_country)
                if report.errors:
                    for error in report.errors[:50]:
                        print(f"{args.file}: {error}", file=sys.stderr)
                    return EXIT_FAILED
            summary = await daemon.residents.import_file(
                args.file, actor=f"cli:{getpass.getuser()}", opt_out_numbers=opt_out)
        except SchemaOutOfDate as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
        except SmsError as exc:
            raise UsageError(f"{args.file}: {exc}") from None
        finally:
            await daemon.db.close()
        for error in summary.errors[:50]:
            print(f"{args.file}: {error}", file=sys.stderr)
        print(json.dumps({k: v for k, v in summary.to_json().items() if k != "errors"}))
        return EXIT_OK

    return _async(go)


def _sip(args: argparse.Namespace) -> int:
    from dispatch.sip_store import AccountError, SqlCredentialStore
    from dispatch.storage import Database, SchemaOutOfDate

    command = getattr(args, "account_command", None)
    if args.sip_command != "account" or command is None:
        raise UsageError("sip needs: account add|passwd|list|disable|enable")
    settings = _settings(args.config)
    realm = settings.sip.registrar.realm or settings.sip.domain
    password = _read_password(args.password_file) if command in ("add", "passwd") else None

    async def go() -> int:
        import time

        db = Database(settings.database_url())
        store = SqlCredentialStore(db, time.time)
        try:
            await db.ensure_schema(settings.auto_migrate(settings.database_url()))
            if command == "add":
                assert password is not None
                await store.add(args.name, realm, password, args.display_name)
                print(f"SIP account {args.name} added (realm {realm})")
            elif command == "passwd":
                await store.update(args.name, realm=realm, password=password)
                print(f"password of SIP account {args.name} changed (realm {realm})")
            elif command in ("disable", "enable"):
                await store.update(args.name, disabled=command == "disable")
                print(f"SIP account {args.name} {command}d")
            else:
                for a in await store.all():
                    flag = " (disabled)" if a.disabled else ""
                    print(f"{a.username:<24} {a.realm:<24} {a.display_name}{flag}")
            return EXIT_OK
        except SchemaOutOfDate as exc:
            raise UsageError(str(exc)) from None
        except AccountError as exc:
            print(f"dispatchd: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except KeyError:
            print(f"dispatchd: no SIP account {args.name!r}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            await db.close()

    return _async(go)


if __name__ == "__main__":
    sys.exit(main())
