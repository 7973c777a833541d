"""kexue.config: params validation fails fast and names the bad key and value."""
import pytest
import yaml

from kexue.config import (PARAMS_FILE, SCALES_FILE, ParamsError, chapter_params, load_yaml,
                          validate_params, validate_section)


def write(tmp_path, params, scales=None):
    pf, sf = tmp_path / "params.yaml", tmp_path / "scales.yaml"
    pf.write_text(yaml.safe_dump(params))
    sf.write_text(yaml.safe_dump(scales or {}))
    return pf, sf


def test_committed_params_and_scales_are_valid():
    validate_params(load_yaml(PARAMS_FILE), load_yaml(SCALES_FILE))
    for scale in ("smoke", "default", "gpu"):
        p = chapter_params("adax", overrides={"common": {"scale": scale}})
        assert p["scale"] == scale


def test_scale_preset_applies_on_top(tmp_path):
    pf, sf = write(tmp_path, {"common": {"scale": "smoke"}, "adax": {"epochs": 7, "lr": 0.01}},
                   {"adax": {"smoke": {"epochs": 1}}})
    p = chapter_params("adax", pf, sf)
    assert p["epochs"] == 1 and p["lr"] == 0.01 and p["seed"] == 0
    pf, sf = write(tmp_path, {"common": {"scale": "default"}, "adax": {"epochs": 7}},
                   {"adax": {"smoke": {"epochs": 1}}})
    assert chapter_params("adax", pf, sf)["epochs"] == 7


@pytest.mark.parametrize("section,values,match", [
    ("adax", {"lr": "fast"}, r"adax\.lr='fast': expected float, got str"),
    ("adax", {"lr": -0.1}, r"adax\.lr=-0\.1: must be >= 0"),
    ("adax", {"n_seeds": 2.5}, r"adax\.n_seeds=2\.5: expected int"),
    ("adax", {"n_seeds": True}, r"adax\.n_seeds=True: expected int"),
    ("adax", {"epoch": 3}, r"unknown key adax\.epoch=3"),
    ("common", {"scale": "huge"}, r"common\.scale='huge': must be one of"),
    ("common", {"device": "tpu"}, r"common\.device='tpu'"),
    ("adax", {"beta2": float("nan")}, r"adax\.beta2=nan: must be finite"),
])
def test_bad_values_are_named(section, values, match):
    with pytest.raises(ParamsError, match=match):
        validate_section(section, values)


def test_int_is_accepted_for_float():
    assert validate_section("adax", {"lr": 1})["lr"] == 1.0


def test_unknown_section_and_bad_scale_preset(tmp_path):
    with pytest.raises(ParamsError, match="unknown params section 'adaxx'"):
        validate_params({"adaxx": {}})
    pf, sf = write(tmp_path, {"common": {}, "adax": {}}, {"adax": {"smoke": {"epochs": 0}}})
    with pytest.raises(ParamsError, match=r"adax\.epochs=0: must be >= 1"):
        chapter_params("adax", pf, sf)
