from pathlib import Path

import pytest

from pcbsiam.config import from_dict, load_config
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


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("train.epochs=ten", "train.epochs must be an integer; got 'ten' (str)"),
        ("train.epochs=2.5", "train.epochs must be an integer; got 2.5 (float)"),
        ("train.lr=abc", "train.lr must be a number; got 'abc' (str)"),
        ("train.amp=1", "train.amp must be a boolean (true or false); got 1 (int)"),
        ("model.backbone=18", "model.backbone must be a string; got 18 (int) (quote it to keep it text)"),
        ("model.scales=abc", "model.scales must be a list of integers (e.g. [1, 2]); got 'abc' (str)"),
        ("model.scales=[1, x]", "model.scales must be a list of integers"),
        ("data.holdout_groups=g1", "data.holdout_groups must be a list of strings (e.g. [a, b]); got 'g1'"),
        ("data.stride=abc", "data.stride must be an integer or null; got 'abc'"),
        ("data.val_fraction=-0.1", "data.val_fraction must be at least 0 and below 1 (0: train on every item"),
        ("data.val_fraction=1", "data.val_fraction must be at least 0 and below 1"),
        ("data.stride=0", "data.stride must be >= 1, got 0"),
        ("data.patch=0", "data.patch must be >= 1"),
        ("train.lr=0", "train.lr must be > 0, got 0.0"),
        ("train.lr=.nan", "train.lr must be > 0, got nan"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("train.val_max_patches=0", "train.val_max_patches must be >= 1"),
        ("train.optimizer=lamb", "train.optimizer must be one of adam, adamw, sgd"),
        ("train.scheduler=step", "train.scheduler must be one of cosine, none"),
    ],
)
def test_wrong_types_and_ranges_are_sentences_naming_the_setting(override: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    assert says in str(err.value)


def test_types_accepted_as_they_should_be() -> None:
    cfg = load_config("tiny", ["train.lr=1", "data.stride=null", "train.val_max_patches=null", "model.weights=null"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.data.stride is None
    assert load_config("tiny", ["data.holdout_groups=[g1, g2]"]).data.holdout_groups == ["g1", "g2"]


@pytest.mark.parametrize(
    ("d", "says"),
    [
        ([1, 2], "a config must be a mapping of the sections model, data and train, got a list"),
        ({"train": "fast"}, "config section 'train' must be a mapping of settings"),
        ({"model": [1]}, "config section 'model' must be a mapping of settings"),
        ({"other": {}}, "unknown config section(s) ['other']"),
        ({"model": {1: 2}}, "unknown setting(s) model.1"),
    ],
)
def test_config_shapes_other_than_sections_of_settings_are_refused(d: object, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(d)  # type: ignore[arg-type]
    assert says in str(err.value)


def test_a_config_file_whose_top_level_is_not_a_mapping_is_named(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- train\n")
    with pytest.raises(ConfigError, match="list.yaml must hold a mapping .* its top level is a list"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "section.yaml").write_text("train: [1]\n")
    with pytest.raises(ConfigError, match="section 'train' must be a mapping"):
        load_config(tmp_path / "section.yaml")
    (tmp_path / "broken.yaml").write_text("train: [1\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML") as err:
        load_config(tmp_path / "broken.yaml")
    assert "\n" not in str(err.value)
