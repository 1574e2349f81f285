import pytest

from pcbsiam.config import load_config
from pcbsiam.errors import ConfigError


def test_overrides_are_typed_and_checked() -> None:
    cfg = load_config("tiny", ["data.context=8", "model.input_size=80", "model.scales=[2,3]"])
    assert cfg.data.context == 8 and cfg.model.input_size == 80 and cfg.model.scales == [2, 3]
    assert load_config("tiny").data.context == 0  # the protocol's patch alone unless asked
    with pytest.raises(ConfigError, match="data.context must be >= 0"):
        load_config("tiny", ["data.context=-2"])
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config("tiny", ["data.contxt=8"])
    with pytest.raises(ConfigError, match="model.mode"):
        load_config("tiny", ["model.mode=late"])
