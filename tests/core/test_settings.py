"""Declared settings: conversion of every source, open tables, the hook's declarations."""

from __future__ import annotations

import pytest

from wrencore import ConfigError
from wrencore.config import Config
from wrencore.settings import Setting, convert, tables


def test_environment_text_becomes_typed_values():
    config = Config(env={"WRENCORE_SPECULATION": "yes", "WRENCORE_COMPLETION_CHANNEL": "off",
                         "WRENCORE_LOCAL__WORKERS": " 3 ", "WRENCORE_TIMEOUT": "2.5",
                         "WRENCORE_AWS_SQS_EC2__SECURITY_GROUP_IDS": "sg-1, sg-2"},
                    file="")
    assert config.get("speculation") is True and config.get("completion_channel") is False
    assert config.get("timeout") == 2.5 and config.section("local")["workers"] == 3
    assert config.section("aws_sqs_ec2")["security_group_ids"] == ["sg-1", "sg-2"]
    assert config.source("local.workers") == "environment variable WRENCORE_LOCAL__WORKERS"


def test_types_bounds_and_choices():
    workers = Setting("workers", "int", None, "w", minimum=1)
    assert convert(workers, "4") == 4 and convert(workers, 4.0) == 4
    for bad in ("four", 2.5, True, [1]):
        with pytest.raises(ConfigError, match="is not an int"):
            convert(workers, bad, "local", "somewhere")
    with pytest.raises(ConfigError, match=r"\[local\] workers = 0 \(from here\) must be at "
                                          r"least 1"):
        convert(workers, 0, "local", "here")
    timeout = Setting("timeout", "float", None, "t", greater_than=0)
    with pytest.raises(ConfigError, match="must be greater than 0"):
        convert(timeout, 0)
    with pytest.raises(ConfigError, match="is not a list of strings"):
        convert(Setting("ids", "list[str]", [], "i"), 5)
    requirements = Setting("requirements", "str or list[str]", None, "r")
    assert convert(requirements, "reqs.txt") == "reqs.txt"
    assert convert(requirements, ["a", "b"]) == ["a", "b"]


def test_open_tables_pass_unknown_keys_and_check_known_ones():
    assert tables()["worker"].open
    config = Config({"worker": {"crash_redelivery": 5, "batch_size": "4"}}, env={}, file="")
    assert config.section("worker") == {"crash_redelivery": 5, "batch_size": 4}
    with pytest.raises(ConfigError, match=r"\[worker\] batch_size = 0"):
        Config({"worker": {"batch_size": 0}}, env={}, file="")


def test_a_table_and_a_key_are_not_confused():
    with pytest.raises(ConfigError, match="'chunksize' .* is a top-level setting, not a table"):
        Config({"chunksize": {"x": 1}}, env={}, file="")
    with pytest.raises(ConfigError, match=r"config local = 4 .* must be a table"):
        Config({"local": 4}, env={}, file="")


def test_unrelated_wrencore_variables_are_left_alone():
    Config(env={"WRENCORE_MODULE_CACHE": "/x", "WRENCORE_RUNTIME_HASH": "abc",
                "WRENCORE_SOMETHING_ELSE": "1"}, file="")
    with pytest.raises(ConfigError, match="WRENCORE_CHUNKSIZ; did you mean WRENCORE_CHUNKSIZE"):
        Config(env={"WRENCORE_CHUNKSIZ": "2"}, file="")
