import pytest

from pcbsiam.config import load_config
from pcbsiam.errors import ConfigError


def test_overrides_are_typed_and_checked() -> None:
    cfg = load_config("tiny", ["data.context=8", "model.input_size=80", "model.scales=[2,3]"])
    assert cfg.data.context == 8 and cfg.model.input_size == 80 and cfg.model.scales == [2, 3]
    assert load_config("tiny").data.context == 0  # the protocol's patch alone unless asked
    with pytest.raises(ConfigError, match="data.context must be >= 0"):
        load_config("tiny", ["data.context=-2"])
    with pytest.raises(ConfigError, match="set data.register=true"):
        load_config("tiny", ["data.local_shift=3"])
    assert load_config("tiny", ["data.register=true", "data.local_shift=3"]).data.local_shift == 3
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config("tiny", ["data.contxt=8"])
    with pytest.raises(ConfigError, match="model.mode"):
        load_config("tiny", ["model.mode=late"])


def test_every_shipped_preset_loads_and_sizes_its_input() -> None:
    from pcbsiam.config import PRESET_DIR

    names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    assert {"paper", "cpu-small", "cpu-stack", "cpu-stack-ctx", "tiny"} <= set(names)
    for name in names:
        cfg = load_config(name)
        if cfg.data.context:  # a context preset feeds the crop unresized
            assert cfg.model.input_size == cfg.data.patch + 2 * cfg.data.context, name
