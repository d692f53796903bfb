"""The Qdrant "server" the tests talk to: a real server when ``QDRANT_URL`` is set, otherwise
qdrant-client's in-memory mode.

No Qdrant server binary can be installed on the machines this project is developed on, so by
default the server side of a test is ``QdrantClient(location=":memory:")``: the same client API
(collections, metadata, aliases, filters, scroll) running in process. That is a stand-in at a
boundary that cannot run here; server-only behaviour (HNSW, payload indexes, the server's own
alias swap under load, HTTP) is then not exercised.

With ``QDRANT_URL`` (and ``QDRANT_API_KEY`` if the server wants one) set, the same tests run
against that server: every handle gets its own client built by ``Settings.qdrant_client`` (the
product's one way to build one), each test uses a collection prefix of its own
(``codextest-<random>``), and at the end deletes every alias and collection under that prefix.
The server's other collections are never touched.
"""

from __future__ import annotations

import secrets

from qdrant_client import QdrantClient

from codex_core.settings import Settings
from codex_core.vector_store import QdrantServerIndex


class QdrantUnderTest:
    """One test's view of the Qdrant server (or of its in-memory stand-in)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings or Settings.from_env()
        self.url = self._settings.qdrant_url
        self.prefix = f"codextest-{secrets.token_hex(5)}"
        self._memory = None if self.url else QdrantClient(location=":memory:")
        self._clients: list[QdrantClient] = []
        if self.url:
            try:
                self.client().get_collections()
            except Exception as exc:
                for client in self._clients:
                    client.close()
                raise RuntimeError(
                    f"QDRANT_URL={self.url} is set but that Qdrant server does not answer ({exc}); start it, "
                    "fix QDRANT_URL / QDRANT_API_KEY, or unset QDRANT_URL to run against the in-memory client"
                ) from exc

    @property
    def description(self) -> str:
        return f"the Qdrant server at {self.url}" if self.url else 'QdrantClient(location=":memory:")'

    def client(self) -> QdrantClient:
        """In memory: the one shared client (its data lives in it). A server: a new client each
        call, so a writer and a reader really are separate connections."""
        if self._memory is not None:
            return self._memory
        client = self._settings.qdrant_client()
        self._clients.append(client)
        return client

    def index(self) -> QdrantServerIndex:
        return QdrantServerIndex(self.client(), prefix=self.prefix)

    def collections(self) -> list[str]:
        """This test's collections (every version of every repo under its prefix)."""
        names = (c.name for c in self.client().get_collections().collections)
        return sorted(n for n in names if n.startswith(f"{self.prefix}__"))

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()
            return
        try:
            from qdrant_client import models

            cleaner = self.client()
            mine = f"{self.prefix}__"
            aliases = [a.alias_name for a in cleaner.get_aliases().aliases if a.alias_name.startswith(mine)]
            if aliases:
                cleaner.update_collection_aliases(
                    change_aliases_operations=[
                        models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=a)) for a in aliases
                    ]
                )
            for name in self.collections():
                cleaner.delete_collection(name)
        finally:
            for client in self._clients:
                client.close()
