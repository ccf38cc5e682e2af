from pathlib import Path

from portero.spec import reference

DOCS = Path(__file__).parents[2] / "docs"


def test_spec_reference_in_the_docs_matches_the_models():
    assert reference.render() in (DOCS / "spec.md").read_text(), "run `make docs` and commit docs/spec.md"


def test_every_field_of_the_spec_is_in_the_reference():
    text = reference.render()
    for path in ("services.NAME.health.start_period_s", "alerts.rules[].for_s", "admin.port", "runtime"):
        assert f"| `{path}` |" in text
    assert "| `services.NAME.replicas.min` | integer | `1` | `MIN_REPLICAS` |" in text
