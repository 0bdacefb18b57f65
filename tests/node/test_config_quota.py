"""[network] stranger_quota_mib: the disk strangers' entries may take (swarm/quota.py), read strictly."""
from __future__ import annotations

from pathlib import Path

import pytest

from node.config import load_config
from node.configfile import CONFIG_FILE
from node.errors import ConfigError
from swarm.peerconfig import PeerConfig


def test_default_matches_the_peers_own_default(tmp_path: Path) -> None:
    config = load_config(["--home", str(tmp_path)], {})
    assert config.stranger_quota_bytes == PeerConfig().stranger_quota_bytes == 512 << 20


def test_file_sets_it_in_mib(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / CONFIG_FILE).write_text("[network]\nstranger_quota_mib = 64\n")
    assert load_config(["--home", str(tmp_path)], {}).stranger_quota_bytes == 64 << 20


@pytest.mark.parametrize("value", ["0", "-1", "\"big\"", "1.5"])
def test_a_bad_value_is_one_readable_error(tmp_path: Path, value: str) -> None:
    (tmp_path / CONFIG_FILE).write_text(f"[network]\nstranger_quota_mib = {value}\n")
    with pytest.raises(ConfigError, match="stranger_quota_mib"):
        load_config(["--home", str(tmp_path)], {})
