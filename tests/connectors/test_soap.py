"""The `soap` connector against the sample legacy inventory (sandbox/soap_inventory.py), a real SOAP process."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator

import pytest
from django.core.exceptions import ValidationError

from audit.models import AuditEvent
from connectors.base import NotReversible, PermanentError, RecordNotFound, TransientError
from connectors.registry import connector_for
from connectors.services import credential_set
from governance.choices import Access, Compensation, ConnectorKind, ImpactKind
from sandbox.testing import crm_control as side_door  # the CRM's side-door helper speaks to any sandbox's /_control
from tests import factories
from tests.stack import BIN, Stack, free_port

TOKEN = "inventory-test-token-51c2"
ITEM_FIELDS = ["name", "quantity", "warehouse", "version", "updated_at"]
SET_QUANTITY = {
    "operation": "SetQuantity",
    "id_param": "sku",
    "params": {"quantity": "quantity"},
    "idempotency_param": "requestId",
    "before": {"quantity": "before"},
    "after": {"quantity": "after"},
}


def start_inventory(stack: Stack, name: str = "inventory", host: str = "127.0.0.1") -> str:
    """`python -m sandbox.soap_inventory` on a free loopback port, as the Procfile would run it."""
    port = free_port()
    token_file = stack.dir / f"{name}.token"
    token_file.write_text(TOKEN)
    argv = [str(BIN / "python"), "-m", "sandbox.soap_inventory", "--host", host, "--port", str(port)]
    argv += ["--store", str(stack.dir / f"{name}.sqlite3"), "--token-file", str(token_file)]
    stack.start(name, argv, "listening on", env=dict(os.environ), timeout=15)
    return f"http://{host}:{port}"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    stack = Stack(tmp_path_factory.mktemp("soap"))
    try:
        yield start_inventory(stack)
    finally:
        stack.stop_all()


@pytest.fixture(autouse=True)
def fresh_inventory(inventory: str) -> None:
    side_door(inventory, "/_control/reset")


def settings_for(url: str, **extra) -> dict:
    return {
        "wsdl_url": f"{url}/inventory?wsdl",
        "resources": {
            "items": {
                "operation": "GetItem",
                "id_param": "sku",
                "fields": {
                    "name": "name",
                    "quantity": "quantity",
                    "warehouse": "warehouse",
                    "version": "version",
                    "updated_at": "updatedAt",
                },
            }
        },
        **extra,
    }


def make_system(url: str, *, secret: str = TOKEN, credential: dict | None = None, **extra):
    system = factories.SystemFactory(connector_kind=ConnectorKind.SOAP, connector_config=settings_for(url, **extra))
    system.full_clean()
    credential_set(system=system, secret=secret, actor=system.owner, channel="command", **(credential or {}))
    items = factories.ResourceFactory(system=system, name="items", label="item", fields=ITEM_FIELDS)
    action = factories.ActionTypeFactory(
        resource=items,
        name="set_quantity",
        payload_schema={
            "type": "object",
            "properties": {"quantity": {"type": "integer", "minimum": 0}},
            "required": ["quantity"],
            "additionalProperties": False,
        },
        impact_kind=ImpactKind.NONE,
        impact_field="",
        operation=SET_QUANTITY,
        compensation=Compensation.RESTORE_FIELDS,
    )
    action.full_clean()
    return system


@pytest.fixture
def system(db, inventory: str):
    return make_system(inventory)


def quantity(url: str, sku: str) -> int:
    """What the inventory holds, asked over SOAP by hand rather than through the connector."""
    envelope = (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:inv="urn:gatehouse:sandbox:inventory"><soap:Body>'
        f"<inv:GetItem><inv:sku>{sku}</inv:sku></inv:GetItem></soap:Body></soap:Envelope>"
    ).encode()
    request = urllib.request.Request(
        f"{url}/inventory",
        data=envelope,
        headers={"Content-Type": "text/xml; charset=utf-8", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
    return int(body.split("<inv:quantity>")[1].split("<")[0])


# --- The sandbox is a real SOAP service -------------------------------------------------------------------------


def test_the_inventory_serves_its_own_wsdl_with_its_address(inventory: str) -> None:
    with urllib.request.urlopen(f"{inventory}/inventory?wsdl", timeout=10) as response:
        wsdl = response.read().decode()
    assert 'soapAction="urn:gatehouse:sandbox:inventory#GetItem"' in wsdl
    assert f'location="{inventory}/inventory"' in wsdl


# --- Reads ------------------------------------------------------------------------------------------------------


def test_an_item_is_read_through_the_wsdl_with_fields_renamed(system) -> None:
    item = connector_for(system).read("items", "WID-100")
    assert {name: item[name] for name in ("name", "quantity", "warehouse", "version")} == {
        "name": "Widget, small",
        "quantity": 120,
        "warehouse": "RTM-1",
        "version": 1,
    }
    assert isinstance(item["updated_at"], str) and item["updated_at"].startswith("20")  # xsd:dateTime, JSON-safe
    assert set(item) == set(ITEM_FIELDS)


def test_a_read_returns_only_the_fields_asked_for(system) -> None:
    assert connector_for(system).read("items", "WID-200", ["quantity", "warehouse"]) == {
        "quantity": 40,
        "warehouse": "RTM-1",
    }


def test_without_a_field_map_the_answer_elements_are_the_record(db, inventory: str) -> None:
    system = make_system(inventory)
    system.connector_config["resources"]["items"] = {"operation": "GetItem", "id_param": "sku"}
    item = connector_for(system).read("items", "GSK-310")
    assert item["sku"] == "GSK-310" and item["quantity"] == 0 and "updatedAt" in item


def test_an_unknown_sku_is_record_not_found(system) -> None:
    with pytest.raises(RecordNotFound, match=r"GetItem answered fault soap:Client: not found \(reference ") as caught:
        connector_for(system).read("items", "NOPE-1")
    assert "Item not found" not in str(caught.value)  # the fault string is the system's: logged, not passed on


def test_a_resource_without_a_mapping_is_a_permanent_error(system) -> None:
    with pytest.raises(PermanentError, match="'bins' is not mapped"):
        connector_for(system).read("bins", "WID-100")


# --- Writes and their undo --------------------------------------------------------------------------------------


def test_set_quantity_records_before_and_after_and_is_undone_with_the_value_from_before(system, inventory) -> None:
    action = system.action_types.get(name="set_quantity")
    connector = connector_for(system)
    result = connector.execute(action, "WID-100", {"quantity": 35}, idempotency_key="proposal-1")
    assert (result.before, result.after) == ({"quantity": 120}, {"quantity": 35})
    assert quantity(inventory, "WID-100") == 35
    assert result.compensation["params"] == {"sku": "WID-100", "quantity": 120}

    undone = connector.compensate(action, "WID-100", result.compensation, idempotency_key="reverse-1")
    assert undone.after == {"quantity": 120}
    assert quantity(inventory, "WID-100") == 120
    assert side_door(inventory, "/_stats")["writes_by_key"] == {"proposal-1": 1, "reverse-1": 1}


def test_a_repeated_execution_is_not_applied_twice_and_keeps_the_first_before(system, inventory) -> None:
    action = system.action_types.get(name="set_quantity")
    first = connector_for(system).execute(action, "WID-200", {"quantity": 7}, idempotency_key="proposal-2")
    again = connector_for(system).execute(action, "WID-200", {"quantity": 7}, idempotency_key="proposal-2")
    assert first.before == again.before == {"quantity": 40}  # the system's account, not our read of 7
    assert side_door(inventory, "/_stats")["writes_total"] == 1


def test_an_action_without_undo_is_not_reversible(system) -> None:
    action = system.action_types.get(name="set_quantity")
    action.compensation, action.not_reversible_note = Compensation.NONE, "Stock counts are not restored."
    result = connector_for(system).execute(action, "GSK-310", {"quantity": 3}, idempotency_key="proposal-3")
    assert result.compensation == {}
    with pytest.raises(NotReversible):
        connector_for(system).compensate(action, "GSK-310", result.compensation, idempotency_key="reverse-3")


# --- Failures, sorted for the executor --------------------------------------------------------------------------


def test_a_client_fault_is_permanent(system) -> None:
    action = system.action_types.get(name="set_quantity")
    with pytest.raises(PermanentError, match="SetQuantity answered fault soap:Client") as caught:
        connector_for(system).execute(action, "WID-100", {"quantity": -5}, idempotency_key="proposal-4")
    assert not isinstance(caught.value, RecordNotFound)


def test_a_wrong_token_is_permanent(db, inventory: str) -> None:
    system = make_system(inventory, secret="not-the-token")
    with pytest.raises(PermanentError, match=r"answered fault soap:Client\.Authentication \(reference "):
        connector_for(system).read("items", "WID-100")


def test_the_credential_can_travel_in_a_named_header(db, inventory: str) -> None:
    system = make_system(inventory, credential={"kind": "header", "header_name": "X-Api-Key"})
    assert connector_for(system).read("items", "WID-100", ["quantity"]) == {"quantity": 120}


def test_settings_saved_without_validation_fail_at_use_as_permanent(db) -> None:
    system = factories.SystemFactory(connector_kind=ConnectorKind.SOAP, connector_config={"wsdl_url": "nowhere"})
    with pytest.raises(PermanentError, match='connector settings: Set "wsdl_url"'):
        connector_for(system)


def test_a_server_fault_is_transient_and_the_next_call_succeeds(system, inventory) -> None:
    side_door(inventory, "/_control/mode", {"mode": "fault", "count": 1})
    with pytest.raises(TransientError, match="GetItem answered fault soap:Server"):
        connector_for(system).read("items", "WID-100")
    assert connector_for(system).read("items", "WID-100", ["quantity"]) == {"quantity": 120}


def test_a_gateway_error_without_soap_is_transient(system, inventory) -> None:
    side_door(inventory, "/_control/mode", {"mode": "error", "status": 503, "count": 1})
    with pytest.raises(TransientError, match="answered 503"):
        connector_for(system).read("items", "WID-100")


def test_a_slow_answer_times_out_as_transient(db, inventory: str) -> None:
    system = make_system(inventory, timeout=0.5)
    connector_for(system).read("items", "WID-100")  # the WSDL is loaded before the service slows down
    side_door(inventory, "/_control/mode", {"mode": "slow", "delay": 2, "count": 1})
    with pytest.raises(TransientError, match="timed out"):
        connector_for(system).read("items", "WID-100")


def test_a_service_that_is_down_is_transient_whether_or_not_its_wsdl_was_loaded(db, tmp_path) -> None:
    stack = Stack(tmp_path / "down")
    try:
        url = start_inventory(stack, "short-lived")
        system = make_system(url)
        assert connector_for(system).read("items", "WID-100", ["quantity"]) == {"quantity": 120}
        assert connector_for(system).health().ok
    finally:
        stack.stop_all()
    with pytest.raises(TransientError, match="ConnectionError"):
        connector_for(system).read("items", "WID-100")  # the client is cached; the call itself is refused
    never_up = make_system(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError, match="loading the WSDL failed"):
        connector_for(never_up).read("items", "WID-100")
    health = connector_for(never_up).health()
    assert not health.ok and "loading the WSDL failed: ConnectionError" in health.reason


def test_a_wsdl_that_is_missing_or_not_a_wsdl_is_permanent(db, inventory: str) -> None:
    missing = make_system(inventory)
    missing.connector_config["wsdl_url"] = f"{inventory}/legacy?wsdl"
    with pytest.raises(PermanentError, match="loading the WSDL answered 404"):
        connector_for(missing).read("items", "WID-100")
    not_wsdl = make_system(inventory)
    not_wsdl.connector_config["wsdl_url"] = f"{inventory}/_health"
    with pytest.raises(PermanentError, match="loading the WSDL failed: not a usable WSDL"):
        connector_for(not_wsdl).read("items", "WID-100")


def test_health_calls_the_health_operation_when_one_is_named(db, inventory: str) -> None:
    assert connector_for(make_system(inventory, health_operation="Ping")).health().ok
    side_door(inventory, "/_control/mode", {"mode": "fault", "count": 1})
    health = connector_for(make_system(inventory, health_operation="Ping")).health()
    assert not health.ok and "Ping answered fault soap:Server" in health.reason


# --- Settings checked on save -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"wsdl_url": None}, 'Set "wsdl_url" to an http(s) address'),
        ({"wsdl_url": "file:///etc/inventory.wsdl"}, 'Set "wsdl_url" to an http(s) address'),
        ({"resources": {}}, "Map at least one resource to the operation that reads it"),
        ({"resources": {"items": {"operation": "GetItem"}}}, 'resources["items"].id_param must be a SOAP name'),
        ({"resources": {"items": {"operation": "Get Item", "id_param": "sku"}}}, "must be a SOAP name"),
        ({"resources": {"items": {"operation": "GetItem", "id_param": "sku", "fields": {"q": "a..b"}}}}, "dotted"),
        ({"timeout": 0}, '"timeout" must be a number of seconds between 0 and 120'),
        ({"wsdl": "http://x"}, "Unknown connector setting(s): wsdl."),
        ({"not_found_faults": "missing"}, '"not_found_faults" must be a list of words'),
    ],
)
def test_bad_settings_are_refused_on_save_with_a_readable_message(db, change: dict, message: str) -> None:
    config = {**settings_for("http://127.0.0.1:9"), **change}
    config = {key: value for key, value in config.items() if value is not None}
    system = factories.SystemFactory.build(
        connector_kind=ConnectorKind.SOAP, connector_config=config, owner=factories.UserFactory()
    )
    with pytest.raises(ValidationError) as caught:
        system.full_clean()
    assert any(message in text for text in caught.value.message_dict["connector_config"])


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        ({}, "Map the action to a SOAP operation"),
        ({"operation": "SetQuantity", "id_param": "sku"}, '"params" must map each SOAP parameter'),
        ({**SET_QUANTITY, "params": {"sku": "quantity"}}, 'The parameter "sku" is filled by the record id'),
        ({**SET_QUANTITY, "before": {"name": "before"}}, '"before" names field(s) the action does not write: name'),
        ({**SET_QUANTITY, "method": "POST"}, "Unknown operation setting(s): method"),
    ],
)
def test_a_bad_action_mapping_is_refused_on_save(system, operation: dict, message: str) -> None:
    action = system.action_types.get(name="set_quantity")
    action.operation = operation
    with pytest.raises(ValidationError) as caught:
        action.full_clean()
    assert message in caught.value.message_dict["operation"][0]


def test_a_soap_action_cannot_promise_to_delete_what_it_created(system) -> None:
    action = system.action_types.get(name="set_quantity")
    action.compensation = Compensation.DELETE_CREATED
    with pytest.raises(ValidationError) as caught:
        action.full_clean()
    assert "restoring the fields it wrote" in caught.value.message_dict["compensation"][0]


# --- On the running stack ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_agent_reads_an_item_through_gatehouse_from_the_soap_inventory(live, inventory: str) -> None:
    """The web process, a separate process, reaches the inventory on loopback through the governed read path."""
    system = make_system(inventory)
    items = system.resources.get(name="items")
    agent = factories.AgentFactory(slug="stock-agent")
    factories.ScopeGrantFactory(agent=agent, resource=items, access=Access.READ, fields=["name", "quantity"])
    client = live.agent("stock-agent")

    response = client.get(f"/api/v1/systems/{system.slug}/items/WID-100")
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"name": "Widget, small", "quantity": 120}
    read = AuditEvent.objects.filter(verb="read", system=system).latest("id")
    assert read.record_id == "WID-100" and "Widget" not in str(read.input)

    missing = client.get(f"/api/v1/systems/{system.slug}/items/NOPE-9")
    assert missing.status_code == 404, missing.text
