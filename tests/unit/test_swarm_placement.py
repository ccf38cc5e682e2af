"""The swarm runtime's pure parts: node addresses and Engines, port blocks and the nodes' listening ports, image
references, the `docker.swarm` settings, and the NODE column of `portero status`."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from rich.console import Console

from portero.cli.views import status_table
from portero.runtimes import nodes
from portero.runtimes.engine import registry_of, split_reference, with_tag
from portero.runtimes.ports import blocks, choose_block, listening_ports
from portero.spec.models import DockerSettings, SwarmSettings


def node(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "ID": "abc123",
        "Description": {"Hostname": "worker-1", "Engine": {"Labels": {}}},
        "Spec": {"Labels": {}, "Availability": "active"},
        "Status": {"State": "ready", "Addr": "10.0.0.12"},
    }
    base.update(fields)
    return base


# -- addresses ---------------------------------------------------------------------------------------------


def test_a_worker_is_reached_at_its_status_address():
    assert nodes.address(node()) == "10.0.0.12"


@pytest.mark.parametrize("status_addr", ["0.0.0.0", "127.0.0.1", ""])
def test_a_manager_is_reached_at_its_advertise_address_whatever_its_status_says(status_addr):
    manager = node(Status={"State": "ready", "Addr": status_addr}, ManagerStatus={"Addr": "10.0.0.11:2377"})
    assert nodes.address(manager) == "10.0.0.11"


def test_a_single_node_swarm_on_loopback_stays_on_loopback():
    manager = node(Status={"State": "ready", "Addr": "127.0.0.1"}, ManagerStatus={"Addr": "127.0.0.1:2377"})
    assert nodes.address(manager) == "127.0.0.1"


def test_a_node_without_a_usable_address_is_refused_with_what_to_do():
    with pytest.raises(nodes.NodeAddressError, match=r"worker-1 .*--advertise-addr"):
        nodes.address(node(Status={"State": "ready", "Addr": "0.0.0.0"}, ManagerStatus={"Addr": "0.0.0.0:2377"}))


# -- engines -----------------------------------------------------------------------------------------------


def test_the_spec_names_a_node_s_engine_by_hostname_or_id_before_any_label():
    labelled = node(Spec={"Labels": {"portero.engine": "tcp://label:2376"}, "Availability": "active"})
    assert nodes.engine_url(labelled, {"worker-1": "tcp://spec:2376"}) == "tcp://spec:2376"
    assert nodes.engine_url(labelled, {"abc123": "tcp://by-id:2376"}) == "tcp://by-id:2376"
    assert nodes.engine_url(labelled, {}) == "tcp://label:2376"


def test_an_engine_label_of_the_dockerd_is_found_through_the_swarm():
    daemon = node(Description={"Hostname": "worker-1", "Engine": {"Labels": {"portero.engine": "unix:///run/n2.sock"}}})
    assert nodes.engine_url(daemon, {}) == "unix:///run/n2.sock"
    assert nodes.engine_url(node(), {}) is None


def test_only_ready_active_nodes_take_tasks_and_a_silent_one_is_down():
    assert nodes.schedulable(node())
    assert not nodes.schedulable(node(Spec={"Labels": {}, "Availability": "drain"}))
    assert not nodes.schedulable(node(Status={"State": "down", "Addr": "10.0.0.12"}))
    assert nodes.down(node(Status={"State": "down"}))
    assert nodes.down(None)
    assert not nodes.down(node())


# -- ports ---------------------------------------------------------------------------------------------------


def test_blocks_of_a_range_keep_every_port_inside_it():
    assert list(blocks(38100, 38999, 100)) == [38100 + 100 * n for n in range(9)]
    assert list(blocks(38100, 38198, 100)) == []  # 38101..38199 would leave the range
    assert list(blocks(38100, 38199, 100)) == [38100]


def test_a_block_held_by_a_service_or_with_a_listener_on_any_node_is_passed_over():
    listening = {"node-1": {22, 2377}, "node-2": {38150}}
    block, passed = choose_block(38100, 38999, 100, taken={38200}, listening=listening)
    assert block == 38300
    assert passed == {38100: "port 38150 listens on node node-2", 38200: "held by another service revision"}


def test_a_block_base_itself_is_never_used_so_a_listener_there_does_not_matter():
    assert choose_block(38100, 38999, 100, taken=(), listening={"n": {38100, 38200}})[0] == 38100


def test_a_full_range_has_no_block():
    block, passed = choose_block(38100, 38299, 100, taken={38100}, listening={"n": {38250}})
    assert block is None
    assert len(passed) == 2


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0B1512C6:0929 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0
   1: 00000000:95C6 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0
   2: 0B1512C6:C6A4 0C1512C6:1F0A 06 00000000:00000000 03:00001530 00000000     0        0 0 3 0
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000
"""


def test_listening_ports_come_from_proc_net_tcp_and_tcp6_and_skip_other_states():
    assert listening_ports(PROC_NET_TCP) == {0x0929, 0x95C6, 0x1F90}  # 2345, 38342, 8080; not the TIME_WAIT one


# -- image references ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("198.18.21.1:5000/portal", "198.18.21.1:5000"),
        ("registry.example/team/portal:v2", "registry.example"),
        ("localhost/portal", "localhost"),
        ("portal", None),
        ("library/portal:v2", None),
        ("portero/portal:0971e4a598fc", None),
    ],
)
def test_a_registry_is_a_first_component_with_a_dot_a_colon_or_localhost(image, registry):
    assert registry_of(image) == registry


def test_a_registry_port_is_not_a_tag_and_a_digest_is_kept_apart():
    assert split_reference("198.18.21.1:5000/portal") == ("198.18.21.1:5000/portal", None, None)
    assert split_reference("198.18.21.1:5000/portal:abc@sha256:12") == ("198.18.21.1:5000/portal", "abc", "sha256:12")
    assert with_tag("198.18.21.1:5000/portal", "0971e4a598fc") == "198.18.21.1:5000/portal:0971e4a598fc"
    assert with_tag("registry.example/portal:v2", "0971e4a598fc") == "registry.example/portal:v2"


# -- settings ------------------------------------------------------------------------------------------------


def test_swarm_ports_is_a_range_of_at_least_one_block():
    assert SwarmSettings(ports=" 38100 - 38999 ").port_range == (38100, 38999)
    assert SwarmSettings().ports == "20000-29999"


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"ports": "38100-38150"}, "holds 51 ports, fewer than one block of 100"),
        ({"ports": "900-2000"}, "needs 1024 <= FIRST <= LAST <= 65535"),
        ({"ports": "39000-38000"}, "needs 1024 <= FIRST <= LAST <= 65535"),
        ({"ports": "38100"}, "String should match pattern"),
        ({"port_base": 38100}, "port_base (38100) is replaced by `ports`"),
        ({"engines": {"worker-1": "10.0.0.12:2376"}}, "engines.worker-1"),
    ],
)
def test_bad_swarm_settings_are_refused_naming_the_field_and_value(settings, said):
    with pytest.raises(ValidationError) as info:
        DockerSettings(swarm=settings)
    assert said in str(info.value)


# -- status --------------------------------------------------------------------------------------------------


def replica(node: str | None) -> dict[str, object]:
    return {
        "id": "portal-1-aaaa",
        "revision": 1,
        "state": "ready",
        "address": "198.18.21.12:38201",
        "node": node,
        "pid": 10,
        "uptime_s": 5,
        "restarts": 0,
    }


def rendered(node: str | None) -> str:
    console = Console(width=200, record=True)
    console.print(status_table([{"name": "portal", "ready": 1, "desired": 1, "replicas": [replica(node)]}]))
    return console.export_text()


def test_status_shows_the_node_of_each_task_only_where_replicas_have_one():
    assert "NODE" in rendered("portero-n2")
    assert "portero-n2" in rendered("portero-n2")
    assert "NODE" not in rendered(None)


# -- engines over TCP --------------------------------------------------------------------------------------


def test_a_node_engine_over_tcp_is_reached_with_the_docker_cli_s_tls_material(tmp_path, monkeypatch):
    from portero.runtimes.engine import connect

    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    settings = DockerSettings(host="tcp://10.0.0.12:2376", api_version="1.41")  # a set version: no request made
    client = connect(settings, timeout_s=5)
    assert client.api.base_url == "https://10.0.0.12:2376"
    assert client.api.verify == str(tmp_path / "ca.pem")
    assert client.api.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    monkeypatch.delenv("DOCKER_CERT_PATH")
    monkeypatch.delenv("DOCKER_TLS_VERIFY")
    assert connect(settings, timeout_s=5).api.base_url == "http://10.0.0.12:2376"
