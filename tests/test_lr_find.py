"""The learning-rate finder: the probe config, the plateau rule, the suggestion, and the CLI on the tiny model."""

import json
import math
import random

import pytest
from conftest import read_events, run_cli, write_config

import trainer.__main__ as cli
import trainer.experiments.lr_find as lr_find_module
import trainer.training.start as start
from trainer.checks.advice import config_advice
from trainer.common.errors import UserError
from trainer.config.io import validate_config
from trainer.experiments.lr_find import (
    LrSuggestion,
    describe,
    find_plateau,
    lr_find,
    plateau_start,
    probe_config,
    settled_early,
    suggest,
)
from trainer.presets.format import read_preset
from trainer.presets.library import SHIPPED_DIR


def rising_then_flat(level=1e-4, rise=40, flat=60):
    """d·lr as D-Adaptation draws it: up by orders of magnitude from d0 = 1e-6, then level."""
    return [(s, level * 10 ** (-2 * (1 - s / rise)) if s < rise else level) for s in range(1, rise + flat + 1)]


# --- the plateau rule on synthetic curves -----------------------------------------------------------------
def test_rising_then_flat_gives_the_flat_value():
    curve = rising_then_flat()
    assert find_plateau(curve) == pytest.approx(1e-4)
    assert 35 <= plateau_start(curve) <= 41


def test_still_rising_gives_the_last_values_and_says_so():
    curve = [(s, 1e-6 * 1.05 ** s) for s in range(1, 101)]
    assert plateau_start(curve) is None
    assert find_plateau(curve) == pytest.approx(curve[-1][1], rel=0.1)
    assert find_plateau(curve) > curve[50][1] * 2  # not a median over the whole run


def test_noise_and_single_spikes_do_not_move_the_plateau():
    noise = random.Random(0)
    curve = [(s, v * (1 + noise.uniform(-0.05, 0.05))) for s, v in rising_then_flat(level=2e-4, flat=160)]
    for index in (70, 120, 180):  # one-step outliers, ten times too high
        curve[index] = (curve[index][0], 2e-3)
    assert plateau_start(curve) is not None
    assert find_plateau(curve) == pytest.approx(2e-4, rel=0.03)


def test_a_short_curve_never_counts_as_settled():
    assert plateau_start([(s, 1e-4) for s in range(1, 6)]) is None
    assert find_plateau([(1, 3e-5)]) == 3e-5
    with pytest.raises(ValueError):
        find_plateau([])


# --- the suggestion: the seeds' rules, as config keys -------------------------------------------------------
def test_settings_follow_the_rules_and_apply_to_the_users_config(make_config, tmp_path):
    user = make_config(optimizer_type="AdamW", optimizer_args=["weight_decay=0.1"], lr_scheduler="cosine_with_restarts")
    result = suggest(validate_config(user), rising_then_flat(level=3e-4), "DAdaptAdam", tmp_path)
    p = result.plateau
    assert p == pytest.approx(3e-4) and result.settled
    assert set(result.settings) == {"AdamW", "AdamW8bit", "Lion"}
    low, high = result.text_encoder_range
    assert (low, high) == (pytest.approx(p / 10, rel=1e-3), pytest.approx(p / 2, rel=1e-3))
    for name, keys in result.settings.items():
        unet = keys["unet_lr"]
        assert unet == pytest.approx(p / 3 if name == "Lion" else p, rel=1e-3)
        assert keys["learning_rate"] == unet and keys["optimizer_type"] == name
        assert unet / 10 * 0.999 <= keys["text_encoder_lr"] <= unet / 2 * 1.001
        assert keys["lr_scheduler"] == "cosine_with_restarts"  # the user's schedule stays
        applied = validate_config({**user, **keys})  # one click gives a valid config
        assert applied.optimizer_type == name and applied.unet_lr == unet
    # the user's optimizer_args were written for AdamW: they stay there and nowhere else
    assert result.settings["AdamW"]["optimizer_args"] == ["weight_decay=0.1"]
    assert result.settings["Lion"]["optimizer_args"] == []


def test_a_suggestion_stays_below_what_danlus_advice_calls_too_high(make_config, tmp_path):
    """A plateau of 5e-3 at alpha = dim is above the rate advice warns about for AdamW (1e-3) and Lion (3e-4):
    the suggestion is capped below it, says what was found, and the applied config draws no high_lr advice."""
    user = make_config(network_dim=8, network_alpha=8)
    result = suggest(validate_config(user), rising_then_flat(level=5e-3), "DAdaptAdam", tmp_path)
    assert result.plateau == pytest.approx(5e-3)
    assert result.capped["AdamW"] == {"found": 5e-3, "ceiling": 1e-3}
    assert result.capped["Lion"]["found"] == pytest.approx(5e-3 / 3, rel=1e-2)
    for name, keys in result.settings.items():
        applied = validate_config({**user, **keys})
        assert "high_lr" not in {advice.code for advice in config_advice(applied)}, name
    assert result.settings["AdamW"]["unet_lr"] == pytest.approx(9e-4)
    assert "Danlu warns that AdamW burns from 0.001" in describe(result)
    # at alpha/dim 1/8 the LoRA learns at an eighth of the rate: the same plateau is not capped
    low_alpha = suggest(validate_config(make_config(network_dim=8, network_alpha=1)),
                        rising_then_flat(level=5e-3), "DAdaptAdam", tmp_path)
    assert "AdamW" not in low_alpha.capped and low_alpha.settings["AdamW"]["unet_lr"] == pytest.approx(5e-3)


def test_a_probe_ends_early_once_the_curve_has_levelled_off():
    assert not settled_early(rising_then_flat(rise=40, flat=10))  # flat for a fifth of the steps: not yet
    assert settled_early(rising_then_flat(rise=40, flat=60))
    assert not settled_early(rising_then_flat(rise=10, flat=40))  # 50 steps: too few to call it a plateau
    assert not settled_early([(s, 1e-6 * 1.05 ** s) for s in range(1, 301)])  # still rising


def test_the_watch_stops_a_probe_whose_curve_has_levelled_off(tmp_path, monkeypatch):
    """SettleWatch asks the training to stop as the GUI's Stop does (RUN/STOP), once settled_early."""
    monkeypatch.setattr(lr_find_module, "WATCH_S", 0.01)
    steps = [{"type": "step", "step": s, "loss": 0.1, "lr": 1.0, "lr_effective": {"unet": v}}
             for s, v in rising_then_flat(rise=40, flat=60)]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in steps[:50]))
    watch = lr_find_module.SettleWatch(tmp_path)
    watch.start()
    watch.join(0.3)
    assert watch.is_alive() and not (tmp_path / "STOP").exists()  # 50 steps: not settled yet
    with (tmp_path / "events.jsonl").open("a") as events:
        events.write("".join(json.dumps(e) + "\n" for e in steps[50:]))
    watch.join(5)
    assert not watch.is_alive() and watch.fired and (tmp_path / "STOP").exists()


def test_adafactors_schedule_is_not_suggested_for_adamw(make_config, tmp_path):
    user = make_config(optimizer_type="AdaFactor", lr_scheduler="adafactor")
    result = suggest(validate_config(user), rising_then_flat(), "Prodigy", tmp_path)
    assert {keys["lr_scheduler"] for keys in result.settings.values()} == {"cosine"}
    validate_config({**user, **result.settings["AdamW"]})


def test_describe_reports_the_plateau_or_that_it_was_not_reached(make_config, tmp_path):
    config = validate_config(make_config())
    flat = describe(suggest(config, rising_then_flat(), "DAdaptAdam", tmp_path))
    assert "plateau: 0.0001 (flat from step" in flat and "Lion       unet_lr 3.33e-05" in flat
    rising = describe(suggest(config, [(s, 1e-6 * 1.1 ** s) for s in range(1, 41)], "DAdaptAdam", tmp_path))
    assert "still rising at step 40" in rising and "--steps 80" in rising


# --- the probe config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer, preset", [("DAdaptAdam", "lr-finder-dadaptation"),
                                               ("Prodigy", "lr-finder-prodigy")])
def test_probe_uses_the_presets_optimizer_settings_and_keeps_outputs_in_the_run(make_config, tmp_path,
                                                                                 optimizer, preset):
    user = validate_config(make_config(optimizer_type="Lion", optimizer_args=["weight_decay=0.1"],
                                       learning_rate=3e-5, text_encoder_lr=1e-5, lr_warmup_steps=10,
                                       save_every_n_steps=2, save_state=True, sample_prompts=["a cat"],
                                       sample_every_n_steps=1, max_train_epochs=2, network_dim=8))
    probe = probe_config(user, tmp_path / "run", optimizer, steps=17)
    shipped = read_preset(SHIPPED_DIR / f"{preset}.yaml").settings
    assert probe.optimizer_type == optimizer and probe.optimizer_args == shipped["optimizer_args"]
    assert probe.learning_rate == probe.unet_lr == probe.text_encoder_lr == 1.0
    assert (probe.lr_scheduler, probe.lr_warmup_steps) == ("constant", 0)
    assert (probe.max_train_steps, probe.max_train_epochs) == (17, None)
    assert probe.output_dir == str(tmp_path / "run") and probe.output_name == "test-lrfind"
    assert not (probe.save_every_n_steps or probe.save_state or probe.sample_prompts or probe.sample_every_n_steps)
    assert probe.network_dim == 8 and probe.train_batch_size == user.train_batch_size  # the rest is the user's


def test_probe_length_defaults_to_the_usual_but_not_beyond_the_training(make_config, tmp_path):
    short = validate_config(make_config(max_train_steps=40))
    assert probe_config(short, tmp_path, "DAdaptAdam").max_train_steps == 40
    long = validate_config(make_config(max_train_steps=None, max_train_epochs=500))
    assert probe_config(long, tmp_path, "DAdaptAdam", cuda=True).max_train_steps == 300
    assert probe_config(long, tmp_path, "Prodigy", cuda=True).max_train_steps == 1000
    # without a GPU a step takes seconds: a third of it (and SettleWatch ends it once flat)
    assert probe_config(long, tmp_path, "DAdaptAdam", cuda=False).max_train_steps == 100
    assert probe_config(long, tmp_path, "Prodigy", cuda=False).max_train_steps == 300
    with pytest.raises(UserError, match="Lion"):
        probe_config(long, tmp_path, "Lion")


# --- failures of the probe ------------------------------------------------------------------------------------
def fake_training(events: list[dict], code: int = 0):
    def run(config, run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        return code

    return run


def test_no_adapted_step_size_exits_2_with_a_message(make_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(start, "run_training", fake_training([{"type": "step", "step": 1, "loss": 0.1, "lr": 1.0}]))
    path = write_config(tmp_path / "c.yaml", make_config())
    assert cli.main(["lr-find", str(path), "--run-dir", str(tmp_path / "run")]) == cli.EXIT_BAD_INPUT
    assert "logged no adapted step size (d·lr)" in capsys.readouterr().err
    with pytest.raises(UserError):
        lr_find(validate_config(make_config()), run_dir=tmp_path / "run2")


def test_a_failed_probe_exits_1(make_config, tmp_path, monkeypatch):
    monkeypatch.setattr(start, "run_training", fake_training([], code=cli.EXIT_FAILED))
    path = write_config(tmp_path / "c.yaml", make_config())
    assert cli.main(["lr-find", str(path), "--run-dir", str(tmp_path / "run")]) == cli.EXIT_FAILED


# --- end to end on the tiny model ----------------------------------------------------------------------------
def test_cli_probe_on_tiny_sd1_suggests_a_finite_rate_and_leaves_the_users_lora_alone(make_config, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "test.safetensors").write_bytes(b"the user's LoRA")
    path = write_config(tmp_path / "c.yaml", make_config(max_train_steps=None, max_train_epochs=10))
    result = run_cli("lr-find", path, "--steps", "12", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)  # stdout is the JSON object alone; the training log went to stderr
    assert "step 12/12" in result.stderr
    plateau = found["plateau"]
    assert math.isfinite(plateau) and plateau > 0 and found["steps"] == 12 and found["optimizer"] == "DAdaptAdam"
    lion = found["capped"].get("Lion", {}).get("found") or found["settings"]["Lion"]["unet_lr"]
    assert lion == pytest.approx(plateau / 3, rel=1e-2) and found["ended"] == "completed"
    run_dir = out / "runs" / next(iter(p.name for p in (out / "runs").iterdir()))
    assert found["run_dir"] == str(run_dir)
    assert json.loads((run_dir / "lr_find.json").read_text()) == found
    logged = [(e["step"], e["lr_effective"]["unet"]) for e in read_events(run_dir) if e["type"] == "step"]
    assert [tuple(point) for point in found["curve"]] == logged
    assert (out / "test.safetensors").read_bytes() == b"the user's LoRA"
    assert sorted(p.name for p in out.iterdir()) == ["runs", "test.safetensors"]  # nothing else next to it
    LrSuggestion(**{**found, "run_dir": run_dir})  # the JSON has exactly the dataclass's fields
