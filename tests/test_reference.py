"""docs/parameters.md and docs/parameters.zh.md are generated from the schema and must not drift from it."""

import pytest
from conftest import REPO

from trainer.config import TrainConfig, field_info
from trainer.config.reference import parameter_reference


@pytest.mark.parametrize("lang, name", [("en", "parameters.md"), ("zh", "parameters.zh.md")])
def test_parameter_reference_is_up_to_date(lang, name):
    committed = (REPO / "docs" / name).read_text(encoding="utf-8")
    suffix = " --lang zh" if lang == "zh" else ""
    assert committed == parameter_reference(lang), f"run: python -m trainer reference{suffix} > docs/{name}"


def test_every_field_is_documented_once_in_both_languages():
    english, chinese = parameter_reference("en"), parameter_reference("zh")
    for name, info in TrainConfig.model_fields.items():
        assert english.count(f"| `{name}` |") == 1 and chinese.count(f"| `{name}` |") == 1, name
        assert info.description and field_info(name)["help_zh"], name
        assert field_info(name)["tab"] in ("paths", "steps", "effect", "run"), name
