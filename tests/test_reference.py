"""docs/parameters.md is generated from the schema and must not drift from it."""

from conftest import REPO

from trainer.config import TrainConfig
from trainer.reference import parameter_reference


def test_parameter_reference_is_up_to_date():
    committed = (REPO / "docs" / "parameters.md").read_text(encoding="utf-8")
    assert committed == parameter_reference(), "run: python -m trainer reference > docs/parameters.md"


def test_every_field_is_documented_once():
    text = parameter_reference()
    for name, info in TrainConfig.model_fields.items():
        assert text.count(f"| `{name}` |") == 1, name
        assert info.description, name
