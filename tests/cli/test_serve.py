"""API keys and the service commands through the real CLI entry point."""

from __future__ import annotations

import json

from kbservice.keys import hash_key
from tests.cli.runner import Cli
from tests.cli.snapshots import check_json_keys


def test_keys_create_list_revoke(run: Cli) -> None:
    created = run.json("keys", "create", "--role", "curator", "--name", "ward-7")
    assert created["name"] == "ward-7" and created["role"] == "curator" and created["key"].startswith("kb_")
    check_json_keys("keys create", created)
    listed = run.json("keys", "list")
    check_json_keys("keys list", listed)
    assert [(k["name"], k["role"], k["revoked_at"]) for k in listed] == [("ward-7", "curator", None)]
    assert created["key"] not in json.dumps(listed)
    out, _ = run("keys", "revoke", "ward-7")
    assert "revoked" in out
    assert run.json("keys", "list")[0]["revoked_at"] is not None
    _, err = run("keys", "create", "--role", "curator", "--name", "ward-7", expect=1)
    assert "already exists" in err
    _, err = run("keys", "create", "--role", "surgeon", "--name", "x", expect=1)
    assert "unknown role 'surgeon'" in err
    _, err = run("keys", "revoke", "nobody", expect=1)
    assert "no key named 'nobody'" in err
    # Only the hash is stored, and the audit log names the key, never the key itself.
    from kbservice.config import load_settings
    from kbservice.services import build_services

    services = build_services(load_settings())
    try:
        assert services.key_store.by_hash(hash_key(created["key"])).name == "ward-7"
        audit = [(e.kind, e.actor, e.payload) for e in services.audit.store.entries()]
        assert [kind for kind, *_ in audit] == ["key.create", "key.revoke"]
        assert not any(created["key"] in payload for *_, payload in audit)
    finally:
        services.close()


def test_serve_and_bench_api_explain_themselves(run: Cli) -> None:
    out, _ = run("serve", "--help")
    assert "--workers" in out and "/v1" in out
    out, _ = run("bench", "api", "--help")
    assert "p50/p95/p99" in out
