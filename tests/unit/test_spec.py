"""`portero.yaml` as a contract: what loads, what defaults to what, what is refused and how it is reported."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import attrgetter
from pathlib import Path
from typing import Any

import pytest

from portero.spec import ServiceSpec, Spec, SpecError, load_spec, parse_spec
from portero.spec.overrides import TARGETS

REPO_ROOT = Path(__file__).parents[2]
SOURCE = "conf/portero.yaml"  # a made-up source name, to prove messages quote the one they were given
MINIMAL = "services: {portal: {command: run}}"


@pytest.fixture(autouse=True)
def _no_seed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's own environment (a CI with DOCKER_HOST, say) must not leak into these tests."""
    for name in TARGETS:
        monkeypatch.delenv(name, raising=False)


def parse(text: str, environ: Mapping[str, str] | None = None) -> Spec:
    return parse_spec(text, source=SOURCE, environ={} if environ is None else environ)


def refusal(text: str, environ: Mapping[str, str] | None = None) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse(text, environ)
    return caught.value


def line_about(error: SpecError, prefix: str) -> str:
    """The one line of the message that starts with `prefix`; fails listing all lines when there is none."""
    lines = [line for line in str(error).splitlines() if line.startswith(prefix)]
    assert lines, f"no line starts with {prefix!r} in:\n{error}"
    return lines[0]


# --- what loads --------------------------------------------------------------------------------------------


def test_the_repository_spec_loads() -> None:
    spec = load_spec(REPO_ROOT / "portero.yaml", environ={})

    assert spec.runtime == "process"
    assert list(spec.services) == ["portal"]
    portal = spec.services["portal"]
    assert portal.command is not None
    assert portal.command[0] == "gunicorn"
    assert "127.0.0.1:${PORT}" in portal.command  # split like a shell, but never expanded by one
    assert (portal.replicas.initial, portal.replicas.min, portal.replicas.max) == (3, 1, 10)
    assert portal.env["WEB_CONCURRENCY"] == "2"


def test_a_service_with_only_a_command_gets_the_documented_defaults() -> None:
    spec = parse(MINIMAL)

    portal = spec.services["portal"]
    assert portal.health.path == "/health"
    assert portal.health.interval_s == 2
    assert portal.health.timeout_s == 1
    assert portal.health.unhealthy_threshold == 3
    assert portal.restart.initial_backoff_s == 1
    assert portal.restart.max_backoff_s == 60
    assert (portal.replicas.initial, portal.replicas.min, portal.replicas.max) == (1, 1, 10)
    assert portal.port == 5000
    assert portal.stop_grace_s == 10
    assert (spec.admin.host, spec.admin.port) == ("127.0.0.1", 9900)
    assert spec.runtime == "process"
    assert spec.monitoring.enabled is True
    assert spec.autoscale.enabled is False
    assert spec.store.redis_url is None


def test_initial_replicas_default_to_min() -> None:
    spec = parse("services: {portal: {command: run, replicas: {min: 4}}}")

    assert spec.services["portal"].replicas.initial == 4


# --- what is refused, and how it is reported -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        pytest.param(
            "services: {portal: {command: run, replicas: {initial: '3'}}}",
            "services.portal.replicas.initial",
            "valid integer",
            id="string-for-integer",
        ),
        pytest.param(
            "services: {portal: {command: run, health: {interval_s: '2'}}}",
            "services.portal.health.interval_s",
            "valid number",
            id="string-for-number",
        ),
        pytest.param(
            "monitoring: {enabled: 'yes'}\n" + MINIMAL,
            "monitoring.enabled",
            "valid boolean",
            id="string-for-boolean",
        ),
        pytest.param(
            "services: {portal: {command: run, replicas: {initial: -1}}}",
            "services.portal.replicas.initial",
            "greater than or equal to 0",
            id="negative-count",
        ),
        pytest.param(
            "services: {portal: {command: run, stop_grace_s: 0}}",
            "services.portal.stop_grace_s",
            "greater than 0",
            id="zero-duration",
        ),
        pytest.param("bogus: 1\n" + MINIMAL, "bogus", "unknown key", id="unknown-top-level-key"),
        pytest.param(
            "services: {portal: {command: run, health: {pathx: /ready}}}",
            "services.portal.health.pathx",
            "unknown key",
            id="unknown-nested-key",
        ),
        pytest.param(
            "services: {portal: {command: run, replicas: {min: 5, max: 2}}}",
            "services.portal.replicas",
            "min (5) must not exceed max (2)",
            id="min-above-max",
        ),
        pytest.param(
            "services: {portal: {command: run, replicas: {initial: 20}}}",
            "services.portal.replicas",
            "initial (20) must lie within min..max (1..10)",
            id="initial-above-max",
        ),
        pytest.param(
            "services: {portal: {command: run, replicas: {initial: 1, min: 2, max: 5}}}",
            "services.portal.replicas",
            "initial (1) must lie within min..max (2..5)",
            id="initial-below-min",
        ),
        pytest.param("services: {Portal: {command: run}}", "services.Portal", "should match pattern", id="bad-name"),
        pytest.param(
            "services: {portal: {command: run, env: {1BAD: x}}}",
            "services.portal.env.1BAD",
            "should match pattern",
            id="bad-env-key",
        ),
        pytest.param(
            "services: {x: {image: nginx}}",
            "services.x.command",
            "required by runtime `process`",
            id="process-runtime-without-command",
        ),
        pytest.param("services: {}", "services", "at least 1 item", id="no-services"),
        pytest.param("runtime: podman\n" + MINIMAL, "runtime", "'process', 'docker' or 'swarm'", id="bad-runtime"),
    ],
)
def test_refusals_name_the_source_the_field_path_and_the_reason(text: str, path: str, reason: str) -> None:
    error = refusal(text)

    assert error.source == SOURCE
    assert reason in line_about(error, f"{SOURCE}: {path}")


def test_every_problem_is_reported_not_just_the_first() -> None:
    error = refusal("bogus: 1\nadmin: {port: 0}\nservices: {portal: {command: run, replicas: {max: '9'}}}")

    assert "unknown key" in line_about(error, f"{SOURCE}: bogus")
    assert "greater than or equal to 1" in line_about(error, f"{SOURCE}: admin.port")
    assert "valid integer" in line_about(error, f"{SOURCE}: services.portal.replicas.max")
    assert len(error.problems) == 3


def test_a_service_without_a_command_is_fine_on_a_container_runtime() -> None:
    spec = parse("runtime: docker\nservices: {x: {image: nginx}}")

    assert spec.services["x"].image == "nginx"


def test_invalid_yaml_is_refused() -> None:
    error = refusal("services: [\n")

    assert str(error).startswith(f"{SOURCE}: not valid YAML")


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just words", "str"), ("", "NoneType"), ("42", "int")]
)
def test_a_document_that_is_not_a_mapping_is_refused(text: str, kind: str) -> None:
    error = refusal(text)

    assert str(error) == f"{SOURCE}: (root): expected a mapping of settings, got {kind}"


@pytest.mark.parametrize(("name", "reason"), [("missing.yaml", "No such file"), (".", "Is a directory")])
def test_an_unreadable_file_is_refused_with_its_path(tmp_path: Path, name: str, reason: str) -> None:
    path = tmp_path / name

    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})

    assert str(caught.value).startswith(f"{path}: cannot read the spec file")
    assert reason in str(caught.value)


def test_load_spec_quotes_the_file_path_in_validation_errors(tmp_path: Path) -> None:
    path = tmp_path / "portero.yaml"
    path.write_text("services: {portal: {command: run, replicas: {initial: '3'}}}\n", encoding="utf-8")

    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})

    assert str(caught.value).startswith(f"{path}: services.portal.replicas.initial: ")


# --- command ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("python -m http.server 8000", ("python", "-m", "http.server", "8000")),
        ("echo 'hello world'  \"a b\"", ("echo", "hello world", "a b")),
        ("run --flag=$HOME; rm -rf /", ("run", "--flag=$HOME;", "rm", "-rf", "/")),
        (["echo", "a b", "$HOME"], ("echo", "a b", "$HOME")),
        (["single"], ("single",)),
    ],
    ids=["string", "string-with-quotes", "string-no-shell", "list", "list-of-one"],
)
def test_a_string_command_is_split_like_a_shell_and_a_list_is_kept(command: object, argv: tuple[str, ...]) -> None:
    spec = Spec.model_validate({"services": {"portal": {"command": command}}})

    assert spec.services["portal"].command == argv


@pytest.mark.parametrize("command", ["''", "'   '", "[]"])
def test_an_empty_command_is_refused(command: str) -> None:
    error = refusal(f"services: {{portal: {{command: {command}}}}}")

    assert "command must not be empty" in line_about(error, f"{SOURCE}: services.portal.command")


# --- the seed's environment variables ---------------------------------------------------------------------------

FILE = """
docker: {host: "unix:///file.sock", api_version: "1.40"}
store: {redis_url: "redis://file:6379/0"}
monitoring: {enabled: true, alert_threshold_cpu: 50, alert_threshold_memory: 60}
autoscale: {enabled: false, scale_up_threshold: 60, scale_down_threshold: 20}
services:
  portal: {command: run, replicas: {initial: 3, min: 2, max: 6}}
"""


def _portal_replicas(field: str) -> Callable[[Spec], Any]:
    return lambda spec: getattr(spec.services["portal"].replicas, field)


OVERRIDES: list[tuple[str, str, Callable[[Spec], Any], Any]] = [
    ("DOCKER_HOST", "tcp://10.0.0.2:2375", attrgetter("docker.host"), "tcp://10.0.0.2:2375"),
    ("DOCKER_API_VERSION", "1.45", attrgetter("docker.api_version"), "1.45"),
    ("REDIS_URL", "redis://env:6379/1", attrgetter("store.redis_url"), "redis://env:6379/1"),
    ("MONITORING_ENABLED", "false", attrgetter("monitoring.enabled"), False),
    ("ALERT_THRESHOLD_CPU", "90", attrgetter("monitoring.alert_threshold_cpu"), 90),
    ("ALERT_THRESHOLD_MEMORY", "95.5", attrgetter("monitoring.alert_threshold_memory"), 95.5),
    ("AUTO_SCALE_ENABLED", "true", attrgetter("autoscale.enabled"), True),
    ("SCALE_UP_THRESHOLD", "75", attrgetter("autoscale.scale_up_threshold"), 75),
    ("SCALE_DOWN_THRESHOLD", "10", attrgetter("autoscale.scale_down_threshold"), 10),
    ("MIN_REPLICAS", "1", _portal_replicas("min"), 1),
    ("MAX_REPLICAS", "8", _portal_replicas("max"), 8),
]


def test_every_seed_variable_has_an_override_case() -> None:
    assert {case[0] for case in OVERRIDES} == set(TARGETS)


@pytest.mark.parametrize(("variable", "value", "read", "expected"), OVERRIDES, ids=[case[0] for case in OVERRIDES])
def test_a_seed_variable_overrides_the_file(
    variable: str, value: str, read: Callable[[Spec], Any], expected: Any
) -> None:
    assert read(parse(FILE)) != expected  # the file says something else...

    assert read(parse(FILE, {variable: value})) == expected  # ...and the environment wins


def test_the_process_environment_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://real-env:6379/2")
    monkeypatch.setenv("MAX_REPLICAS", "4")

    spec = parse_spec(FILE, source=SOURCE, environ=None)

    assert spec.store.redis_url == "redis://real-env:6379/2"
    assert spec.services["portal"].replicas.max == 4
    assert spec.services["portal"].replicas.initial == 3


def test_an_explicit_mapping_is_the_whole_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIN_REPLICAS", "4")

    spec = parse(FILE, environ={"REDIS_URL": "redis://mapping:6379/0"})

    assert spec.store.redis_url == "redis://mapping:6379/0"
    assert spec.services["portal"].replicas.min == 2  # the file's, not the process environment's 4


def test_replica_bounds_apply_to_every_service_and_clamp_initial() -> None:
    text = """
    services:
      above: {command: run, replicas: {initial: 8, max: 10}}
      below: {command: run, replicas: {initial: 1, min: 1}}
      unset: {command: run}
    """

    spec = parse(text, {"MIN_REPLICAS": "2", "MAX_REPLICAS": "5"})

    bounds = {name: (s.replicas.initial, s.replicas.min, s.replicas.max) for name, s in spec.services.items()}
    assert bounds == {"above": (5, 2, 5), "below": (2, 2, 5), "unset": (2, 2, 5)}


def test_an_initial_inside_the_new_bounds_is_left_alone() -> None:
    spec = parse(FILE, {"MIN_REPLICAS": "1", "MAX_REPLICAS": "9"})

    assert spec.services["portal"].replicas.initial == 3


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("MIN_REPLICAS", "abc", "valid integer"),
        ("MIN_REPLICAS", "-1", "greater than or equal to 0"),
        ("MAX_REPLICAS", "0", "greater than or equal to 1"),
        ("MAX_REPLICAS", "101", "less than or equal to 100"),
        ("ALERT_THRESHOLD_CPU", "150", "less than or equal to 100"),
        ("ALERT_THRESHOLD_MEMORY", "lots", "valid number"),
        ("SCALE_UP_THRESHOLD", "-5", "greater than or equal to 0"),
        ("MONITORING_ENABLED", "maybe", "valid boolean"),
        ("AUTO_SCALE_ENABLED", "2", "valid boolean"),
    ],
)
def test_a_bad_environment_value_is_refused_naming_the_variable(variable: str, value: str, reason: str) -> None:
    error = refusal(FILE, {variable: value})

    assert error.source == "environment"
    assert str(error).startswith("environment: ")
    assert reason in line_about(error, f"environment: {variable}: ")
    assert repr(value) in str(error)


def test_variables_that_are_not_seed_variables_are_ignored() -> None:
    spec = parse(FILE, {"PATH": "/usr/bin", "min_replicas": "9", "PORTERO_WHATEVER": "x"})

    assert spec == parse(FILE)


def test_min_replicas_above_max_replicas_is_refused_naming_both_variables() -> None:
    error = refusal(FILE, {"MIN_REPLICAS": "5", "MAX_REPLICAS": "2"})

    assert str(error) == "environment: MIN_REPLICAS (5) must not exceed MAX_REPLICAS (2)"


@pytest.mark.parametrize(
    "environ",
    [
        {"SCALE_UP_THRESHOLD": "50", "SCALE_DOWN_THRESHOLD": "50"},
        {"SCALE_UP_THRESHOLD": "40", "SCALE_DOWN_THRESHOLD": "45"},
    ],
    ids=["equal", "inverted"],
)
def test_contradicting_threshold_variables_are_refused_naming_both(environ: dict[str, str]) -> None:
    error = refusal(FILE, environ)

    assert str(error).startswith("environment: SCALE_DOWN_THRESHOLD (")
    assert "must be below SCALE_UP_THRESHOLD" in str(error)


@pytest.mark.parametrize(
    "environ",
    [
        {"SCALE_DOWN_THRESHOLD": "65"},  # against the file's scale_up_threshold of 60
        {"SCALE_UP_THRESHOLD": "10"},  # against the file's scale_down_threshold
    ],
    ids=["down-against-the-file", "up-against-the-file"],
)
def test_scale_down_threshold_at_or_above_scale_up_is_refused(environ: dict[str, str]) -> None:
    error = refusal(FILE, environ)

    assert "must be below scale_up_threshold" in line_about(error, f"{SOURCE}: autoscale: scale_down_threshold")


# --- template digest --------------------------------------------------------------------------------------------

TEMPLATE: dict[str, Any] = {"command": ["run", "--fast"], "env": {"A": "1", "B": "2"}, "version": "v1"}


def digest(**changes: Any) -> str:
    return ServiceSpec.model_validate({**TEMPLATE, **changes}).template_digest()


def test_equal_templates_have_equal_digests() -> None:
    reordered_env = {"B": "2", "A": "1"}

    assert digest() == digest()
    assert digest(env=reordered_env) == digest()
    assert digest(command="run --fast") == digest()  # the same argv, written as a string


@pytest.mark.parametrize(
    "changes",
    [
        {"command": ["run", "--slow"]},
        {"command": ["run"]},
        {"env": {"A": "1", "B": "3"}},
        {"env": {"A": "1", "B": "2", "C": "3"}},
        {"env": {}},
        {"version": "v2"},
        {"version": None},
        {"port": 5001},
        {"workdir": "app"},
    ],
    ids=lambda changes: "-".join(changes),
)
def test_the_digest_changes_with_what_a_replica_is(changes: dict[str, Any]) -> None:
    assert digest(**changes) != digest()


@pytest.mark.parametrize(
    "changes",
    [
        {"replicas": {"initial": 5, "min": 2, "max": 9}},
        {"health": {"path": "/ready", "interval_s": 7, "unhealthy_threshold": 9}},
        {"restart": {"initial_backoff_s": 3}},
        {"stop_grace_s": 30},
        {"deploy": {"strategy": "canary"}},
    ],
    ids=lambda changes: "-".join(changes),
)
def test_the_digest_ignores_how_many_replicas_and_how_they_are_watched(changes: dict[str, Any]) -> None:
    changed = ServiceSpec.model_validate({**TEMPLATE, **changes})
    assert changed != ServiceSpec.model_validate(TEMPLATE)  # the setting did change...

    assert changed.template_digest() == digest()  # ...but not the template


# -- limits: numbers, strings, lists and files past any sane value are refused by field and limit, never crash --


def test_a_number_of_4400_digits_is_refused_naming_its_field_and_limit():
    error = refusal(f"services: {{portal: {{command: run, stop_grace_s: {'9' * 4400}}}}}")
    line = line_about(error, f"{SOURCE}: services.portal.stop_grace_s:")
    assert "less than or equal to 86400" in line
    assert "a number of 4400 characters" in line
    assert len(line) < 200  # the number is not printed back
    error = refusal(f"services: {{portal: {{command: run, replicas: {{max: -{'9' * 5000}}}}}}}")
    assert "services.portal.replicas.max: Input should be greater than or equal to 1" in str(error)


def test_infinite_and_nan_numbers_are_refused():
    assert "finite number" in line_about(refusal(MINIMAL[:-2] + ", stop_grace_s: .inf}}"), f"{SOURCE}: services")
    rule = "{name: a, metric: m, threshold: .nan}"
    error = refusal(f"alerts: {{rules: [{rule}]}}\n{MINIMAL}")
    assert "alerts.rules.0.threshold: Input should be a finite number" in str(error)


def test_over_long_strings_and_lists_are_refused_with_their_limit():
    error = refusal(f"services: {{portal: {{command: run, env: {{KEY: {'x' * 70_000}}}}}}}")
    line = line_about(error, f"{SOURCE}: services.portal.env.KEY:")
    assert "at most 65536 characters" in line
    assert "(70000 characters)" in line
    assert len(line) < 250
    args = ", ".join(["a"] * 1001)
    assert "at most 1000 items" in str(refusal(f"services: {{portal: {{command: [{args}]}}}}"))
    assert "at most 4096 characters" in str(refusal(f"services: {{portal: {{command: run, workdir: {'d' * 5000}}}}}"))


def test_a_spec_file_over_the_limit_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "portero.yaml"
    path.write_text(MINIMAL + "\n# " + "x" * 2_000_000 + "\n")  # valid YAML: only its size is wrong
    with pytest.raises(SpecError) as caught:
        load_spec(path, environ={})
    assert str(caught.value) == f"{path}: the spec is over 1,000,000 bytes, the limit (a spec is usually a few KiB)"
    with pytest.raises(SpecError, match="over 1,000,000 bytes"):
        parse_spec(path.read_text(), environ={})


def test_alert_summary_templates_are_bounded():
    for template, problem in [
        ("{value:>50000000}", "a width or precision is at most 100"),
        ("{value:.999}", "a width or precision is at most 100"),
        ("{value:>{threshold}}", "a width or precision is at most 100"),
        ("{value.__class__}", "a placeholder is a label name"),
        ("{replica[0]}", "a placeholder is a label name"),
    ]:
        rule = f"{{name: a, metric: m, threshold: 1, summary: '{template}'}}"
        assert problem in line_about(refusal(f"alerts: {{rules: [{rule}]}}\n{MINIMAL}"), f"{SOURCE}: alerts.rules.0")
    fine = parse(
        f"alerts: {{rules: [{{name: a, metric: m, threshold: 1, summary: '{{replica:>8}} {{value:.2}}'}}]}}\n{MINIMAL}"
    )
    assert fine.alerts.rules[0].summary == "{replica:>8} {value:.2}"


# -- who replicas run as, and what of the host's environment they get --


def test_user_group_and_env_from_host():
    spec = parse("services: {portal: {command: run, user: www-data, group: 33, env_from_host: [AWS_REGION]}}")
    portal = spec.services["portal"]
    assert (portal.user, portal.group, portal.env_from_host) == ("www-data", "33", ("AWS_REGION",))
    assert parse("services: {portal: {command: run, user: 1000}}").services["portal"].user == "1000"
    assert portal.template_digest() != parse(MINIMAL).services["portal"].template_digest()  # a new revision


def test_portero_variables_cannot_be_passed_to_replicas():
    error = refusal("services: {portal: {command: run, env_from_host: [AWS_REGION, PORTERO_TOKEN]}}")
    line = line_about(error, f"{SOURCE}: services.portal.env_from_host:")
    assert "PORTERO_TOKEN: portero's own variables (its admin token among them) are never passed" in line


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ("user: Root", "should match pattern"),
        ("user: 4294967295", "a numeric id must be at most 4294967294"),
        ("group: 'a b'", "should match pattern"),
        ("user: true", "Input should be a valid string"),
    ],
)
def test_bad_users_and_groups_are_refused(field, problem):
    assert problem in line_about(refusal(f"services: {{portal: {{command: run, {field}}}}}"), f"{SOURCE}: services")


def test_a_group_alone_needs_a_user_with_containers():
    error = refusal("runtime: docker\nservices: {portal: {image: portal, group: web}}")
    assert "services.portal.group: needs `user` too with runtime `docker`" in str(error)
