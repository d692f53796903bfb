"""Tenants: hashed API keys, open vs required auth, role-gated admin routes, per-tenant repositories."""

from __future__ import annotations

import json
import stat

from fastapi.testclient import TestClient

from serving.auth import TenantStore, hash_key
from tests.serving.conftest import BILLING_EXACT, DEMO_EXACT, run_cli


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_open_mode_without_tenants_is_the_local_single_user(make_app) -> None:
    app, _ = make_app()
    with TestClient(app) as client:
        health = client.get("/v1/health").json()
        assert health["auth"]["mode"] == "open" and health["auth"]["tenants"] == 0
        assert set(health["index"]) == {"demo", "billing"}
        assert client.post("/v1/query", json={"query": "how is the cart total computed"}).status_code == 200
        # The local user is the admin of its own machine.
        assert client.get("/v1/admin/tenants").status_code == 200


def test_required_auth_without_tenants_refuses_everyone(make_app) -> None:
    app, _ = make_app(env={"CODEX_AUTH": "required"})
    with TestClient(app) as client:
        health = client.get("/v1/health").json()
        assert health["auth"]["mode"] == "required" and health["index"] == {}
        assert any("no tenant exists" in r for r in health["reasons"])
        assert client.post("/v1/query", json={"query": "cart total"}).status_code == 401


def test_openapi_shows_how_to_authenticate(make_app) -> None:
    app, _ = make_app(env={"CODEX_AUTH": "required"})
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert {(s["type"], s.get("scheme") or s.get("name")) for s in schemes.values()} == {
        ("http", "bearer"), ("apiKey", "X-API-Key")}
    assert spec["paths"]["/v1/query"]["post"]["security"]  # the query route declares both


def test_cli_keys_are_stored_hashed_and_roles_gate_admin_routes(cli_home, make_app) -> None:
    code, out = run_cli("tenants", "add", "ops", "--role", "admin", "--json")
    assert code == 0
    admin_key = json.loads(out)["api_key"]
    _, out = run_cli("tenants", "add", "alice", "--role", "user", "--repos", "demo", "--json")
    alice_key = json.loads(out)["api_key"]
    _, out = run_cli("tenants", "add", "ana", "--role", "analyst", "--json")
    analyst_key = json.loads(out)["api_key"]

    tenants_file = cli_home / "serving" / "tenants.json"
    raw = tenants_file.read_text()
    assert admin_key not in raw and alice_key not in raw
    assert stat.S_IMODE(tenants_file.stat().st_mode) == 0o600
    stored = json.loads(raw)["tenants"]["alice"]
    assert stored["repos"] == ["demo"] and stored["key_hashes"][0].startswith("sha256$")
    # Salted: the same key hashes differently each time, and the stored hash verifies only the real key.
    assert hash_key(alice_key) != hash_key(alice_key)
    assert TenantStore(tenants_file).authenticate(alice_key).name == "alice"
    assert TenantStore(tenants_file).authenticate(alice_key[:-1] + "x") is None

    code, out = run_cli("tenants", "list")
    assert "auth mode: required" in out and "alice" in out and alice_key not in out

    app, log = make_app(state_dir=cli_home / "serving")
    with TestClient(app) as client:
        missing = client.post("/v1/query", json={"query": "cart total"})
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer" in missing.json()["detail"]
        assert client.post("/v1/query", json={"query": "cart total"}, headers=bearer("pcx_00000000_" + "a" * 43)
                           ).status_code == 401
        assert client.post("/v1/query", json={"query": "cart total"}, headers={"X-API-Key": alice_key}
                           ).status_code == 200

        forbidden = client.post("/v1/admin/kill-switch", json={"on": True}, headers=bearer(alice_key))
        assert forbidden.status_code == 403
        assert "role 'user'" in forbidden.json()["detail"] and "needs role admin" in forbidden.json()["detail"]
        assert client.get("/v1/admin/canary", headers=bearer(alice_key)).status_code == 403
        # Analysts read operations state but change nothing.
        assert client.get("/v1/admin/canary", headers=bearer(analyst_key)).status_code == 200
        assert client.post("/v1/admin/canary/rollback", headers=bearer(analyst_key)).status_code == 403
        listing = client.get("/v1/admin/tenants", headers=bearer(analyst_key)).json()["tenants"]
        assert {t["tenant"] for t in listing} == {"ops", "alice", "ana"}
        assert "key_hashes" not in json.dumps(listing)

        created = client.post("/v1/admin/tenants", json={"name": "bob", "role": "user", "repos": ["demo"]},
                              headers=bearer(admin_key))
        assert created.status_code == 201
        bob_key = created.json()["api_key"]

        # A user sees its own traces only; someone else's is "not found", an analyst sees all.
        trace_id = client.post("/v1/query", json={"query": "cart total"}, headers=bearer(alice_key)).json()["trace_id"]
        assert client.get(f"/v1/trace/{trace_id}", headers=bearer(alice_key)).status_code == 200
        assert client.get(f"/v1/trace/{trace_id}", headers=bearer(bob_key)).status_code == 404
        assert client.get(f"/v1/trace/{trace_id}", headers=bearer(analyst_key)).json()["tenant"] == "alice"

        # A removed tenant's key stops working on the next request.
        assert client.delete("/v1/admin/tenants/bob", headers=bearer(admin_key)).status_code == 200
        assert client.post("/v1/query", json={"query": "x"}, headers=bearer(bob_key)).status_code == 401

    assert admin_key not in log.text and alice_key not in log.text and bob_key not in log.text
    assert {r["tenant"] for r in log.records() if r["path"] == "/v1/query" and r["status"] == 200} == {"alice"}


def test_each_tenant_only_ever_sees_its_own_repository(make_app, tmp_path) -> None:
    state = tmp_path / "state"
    store = TenantStore(state / "tenants.json")
    keys = {
        "demo-team": store.add("demo-team", "user", ["demo"]),
        "billing-team": store.add("billing-team", "user", ["billing"]),
        "root": store.add("root", "admin", ["*"]),
    }
    app, _ = make_app(state_dir=state)
    with TestClient(app) as client:
        def ask(tenant: str, query: str, **extra) -> dict:
            response = client.post("/v1/query", json={"query": query, **extra}, headers=bearer(keys[tenant]))
            assert response.status_code == 200, response.text
            return response.json()

        # Sanity: with access to both, these queries really do pull towards the other repository.
        assert ask("root", BILLING_EXACT)["citations"][0]["repo"] == "billing"
        assert ask("root", DEMO_EXACT)["citations"][0]["repo"] == "demo"

        teams = (("demo-team", "demo", BILLING_EXACT), ("billing-team", "billing", DEMO_EXACT))
        for tenant, own, foreign_query in teams:
            for query in (foreign_query, "how is tax computed on an invoice", "how is the cart total computed"):
                body = ask(tenant, query, top_k=10)
                assert body["citations"], query
                assert {c["repo"] for c in body["citations"]} == {own}, (tenant, query)
                assert set(body["index_commits"]) == {own}
                trace = client.get(f"/v1/trace/{body['trace_id']}", headers=bearer(keys[tenant])).json()
                # Enforced in the store query: the other repo's chunks are not even candidates.
                assert {c["repo"] for c in trace["candidates"]} == {own}

            assert set(client.get("/v1/repos", headers=bearer(keys[tenant])).json()["repos"]) == {own}
            health = client.get("/v1/health", headers=bearer(keys[tenant])).json()
            assert set(health["index"]) == {own} and set(health["freshness"]) == {own}

        # Naming the other tenant's repository is indistinguishable from naming one that does not exist.
        foreign = client.post("/v1/query", json={"query": "tax", "repo": "billing"}, headers=bearer(keys["demo-team"]))
        ghost = client.post("/v1/query", json={"query": "tax", "repo": "ghost"}, headers=bearer(keys["demo-team"]))
        assert foreign.status_code == ghost.status_code == 404
        assert foreign.json()["detail"].replace("billing", "X") == ghost.json()["detail"].replace("ghost", "X")
        assert "billing" not in ghost.json()["detail"]
