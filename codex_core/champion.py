"""The one way a configuration becomes (or stops being) the champion.

The MLflow registry alias ``champion`` is the source of truth. Both roads to it go through here:
``ab_judgement`` settling a challenger on the evaluation set, and an operator promoting a canary
(``POST /v1/admin/canary/promote`` or ``feriactl canary promote``, whichever process serves it).
Every move is mirrored to ``CODEX_HOME/configs/served/champion.json`` (``ConfigStore.served``), which
serving reads without MLflow: the config it answers with follows the alias whichever road moved it.
"""

from __future__ import annotations

from codex_core.config_registry import CHAMPION, ConfigRegistry, RegisteredConfig
from codex_core.configs import AnswerConfig, ConfigStore
from codex_core.home import CodexHome
from codex_core.settings import Settings
from codex_core.tracking import Tracker


class ChampionService:
    def __init__(self, registry: ConfigRegistry):
        self.registry = registry

    def _serve(self, champion: RegisteredConfig) -> None:
        self.registry.store.serve(champion.config_id, champion.version)

    @classmethod
    def for_home(cls, home: CodexHome, settings: Settings | None = None) -> ChampionService:
        """The registry of ``MLFLOW_TRACKING_URI`` (or the embedded sqlite under ``home``)."""
        tracker = Tracker.from_settings(settings or Settings.from_env(), home)
        return cls(ConfigRegistry(tracker, ConfigStore(home.configs_dir)))

    def champion(self) -> RegisteredConfig:
        """The current champion; the built-in default configuration is registered as one when none is."""
        return self.registry.by_alias(CHAMPION) or self.registry.register(
            AnswerConfig(description="default configuration"), alias=CHAMPION
        )

    def promote_config(self, config_id: str) -> RegisteredConfig:
        """``config_id`` (a saved config) becomes the champion, e.g. after a successful canary."""
        champion = self.registry.register(self.registry.store.load(config_id), alias=CHAMPION)
        self._serve(champion)
        return champion

    def settle(self, challenger: RegisteredConfig, *, promote: bool) -> None:
        """The verdict on the ``challenger`` alias: promoted to champion, or the alias is cleared."""
        if promote:
            self.registry.promote(challenger)
            self._serve(challenger)
        else:
            self.registry.reject()
