import re
import shutil
import sys
from pathlib import Path

from portero.cli import main as cli
from portero.deploy.model import State
from portero.spec import changes as spec_changes
from portero.spec import reference
from portero.spec.models import AdminSettings, RouterSettings, Spec

DOCS = Path(__file__).parents[2] / "docs"


def test_spec_reference_in_the_docs_matches_the_models():
    assert reference.render() in (DOCS / "spec.md").read_text(), "run `make docs` and commit docs/spec.md"


def test_every_field_of_the_spec_is_in_the_reference():
    text = reference.render()
    for path in ("services.NAME.health.start_period_s", "alerts.rules[].for_s", "admin.port", "runtime"):
        assert f"| `{path}` |" in text
    assert "| `services.NAME.replicas.min` | integer | `1` | `MIN_REPLICAS` |" in text


# Issue 19, case 10: the docs said otherwise than the product (monitoring, alerts, autoscaling and deployments
# "have no effect", docker and swarm "refused", the router on 0.0.0.0:8080, the admin token shown by `make run`, a
# never-healthy version "abandoned"). Each check below reads the truth from the code, not from a copy of the text.
ROOT = DOCS.parent
README = ROOT / "README.md"


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def effect_table() -> tuple[str, list[tuple[set[str], str]]]:
    """docs/spec.md's "What takes effect, and when": its text, and each row's backticked names and its effect."""
    text = section((DOCS / "spec.md").read_text(), "What takes effect, and when")
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 2 and cells[0] != "what changes":
            rows.append((set(re.findall(r"`([^`]+)`", cells[0])), cells[1]))
    return text, rows


def test_what_takes_effect_names_every_section_and_refuses_exactly_what_apply_refuses():
    text, rows = effect_table()
    assert "no effect" not in text
    refused = [names for names, how in rows if "refused by `apply`" in how]
    assert refused == [{prefix.rstrip(".") for prefix, _ in spec_changes.FIXED}], "the refused row and FIXED differ"
    live = set().union(*(names for names, how in rows if "refused" not in how))
    assert not {n for n in live if spec_changes.refusal(spec_changes.Change(n, 1, 2))}, "a refused field shown live"
    mentioned = {name.split(".")[0] for name in re.findall(r"`([^`]+)`", text)}
    assert set(Spec.model_fields) - {"version"} <= mentioned, "a section of the spec is not in the table"
    (listens,) = [how for names, how in rows if "router.port" in names]
    assert spec_changes.effect(spec_changes.Change("router.port", 1, 2)) in listens
    (template,) = [how for names, how in rows if "services" in names]
    assert template.startswith(spec_changes.TEMPLATE)


def test_the_apply_output_shown_is_what_apply_says():
    text, _ = effect_table()
    shown = text[text.index("$ portero apply") :]
    lines = [line for line in shown.splitlines() if " -> " in line]
    assert len(lines) >= 4
    for line in lines:
        if line.startswith("error: "):
            path, rest = line.removeprefix("error: cannot change while portero runs: ").split(": ", 1)
            advice = spec_changes.refusal(spec_changes.Change(path, 1, 2))
            assert advice is not None
            assert f": {advice}; nothing was changed" in line
        else:
            path, rest = line.split(": ", 1)
            assert rest.split(" -> ", 1)[1].split(": ", 1)[1] == spec_changes.effect(spec_changes.Change(path, 1, 2))


def test_security_gives_the_listen_defaults_of_the_spec():
    text = (DOCS / "security.md").read_text()
    router, admin = RouterSettings(), AdminSettings()
    assert f"(`router.host:router.port`, {router.host}:{router.port} by default)" in text
    assert f"(`admin.host:admin.port`, **{admin.host}**:{admin.port} by default)" in text
    for page in [*DOCS.glob("*.md"), README]:  # no other default is claimed for the router anywhere
        for claimed in re.findall(r"([0-9.]+:[0-9]+) by default", page.read_text()):
            assert claimed in {f"{router.host}:{router.port}", f"{admin.host}:{admin.port}"}, (page.name, claimed)


def test_readme_tells_when_the_admin_token_is_shown_as_the_cli_does(tmp_path, monkeypatch, capsys):
    quick = section(README.read_text(), "Quick start")
    said = " ".join(quick.split())
    assert "on a terminal (`make run`, or `up --detach` typed in one) portero prints the token itself once;" in said
    assert "piped, only its id and that file" in said
    monkeypatch.setattr(cli.Context, "state_dir", tmp_path / "state")
    for terminal in (True, False):
        state = tmp_path / "state"
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir(mode=0o700)
        monkeypatch.setattr(sys.stdout, "isatty", lambda t=terminal: t)
        cli._first_admin_token()
        printed = " ".join(capsys.readouterr().out.split())
        secret = (state / "admin.token").read_text().strip()
        assert (secret in printed) is terminal
        assert "Created the admin token " in printed
        assert str(state / "admin.token") in printed


def test_a_version_that_fails_is_called_what_the_cli_prints():
    printed = cli._outcome({"id": "d", "state": State.ROLLED_BACK.value, "reason": "r"})
    assert printed == "deployment d rolled back: r"
    assert "rolled back" in (DOCS / "deployments.md").read_text()
    for page in [*DOCS.glob("*.md"), README]:
        for line in page.read_text().splitlines():
            # Only a build past its timeout and a request its client dropped are abandoned: a deployment, a
            # revision or a version that does not get ready is rolled back, as the CLI says.
            if re.search(r"abandon", line, re.I):
                assert re.search(r"\bbuild\b|\bclient\b", line), (page.name, line)
