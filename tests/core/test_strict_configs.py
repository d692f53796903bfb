"""A typo in a configuration file is an error that names it, not a silently ignored key."""

from __future__ import annotations

import pytest

from codex_core.configs import AnswerConfig
from codex_core.llm.config import REPO_CONFIG, ConfigError, config_from_dict, load_config
from codex_core.retrieval import RetrievalConfig


def test_an_answer_config_with_a_typo_is_refused() -> None:
    good = AnswerConfig().to_dict()
    assert AnswerConfig.from_dict(good) == AnswerConfig()
    with pytest.raises(ValueError, match=r"'grpah_hops' \(did you mean 'graph_hops'\?\)"):
        AnswerConfig.from_dict({**good, "retrieval": {**good["retrieval"], "grpah_hops": 0}})
    with pytest.raises(ValueError, match="'embeder'"):
        AnswerConfig.from_dict({"embeder": "x"})


def test_the_models_file_with_a_typo_is_refused() -> None:
    load_config(REPO_CONFIG, env={})  # the shipped file is valid
    entry = {"name": "m", "backend": "ollama", "contex_window": 2048}
    with pytest.raises(ConfigError, match=r"'contex_window' \(did you mean 'context_window'\?\)"):
        config_from_dict({"models": [entry]}, env={})
    with pytest.raises(ConfigError, match="'resilence'"):
        config_from_dict({"resilence": {}}, env={})
    with pytest.raises(ConfigError, match=r"\[routes.small\]"):
        config_from_dict({"routes": {"small": {"chians": []}}}, env={})


def test_retired_fields_are_gone_but_every_config_keeps_its_id() -> None:
    stored = {"retrieval": {"graph_hops": 0}, "embedder": "all-MiniLM-L6-v2", "reranker": None,
              "router_policy": "configs/models.toml", "calibrator": "current", "description": "old"}
    config = AnswerConfig.from_dict(stored)
    assert not {"reranker", "router_policy", "calibrator"} & set(config.to_dict())
    # ids written before the fields went (content hashes of every field then): unchanged
    assert config.config_id == "41174c7ef110"
    old_default = {"retrieval": {}, "embedder": "all-MiniLM-L6-v2", "description": ""}
    assert AnswerConfig.from_dict(old_default).config_id == "ff7da4337abc"
    # A field added since takes, in a stored config, the value that does what configs did before it:
    # same behaviour, same id. Today's default (whole-file BM25 on) is another config, with its own id.
    assert AnswerConfig.from_dict(old_default).retrieval.file_lexical_weight == 0.0
    assert AnswerConfig.from_dict(old_default).retrieval.global_ranker is False  # the hand-set order, as then
    assert AnswerConfig.from_dict(old_default).retrieval.in_file_order == "fused"  # a file's chunks as then
    assert AnswerConfig.from_dict(old_default).retrieval.in_file_prose_weight == 0.0
    assert AnswerConfig(retrieval=RetrievalConfig(file_lexical_weight=0.0, global_ranker=False, in_file_order="fused",
                                                  in_file_prose_weight=0.0)).config_id == "ff7da4337abc"
    assert AnswerConfig(retrieval=RetrievalConfig(file_lexical_weight=0.0, global_ranker=False,
                                                  in_file_order="fused")).config_id != "ff7da4337abc"
    assert AnswerConfig(retrieval=RetrievalConfig(file_lexical_weight=0.0, global_ranker=False)).config_id != (
        "ff7da4337abc")
    assert AnswerConfig(retrieval=RetrievalConfig(file_lexical_weight=0.0)).config_id != "ff7da4337abc"
    assert AnswerConfig().retrieval.file_lexical_weight == 1.0 and AnswerConfig().config_id != "ff7da4337abc"
