"""Side-by-side runs: --vary parsing, the variations and their checks, the sweep queue, the compare grid."""

import json
import shutil
from pathlib import Path

import pytest
import safetensors
import yaml
from conftest import read_events, run_cli, write_config

from trainer.common.errors import ConfigError, UserError
from trainer.experiments.compare import compare
from trainer.experiments.sweep import parse_vary, plan_sweep, variations
from trainer.experiments.sweep_run import read_sweep, run_sweep, sweep_command

PROMPTS = ["red circle --w 64 --h 64 --s 2", "blue square --w 64 --h 64 --s 2 --d 11"]
NO_GPU = (False, False)  # plan_sweep's gpu facts, so no test waits for the child process that asks the GPU


@pytest.fixture(scope="module")
def two_image_dir(tmp_path_factory, train_dir) -> Path:
    """Two same-sized images in one bucket: batch 2 makes one step per epoch, so two epochs take two steps."""
    folder = tmp_path_factory.mktemp("two") / "train" / "1_circle"
    folder.mkdir(parents=True)
    for stem in ("circle_00", "circle_03"):
        for suffix in (".png", ".txt"):
            shutil.copy(train_dir / "5_circle" / f"{stem}{suffix}", folder)
    return folder.parent


@pytest.fixture
def sweep_config(make_config, two_image_dir):
    return make_config(train_data_dir=str(two_image_dir), max_train_steps=None, max_train_epochs=2,
                       sample_prompts=PROMPTS, sample_every_n_epochs=1)


# --- --vary and the variations ---------------------------------------------------------------------------

def test_parse_vary_types_values_as_the_keys_need():
    vary = parse_vary(["network_dim=8,16", "learning_rate=1e-4, 5e-4", "shuffle_caption=true,False",
                       "min_snr_gamma=none,5", "mixed_precision=no,bf16", "training_comment=1,abc",
                       "resolution=512,768x512"])
    assert vary["network_dim"] == [8, 16] and all(type(v) is int for v in vary["network_dim"])
    assert vary["learning_rate"] == [1e-4, 5e-4] and all(type(v) is float for v in vary["learning_rate"])
    assert vary["shuffle_caption"] == [True, False] and vary["min_snr_gamma"] == [None, 5]
    assert vary["mixed_precision"] == ["no", "bf16"]  # YAML 1.1 would make 'no' false
    assert vary["training_comment"] == ["1", "abc"] and vary["resolution"] == ["512", "768x512"]


@pytest.mark.parametrize("items, expected", [
    (["network_dimm=8,16"], "network_dimm: unknown key; did you mean 'network_dim'?"),
    (["network_dim"], "expected KEY=VALUE1,VALUE2"),
    (["output_name=a,b"], "output_name: a sweep cannot vary it"),
    (["sample_every_n_epochs=1,2"], "every run makes the same"),
    (["network_dim=8,,16"], "network_dim: an empty value"),
    (["network_dim=8", "network_dim=16"], "network_dim: given twice"),
    (["learning_rate=1e-4,0.0001"], "learning_rate: 0.0001 is listed twice"),
])
def test_parse_vary_refuses_bad_items(items, expected):
    with pytest.raises(ConfigError) as caught:
        parse_vary(items)
    assert expected in str(caught.value.problems[0])


def test_variations_are_the_product_with_own_names_and_the_same_previews(sweep_config, tmp_path):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("# a comment\nred circle\n\nblue square --d 11\n", encoding="utf-8")
    base = {**sweep_config, "sample_prompts": str(prompt_file), "seed": 7}
    runs = variations(base, parse_vary(["network_dim=4,8", "seed=1,2"]))
    assert [label for label, _ in runs] == ["network_dim=4,seed=1", "network_dim=4,seed=2",
                                            "network_dim=8,seed=1", "network_dim=8,seed=2"]
    assert [c["output_name"] for _, c in runs] == ["test-nd4-seed1", "test-nd4-seed2", "test-nd8-seed1",
                                                   "test-nd8-seed2"]
    assert [(c["network_dim"], c["seed"]) for _, c in runs] == [(4, 1), (4, 2), (8, 1), (8, 2)]
    # the training seed varies, the previews' seeds do not: a prompt without --d gets the base seed
    assert all(c["sample_prompts"] == ["red circle --d 7", "blue square --d 11"] for _, c in runs)


def test_variations_need_something_to_vary_and_not_too_much(sweep_config):
    with pytest.raises(ConfigError, match="nothing to vary"):
        variations(sweep_config, {})
    with pytest.raises(ConfigError, match="81 runs planned, at most 64"):
        variations(sweep_config, {"network_dim": [1, 2, 3], "seed": [1, 2, 3], "learning_rate": [1, 2, 3],
                                  "noise_offset": [0.1, 0.2, 0.3]})


def test_a_bad_value_is_refused_before_any_run(sweep_config, tmp_path):
    def runner(config):
        pytest.fail("a run started although a variation is invalid")

    with pytest.raises(ConfigError) as caught:
        run_sweep(sweep_config, parse_vary(["network_dim=4,0"]), sweep_dir=tmp_path / "sweep", runner=runner)
    (problem,) = caught.value.problems
    assert str(problem) == "[network_dim=0] network_dim: 0 is not valid: must be greater than or equal to 1"
    assert problem.keys == ("network_dim",)  # the run's label goes before the line, the key stays the key
    assert not (tmp_path / "sweep").exists()


def test_preflight_problems_of_every_variation_are_listed_together(sweep_config, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as caught:
        plan_sweep(sweep_config, parse_vary([f"train_data_dir={missing}", "network_dim=4,8"]), gpu=NO_GPU)
    problems = [str(problem) for problem in caught.value.problems]
    assert len(problems) == 1 and problems[0].startswith("train_data_dir:")  # shared by both: said once
    out = Path(sweep_config["output_dir"])
    out.mkdir(parents=True)
    (out / "test-nd8.safetensors").write_bytes(b"")  # left by an earlier sweep
    with pytest.raises(ConfigError) as caught:
        plan_sweep(sweep_config, parse_vary(["network_dim=4,8"]), gpu=NO_GPU)
    (problem,) = map(str, caught.value.problems)
    assert problem.startswith("[network_dim=8] output_name:") and "overwrite" in problem


def test_cli_refuses_bad_vary_with_exit_2(sweep_config, tmp_path):
    config = write_config(tmp_path / "c.yaml", sweep_config)
    result = run_cli("sweep", config, "--vary", "network_dim=4,0", "--vary", "learning_rat=1e-3")
    assert result.returncode == 2
    assert "learning_rat: unknown key; did you mean 'learning_rate'?" in result.stderr
    assert not (tmp_path / "out").exists()


# --- running the queue (a stand-in for the training process) --------------------------------------------

class FakeChild:
    """Behaves like trainer/runner.py's RunHandle; `finish` is the status it ends with, None: runs until STOP (or
    completes after 200 polls, so a lost STOP fails the test instead of hanging it)."""

    def __init__(self, run_dir: Path, finish: str | None):
        self.run_dir, self.finish, self.polls = run_dir, finish, 0
        run_dir.mkdir(parents=True)
        self._write({"type": "step", "step": 1, "epoch": 1, "loss": 0.5})

    @property
    def alive(self) -> bool:
        self.polls += 1
        if self.finish is None and (self.run_dir / "STOP").exists():
            self.finish = "stopped"
        elif self.finish is None and self.polls > 200:
            self.finish = "completed"
        if self.finish is not None and self.exit_code is None:
            self.exit_code = 0 if self.finish != "failed" else 1
            if self.finish == "failed":
                self._write({"type": "error", "message": "boom", "hint": ""})
            self._write({"type": "finished", "status": self.finish})
        return self.finish is None

    exit_code = None

    def stop(self) -> str:  # like RunHandle.stop: returns once the training has ended
        self.finish = "stopped"
        assert not self.alive
        return "stopped"

    def _write(self, event: dict) -> None:
        with open(self.run_dir / "events.jsonl", "a", encoding="utf-8") as file:
            file.write(json.dumps(event) + "\n")


def test_a_failed_run_does_not_stop_the_sweep_and_stop_ends_it(sweep_config, tmp_path, monkeypatch):
    monkeypatch.setattr("trainer.experiments.sweep_run.POLL_S", 0.01)
    started = []

    def runner(config):
        started.append(config["output_name"])
        if len(started) == 2:  # the user asks the sweep to stop while the second run trains
            (sweep_dir,) = (Path(sweep_config["output_dir"]) / "sweeps").iterdir()
            (sweep_dir / "STOP").touch()
        return FakeChild(tmp_path / f"run{len(started)}", "failed" if len(started) == 1 else None)

    plan = plan_sweep(sweep_config, parse_vary(["network_dim=2,4,8"]), gpu=NO_GPU)
    runs = run_sweep(plan, runner=runner)
    (sweep_dir,) = (Path(sweep_config["output_dir"]) / "sweeps").iterdir()  # output_dir/sweeps/<time>
    assert started == ["test-nd2", "test-nd4"]
    assert [run.status for run in runs] == ["failed", "stopped", "skipped"] and runs[0].error == "boom"
    assert (tmp_path / "run2" / "STOP").exists()  # passed on to the running training
    record = read_sweep(sweep_dir)
    assert record["status"] == "stopped" and record["vary"] == {"network_dim": [2, 4, 8]}
    assert [(r["label"], r["status"], r["run_dir"]) for r in record["runs"]] == [
        ("network_dim=2", "failed", str(tmp_path / "run1")), ("network_dim=4", "stopped", str(tmp_path / "run2")),
        ("network_dim=8", "skipped", None)]
    view = compare(sweep_dir)
    assert [len(run["losses"]) for run in view["runs"]] == [1, 1, 0] and view["grid"] == {}
    with pytest.raises(UserError, match="already holds a sweep"):  # a folder is one sweep's record
        run_sweep(plan, sweep_dir=sweep_dir, runner=runner)


def test_ctrl_c_stops_the_running_training_and_skips_the_rest(sweep_config, tmp_path, monkeypatch):
    """The training runs in its own session, out of Ctrl+C's reach: the sweep must stop it itself."""
    children = []

    def runner(config):
        children.append(FakeChild(tmp_path / f"run{len(children) + 1}", None))
        return children[-1]

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("trainer.experiments.sweep_run.time.sleep", interrupt)
    plan = plan_sweep(sweep_config, parse_vary(["network_dim=2,4"]), gpu=NO_GPU)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, sweep_dir=tmp_path / "sweep", runner=runner)
    assert len(children) == 1 and not children[0].alive
    record = read_sweep(tmp_path / "sweep")
    assert record["status"] == "stopped" and [r["status"] for r in record["runs"]] == ["stopped", "skipped"]


def test_dry_run_only_plans(sweep_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("trainer.run.gpu.gpu_facts", lambda: NO_GPU)
    assert sweep_command(write_config(tmp_path / "c.yaml", sweep_config), ["network_dim=4,8"], dry_run=True)
    printed = capsys.readouterr().out
    assert "sweep of 2 runs varying network_dim (4, 8):" in printed
    assert "network_dim=4  2 steps -> test-nd4" in printed and "network_dim=8  2 steps -> test-nd8" in printed
    assert not (tmp_path / "out").exists()


# --- end to end: two real trainings on the tiny model ------------------------------------------------------


def test_two_variation_sweep_makes_two_runs_and_a_compare_grid(sweep_config, tmp_path):
    sweep_dir = tmp_path / "my-sweep"
    result = run_cli("sweep", write_config(tmp_path / "c.yaml", sweep_config), "--vary", "network_dim=4,8",
                     "--sweep-dir", sweep_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "out"
    assert "completed network_dim=4: test-nd4" in result.stdout and str(sweep_dir) in result.stdout
    record = read_sweep(sweep_dir)
    assert record["status"] == "completed" and [r["status"] for r in record["runs"]] == ["completed"] * 2
    run_dirs = [Path(r["run_dir"]) for r in record["runs"]]
    assert len(set(run_dirs)) == 2 and all(d.parent == out / "runs" for d in run_dirs)
    for dim in (4, 8):  # each run's own LoRA file, trained with its own value
        with safetensors.safe_open(str(out / f"test-nd{dim}.safetensors"), "pt") as handle:
            assert handle.metadata()["ss_network_dim"] == str(dim)
    configs = [yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8")) for d in run_dirs]
    assert configs[0]["sample_prompts"] == configs[1]["sample_prompts"] == [f"{PROMPTS[0]} --d 7", PROMPTS[1]]

    view = compare(sweep_dir)
    labels = ["network_dim=4", "network_dim=8"]
    assert [run["label"] for run in view["runs"]] == labels
    assert all(len(run["losses"]) == 2 and len(run["smoothed"]) == 2 for run in view["runs"])
    assert view["epochs"] == [1, 2] and sorted(view["grid"]) == [0, 1] and view["prompts"] == configs[0][
        "sample_prompts"]
    for index in (0, 1):
        for epoch in (1, 2):
            cell = view["grid"][index][epoch]
            assert sorted(cell) == labels and all(Path(path).is_file() for path in cell.values())
            assert all(f"e{epoch:04d}-" in Path(path).name for path in cell.values())
    prompts_made = [[e["prompt"] for e in read_events(d) if e["type"] == "sample"] for d in run_dirs]
    assert prompts_made[0] == prompts_made[1] == ["red circle", "blue square"] * 2
