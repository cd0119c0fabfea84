"""The command table: word prefixes, ambiguity, bad lines, completion, roles."""

from __future__ import annotations

import pytest

from dispatch.auth import Permission, Principal, Role
from dispatch.commands import Command, CommandError, Commands, Invocation, split


def table() -> Commands:
    cmds = Commands()

    async def echo(inv: Invocation) -> str:
        return " ".join(inv.args)

    for words, perm in [(("show", "services"), None), (("show", "status"), None),
                        (("show", "audit"), Permission.AUDIT_READ), (("help",), None)]:
        cmds.add(Command(words, perm, "x", echo))
    return cmds


TAKER = Principal(1, "ct", Role.CALL_TAKER)
ADMIN = Principal(2, "root", Role.ADMIN)


@pytest.mark.parametrize(("line", "words"), [
    ("show services", ("show", "services")),
    ("sh serv", ("show", "services")),
    ("show stat", ("show", "status")),
    ("sh a 5", ("show", "audit")),
    ("help", ("help",)),
])
def test_prefixes_find_the_command(line: str, words: tuple[str, ...]) -> None:
    assert table().find(split(line))[0].words == words


@pytest.mark.parametrize(("line", "message", "status"), [
    ("show s", "unknown command 'show s'", 2),  # ambiguous: services or status
    ("launch", "unknown command 'launch'", 2),
    ("show 'unclosed", "cannot parse the line", 2),
    ("show\x1b[2J services", "control characters", 2),
    ("x" * 5000, "longer than 4096", 2),
])
async def test_bad_lines(line: str, message: str, status: int) -> None:
    with pytest.raises(CommandError, match=message) as err:
        await table().run(line, ADMIN)
    assert err.value.status == status


async def test_roles_and_arguments() -> None:
    assert await table().run('sh audit "a b" c', ADMIN) == "a b c"
    with pytest.raises(CommandError, match="role call_taker may not audit.read") as err:
        await table().run("show audit", TAKER)
    assert err.value.status == 1


def test_completion_follows_role() -> None:
    cmds = table()
    assert cmds.complete("sh", ADMIN) == ["show"]
    assert cmds.complete("show s", ADMIN) == ["services", "status"]
    assert cmds.complete("show a", ADMIN) == ["audit"]
    assert cmds.complete("show a", TAKER) == []
    with pytest.raises(ValueError, match="registered twice"):
        cmds.add(Command(("help",), None, "again", cmds.find(["help"])[0].handler))
