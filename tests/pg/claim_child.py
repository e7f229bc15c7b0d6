"""A claimer in a process of its own: `python -m tests.pg.claim_child CONNINFO NODE SEED`.

Registers NODE, prints `ready`, waits for a line on stdin, then claims random-sized
batches until the queue has no queued row left, and prints the ids it got as JSON.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from psycopg import AsyncConnection

from gateway.cluster.claims import claim
from gateway.cluster.nodes import register

NOW = 1_800_000_000.0


async def main(conninfo: str, node_id: str, seed: int) -> None:
    rng = random.Random(seed)
    got: list[str] = []
    async with await AsyncConnection.connect(conninfo) as conn:
        me = await register(conn, node_id, 60.0)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        while True:
            result = await claim(conn, me, "g", node_id, rng.randint(1, 40), NOW)
            got += [c.id for c in result.claimed]
            if not result.claimed:
                left = await (
                    await conn.execute("SELECT count(*) FROM messages WHERE state = 'queued'")
                ).fetchone()
                await conn.commit()
                if left is not None and left[0] == 0:
                    break
    print(json.dumps(got), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
