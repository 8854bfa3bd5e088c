"""--set parsing and the configuration's checks."""

import pytest

from fss_train.config import make_config, parse_overrides


def test_parse_overrides_yaml_scalars_and_nested_keys():
    out = parse_overrides(["lr_per_64=0.02", "mosaic=0", "amp=false", "assigner_params.rho=0.25",
                           "assigner_params.dynamic_k=iou", "val="])
    assert out == {"lr_per_64": 0.02, "mosaic": 0, "amp": False, "assigner_params": {"rho": 0.25,
                                                                                     "dynamic_k": "iou"}, "val": ""}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["lr_per_64"])


def test_make_config_checks_keys_and_types():
    cfg = make_config({"epochs": 3}, {"mosaic": 0, "assigner_params": {"rho": 0.25}})
    assert cfg.mosaic == 0.0 and isinstance(cfg.mosaic, float) and cfg.assigner_params == {"rho": 0.25}
    with pytest.raises(ValueError, match="unknown config key 'lr'.*lr_per_64"):
        make_config(overrides={"lr": 0.1})
    with pytest.raises(ValueError, match="amp must be true/false"):
        make_config(overrides={"amp": "yes"})
    with pytest.raises(ValueError, match="epochs must be int"):
        make_config(overrides={"epochs": "ten"})
    assert make_config(overrides={"batch": 32, "lr_per_64": 0.02}).lr == pytest.approx(0.01)
