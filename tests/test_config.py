"""kexue.config: params validation fails fast and names the bad key and value."""
import pytest
import yaml

from kexue.config import (PARAMS_FILE, SCALES_FILE, ParamsError, chapter_params, load_yaml, schema_defaults,
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


def test_params_yaml_holds_the_schema_defaults():
    # `apply_preset` tells a hand-set value from a default by comparing with the schema.
    for section, values in load_yaml(PARAMS_FILE).items():
        assert values == schema_defaults(section), section


def test_scale_preset_fills_defaults_and_explicit_values_win(tmp_path):
    default_epochs = schema_defaults("adax")["epochs"]
    scales = {"adax": {"smoke": {"epochs": 1, "n_seeds": 2}}}
    pf, sf = write(tmp_path, {"common": {"scale": "smoke"}, "adax": {"epochs": default_epochs, "lr": 0.01}}, scales)
    p = chapter_params("adax", pf, sf)
    assert p["epochs"] == 1 and p["n_seeds"] == 2 and p["lr"] == 0.01 and p["seed"] == 0
    # A value set by hand (not the default) wins over the preset: what DVC records is what runs.
    pf, sf = write(tmp_path, {"common": {"scale": "smoke"}, "adax": {"epochs": 7}}, scales)
    p = chapter_params("adax", pf, sf)
    assert p["epochs"] == 7 and p["n_seeds"] == 2
    pf, sf = write(tmp_path, {"common": {"scale": "default"}, "adax": {"epochs": 7}}, scales)
    assert chapter_params("adax", pf, sf)["epochs"] == 7


def test_a_chapter_validates_only_its_own_section(tmp_path):
    pf, sf = write(tmp_path, {"common": {}, "adax": {}, "gan": {"lam": -5.0}})
    assert chapter_params("adax", pf, sf)["lr"] == schema_defaults("adax")["lr"]
    with pytest.raises(ParamsError, match=r"gan\.lam=-5\.0"):
        chapter_params("gan", pf, sf)


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


def test_a_number_yaml_reads_as_a_string_is_explained(tmp_path):
    from kexue.config import ParamsError, chapter_params
    params = tmp_path / "params.yaml"
    params.write_text("common:\n  seed: 0\nadax:\n  lr: 1e-3\n")
    with pytest.raises(ParamsError, match=r"adax\.lr='1e-3': expected float, got str \(YAML reads 1e-3 as a string: "
                                          r"a float in exponent form needs a dot, write 1\.0e-3\)"):
        chapter_params("adax", params_file=params, scales_file=tmp_path / "none.yaml")
    params.write_text("common:\n  seed: '3'\n")
    with pytest.raises(ParamsError, match=r"common\.seed='3': expected int, got str \(YAML read '3' as a string, "
                                          r"probably quoted"):
        chapter_params("common", params_file=params, scales_file=tmp_path / "none.yaml")
    params.write_text("common:\n  seed: 1.0e-3\n")            # the suggested spelling is a float
    with pytest.raises(ParamsError, match=r"expected int, got float$"):
        chapter_params("common", params_file=params, scales_file=tmp_path / "none.yaml")


def test_duplicate_keys_are_an_error(tmp_path):
    from kexue.config import ParamsError, chapter_params, load_yaml
    params = tmp_path / "params.yaml"
    params.write_text("common:\n  seed: 0\n  threads: 2\n  seed: 5\n")
    with pytest.raises(ParamsError, match=r"params.yaml: duplicate key 'seed' \(line 2 and line 4\): keep one"):
        chapter_params("common", params_file=params, scales_file=tmp_path / "none.yaml")
    params.write_text("common:\n  seed: 0\ncommon:\n  seed: 1\n")
    with pytest.raises(ParamsError, match="duplicate key 'common'"):
        load_yaml(params)
    params.write_text("common:\n  seed: 4\nadax:\n  seed_like: {a: 1}\n")
    assert load_yaml(params)["common"]["seed"] == 4
