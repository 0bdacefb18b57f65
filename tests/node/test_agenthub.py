"""The AgentHub API over a real node backend, driven by program_agenthub.md's own commands.

Every shell snippet (tests/node/hubsession.py) is copied from the seed document (seeds/004, the
AgentHub edition of program.md) and run with bash, curl and the git CLI against a real server on
127.0.0.1. The only edits: `/tmp/` points into the test's own folder (tests run side by side), and
placeholders such as <hash> and YOUR_AGENT_NAME are filled in. What the hub refuses is
tests/node/test_agenthub_refusals.py.
"""
from __future__ import annotations

import json
from pathlib import Path

from swarm import gitrepo
from tests.node.hubkit import CLASS, OPERATOR_TOKEN, KitBackend
from tests.node.hubsession import (CHILDREN, COMMITS, CREATE_CHANNEL, DIFF, LEAVES, POST, PUSH, READ, REGISTER, REVERT,
                                   checkout_of, edit_and_commit, http, no_internal_errors, registered, running_hub)

__all__ = ["no_internal_errors"]  # autouse: a 500 is a bug in every test here


# -- the whole session of an agent, in the seed's words


async def test_agent_session_with_the_seed_commands(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        kit, baseline = hub.kit, hub.kit.baseline.hex()
        alice = await registered(hub, "alice")
        again = await alice.sh(REGISTER)  # credentials saved: the snippet only loads them
        assert again == ""

        log = await alice.json(COMMITS)
        assert [c["hash"] for c in log] == [baseline]
        assert log[0]["status"] == "ok" and log[0]["val_bpb"] == 1.5 and log[0]["untrusted"] is False
        assert [c["hash"] for c in await alice.json(LEAVES)] == [baseline]

        await checkout_of(alice, baseline)
        assert (alice.checkout / "train.py").read_bytes() == await _file(kit, kit.baseline)
        commit = await edit_and_commit(alice, "# alice: a smaller learning rate")
        pushed = json.loads(await alice.sh(PUSH))
        assert pushed["hash"] == commit and pushed["parent_hash"] == baseline
        assert pushed["status"] == "queued" and pushed["position"] == 1
        assert [(s.commit.hex(), s.agent) for s in kit.queued()] == [(commit, "alice")]

        log = await alice.json(COMMITS)
        assert log[0]["hash"] == commit and log[0]["status"] == "queued" and log[0]["agent_id"] == "alice"
        assert log[0]["message"].strip() == "short description of change"

        # the node's worker takes it, runs it and claims it (here the test publishes the claim)
        assert kit.queue.take() is not None
        await kit.claim(bytes.fromhex(commit), kit.baseline, 1.4, message="short description of change")
        assert [c["hash"] for c in await alice.json(LEAVES)] == [commit]
        kids = await alice.json(CHILDREN, hash=baseline)
        assert [(c["hash"], c["agent_id"], c["val_bpb"]) for c in kids] == [(commit, "alice", 1.4)]
        diff = await alice.sh(DIFF, hash_a=baseline, hash_b=commit)
        assert "+# alice: a smaller learning rate" in diff and diff.startswith("--- a/train.py")
        status, lineage = await http(hub, "GET", f"/api/git/commits/{commit[:7]}/lineage", key=await alice.key())
        assert status == 200 and [c["hash"] for c in lineage] == [commit, baseline]

        # another agent on the same node builds on alice's commit
        bob = await registered(hub, "bob")
        await checkout_of(bob, commit)
        assert (bob.checkout / "train.py").read_text().endswith("# alice: a smaller learning rate\n")
        second = await edit_and_commit(bob, "# bob: wider model")
        assert json.loads(await bob.sh(PUSH))["parent_hash"] == commit
        assert [s.commit.hex() for s in kit.queued()] == [second]
        assert [c["hash"] for c in await bob.json(CHILDREN, hash=commit)] == [second]
        # a worse result is reverted locally, as the seed says; the queue keeps what was pushed
        await bob.sh(REVERT)

        # the message board
        created = await alice.json(CREATE_CHANNEL)
        assert created["name"] == "results" and created["description"] == "experiment results"
        assert "exists" in (await alice.json(CREATE_CHANNEL))["error"]  # 409: fine, says the seed
        result = f"commit:{commit[:7]} platform:{CLASS} val_bpb:1.4000 vram_gb:0.1 | smaller LR"
        posted = json.loads(await alice.sh(POST.replace("your message here", result)))
        assert posted["agent_id"] == "alice" and posted["untrusted"] is False
        assert posted["result"]["val_bpb"] == 1.4 and posted["result"]["commit"] == commit[:7]
        await bob.sh(POST.replace("your message here", "**bob**: trying width next"))
        board = await alice.json(READ)
        assert [(p["agent_id"], p["content"]) for p in board] == [
            ("bob", "**bob**: trying width next"), ("alice", result)]
        assert board[0]["author"] == kit.node_id and board[0]["result"] is None
        # what alice reported shows on the commit, apart from the claimed and verified numbers
        status, detail = await http(hub, "GET", f"/api/git/commits/{commit}", key=await alice.key())
        assert status == 200 and detail["val_bpb"] == 1.4 and detail["verified_val_bpb"] is None
        assert [r["id"] for r in detail["reported"]] == [posted["id"]]
        assert detail["children"] == [second]


async def _file(kit: KitBackend, commit: bytes) -> bytes:
    return await gitrepo.read_file(kit.repo, commit, "train.py")


async def test_every_route_wants_a_key_and_answers_json(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        base = hub.kit.baseline.hex()
        routes = [("POST", "/api/git/push"), ("GET", f"/api/git/fetch/{base}"), ("GET", "/api/git/commits"),
                  ("GET", f"/api/git/commits/{base}"), ("GET", f"/api/git/commits/{base}/children"),
                  ("GET", f"/api/git/commits/{base}/lineage"), ("GET", "/api/git/leaves"),
                  ("GET", f"/api/git/diff/{base}/{base}"), ("POST", "/api/channels"), ("GET", "/api/channels"),
                  ("POST", "/api/channels/results/posts"), ("GET", "/api/channels/results/posts")]
        for method, path in routes:
            for key in (None, "ash_wrong", ""):
                status, answer = await http(hub, method, path, key=key, body=b"{}")
                assert status == 401 and "Bearer" in answer["error"], (method, path)
        status, answer = await http(hub, "GET", "/api/git/leaves", headers={"Authorization": "Basic abc"})
        assert status == 401
        # the operator's token is a key too (the node's own CLI uses it)
        status, answer = await http(hub, "GET", "/api/git/leaves", key=OPERATOR_TOKEN)
        assert status == 200 and [c["hash"] for c in answer] == [base]


async def test_a_fresh_node_offers_its_baseline_from_the_first_second(tmp_path: Path) -> None:
    """Before the node's baseline run ends (no claim yet), the seed's agent finds the baseline as
    the one leaf, fetches it and builds on it."""
    async with running_hub(tmp_path, claim_baseline=False) as hub:
        kit, baseline = hub.kit, hub.kit.baseline.hex()
        assert kit.history.claims == {}
        alice = await registered(hub, "alice")
        leaves = await alice.json(LEAVES)
        assert [(c["hash"], c["status"], c["parent_hash"], c["untrusted"]) for c in leaves] == [
            (baseline, "baseline", None, False)]
        assert [c["hash"] for c in await alice.json(COMMITS)] == [baseline]
        status, shown = await http(hub, "GET", f"/api/git/commits/{baseline[:7]}", key=await alice.key())
        assert status == 200 and shown["status"] == "baseline" and shown["claims"] == [] and shown["children"] == []
        await checkout_of(alice, baseline)
        commit = await edit_and_commit(alice, "# alice: on the unclaimed baseline")
        pushed = json.loads(await alice.sh(PUSH))
        assert pushed["hash"] == commit and pushed["parent_hash"] == baseline and pushed["status"] == "queued"
        # the baseline now has a child: the queued commit is the leaf
        assert [c["hash"] for c in await alice.json(LEAVES)] == [commit]
        status, lineage = await http(hub, "GET", f"/api/git/commits/{commit}/lineage", key=await alice.key())
        assert [c["hash"] for c in lineage] == [commit, baseline]
