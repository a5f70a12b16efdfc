"""No input makes a message of megabytes: YAML aliases are expanded within a bound, every message is capped."""

import yaml

from trainer.__main__ import main
from trainer.common.errors import MAX_PROBLEMS, ConfigError, Problem, UserError
from trainer.presets.format import read_preset


def nested_aliases(levels: int) -> str:
    """Each level a list of nine aliases of the one before: 9**levels values from a few hundred bytes."""
    lines = ['a0: &a0 ["xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines + [f"z: *a{levels}"]) + "\n"


def test_an_alias_bomb_is_refused_in_a_short_message(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(nested_aliases(9))
    assert len(bomb.read_bytes()) < 700
    assert main(["check", str(bomb)]) == 2
    err = capsys.readouterr().err
    assert "bomb.yaml" in err and "aliases" in err and len(err) < 1000


def test_a_small_preset_gives_a_small_message(tmp_path):
    """Under the bound, a value of 5,000 strings quoted in a message is shortened."""
    levels = ['&a0 ["xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx"]']
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 4)]
    preset = tmp_path / "p.yaml"
    preset.write_text(f"name: p\nsettings:\n  network_dim: [{', '.join(levels)}]\n")
    assert len(preset.read_bytes()) < 400
    try:
        read_preset(preset)
        raise AssertionError("the preset was read")
    except ConfigError as exc:
        assert "network_dim" in exc.message and len(exc.message) < 2000


def test_messages_and_problem_lists_are_capped():
    problem = Problem(("network_dim",), "x" * 10**6, "y" * 10**6)
    assert len(str(problem)) < 2500 and "1000000 characters in all" in problem.message
    assert len(UserError("z" * 10**6).message) < 1200
    error = ConfigError([Problem((f"key{i}",), "unknown key") for i in range(1000)])
    assert len(error.problems) == MAX_PROBLEMS and "961 more problems" in str(error.problems[-1])


def test_a_self_referring_alias_is_refused(tmp_path, capsys):
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [1, *a]\n")
    assert main(["check", str(loop)]) == 2
    assert "refers to a value that contains it" in capsys.readouterr().err
    assert yaml.safe_load("a: &a [1]\nb: *a\n") == {"a": [1], "b": [1]}  # plain aliases still read
