"""The main job without a GUI yet: the offline demo builds its model and data and trains to a LoRA file."""

import safetensors
from conftest import read_events, run_cli


def test_demo_trains_offline_to_a_lora_with_samples(tmp_path):
    result = run_cli("demo", "--dir", tmp_path / "demo", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    # bitsandbytes, unused by the demo, is not imported: at import it asks the Hub for CPU kernels and logs a failure
    assert "kernels-community" not in result.stderr and "bitsandbytes" not in result.stderr
    outputs = tmp_path / "demo" / "outputs"
    (run_dir,) = (outputs / "runs").iterdir()
    events = read_events(run_dir)
    assert events[-1] == {**events[-1], "type": "finished", "status": "completed"}
    assert [e for e in events if e["type"] == "sample"] and list((run_dir / "samples").glob("*.png"))
    with safetensors.safe_open(str(outputs / "demo_lora.safetensors"), "pt") as handle:
        assert handle.metadata()["ss_training_comment"].startswith("Danlu demo")
    assert (tmp_path / "demo" / "config.yaml").is_file()  # an example config to copy
