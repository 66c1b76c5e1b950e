"""Two processes writing one SQLite file (``mlservice serve`` and ``mlservice bot`` may share it):
write units begin with ``BEGIN IMMEDIATE``, so one that reads first never fails with "database is
locked" when the other process committed meanwhile, and no update is lost."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from mlservice.migrations import runner

WRITER = r"""
import asyncio, json, sys, uuid
from mlservice.db import Database
from mlservice.wallet import service as wallet

async def main(url, user_ids, rounds):
    db = Database(url)
    errors = []
    for n in range(rounds):
        for user_id in user_ids:
            try:
                # A unit that reads (the wallet, with its lock on PostgreSQL) before it writes.
                async with db.session(write=True) as session:
                    await wallet.top_up(session, uuid.UUID(user_id), 1)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
    await db.dispose()
    print(json.dumps(errors))

asyncio.run(main(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])))
"""

ROUNDS = 60


async def test_two_processes_write_one_sqlite_file_without_locking_errors(tmp_path: Path) -> None:
    import uuid

    from mlservice.db import Database
    from mlservice.users.tables import User
    from mlservice.wallet import service as wallet

    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    await asyncio.to_thread(runner.upgrade, url, "head")
    db = Database(url)
    users = [uuid.uuid4() for _ in range(3)]
    async with db.session(write=True) as session:
        for i, user_id in enumerate(users):
            session.add(User(id=user_id, email=f"u{i}@example.com", hashed_password="x"))
            await session.flush()
            await wallet.create_wallet(session, user_id, 0)
    await db.dispose()

    ids = ",".join(str(u) for u in users)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, url, ids, str(ROUNDS), stdout=asyncio.subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 300)
    errors = [e for out, _ in outputs for e in json.loads(out.decode().strip().splitlines()[-1])]
    assert errors == []

    db = Database(url)
    async with db.session() as session:
        balances = [(await wallet.get_wallet(session, u)).balance for u in users]
    await db.dispose()
    # Every top-up of both processes landed: no lost update.
    assert balances == [2 * ROUNDS] * len(users)
