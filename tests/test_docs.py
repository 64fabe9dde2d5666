"""The manual in docs/ stays true to the code it describes."""

from pathlib import Path

from ssmix.sweep.reference import sweep_file_reference

REPO = Path(__file__).resolve().parents[1]


def test_sweep_file_reference_is_generated_from_the_schema_and_up_to_date():
    page = (REPO / "docs" / "sweep-file.md").read_text()
    assert page == sweep_file_reference(), \
        "docs/sweep-file.md is stale: python -m ssmix.sweep.reference > docs/sweep-file.md"
    # Every key of the schema is on the page, with a description.
    from ssmix.sweep.reference import SECTIONS

    for _, model, _ in SECTIONS:
        for name, field in model.model_fields.items():
            assert f"| `{name}` |" in page
            assert field.description, f"{model.__name__}.{name} has no description"
